"""Stanford Dogs (Khosla et al., 2011): 20,580 ImageNet photos of 120 dog breeds, 12,000 for
training and 8,580 for testing. The second data set of RA-CNN (Fu et al., 2017).

Read from the official archives as extracted: ``Images/<synset>-<breed>/<file>.jpg``
(images.tar), ``lists/train_list.mat`` and ``lists/test_list.mat`` (lists.tar; also accepted
directly in ``data_dir``, where lists.tar puts them) and, if present, the per-image Pascal-VOC
style XML files ``Annotation/<synset>-<breed>/<file>`` (annotation.tar) for the boxes.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from raccn.datamodules.finegrained import (
    Expected,
    FineGrainedDataModule,
    ImageRecord,
    OfficialSplits,
    label_from_file,
    load_mat,
    mat_list,
)


def read_voc_box(path: Path, origin: str) -> tuple[float, float, float, float]:
    """``(x, y, w, h)`` of the first ``object/bndbox`` of an annotation file, from its corners
    as written (``x = xmin``, ``w = xmax - xmin``); ``ValueError`` naming the file if absent."""
    if not path.is_file():
        raise ValueError(f"{origin}: annotation file {path} does not exist.")
    try:
        box = ET.parse(path).getroot().find("object/bndbox")
        xmin, ymin, xmax, ymax = (float(box.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax"))
    except (ET.ParseError, AttributeError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: no readable object/bndbox ({type(e).__name__}: {e}).") from None
    return (xmin, ymin, xmax - xmin, ymax - ymin)


class StanfordDogsDataModule(FineGrainedDataModule):
    """Stanford Dogs: 120 breeds, official train/test lists, boxes if ``Annotation/`` exists.

    Class ``k`` is the ``k``-th folder of ``Images/`` in sorted order (the order of the lists'
    1-based ``labels``); class names drop the synset (``n02085620-Chihuahua`` -> ``Chihuahua``).
    Every listed image must lie in the folder of its label. With ``Annotation/`` present,
    ``train_set.boxes`` / ``test_set.boxes`` are Tensor[N, 4] ``(x, y, w, h)`` of each image's
    first annotated dog, in original pixels; otherwise ``None``. Arguments: see
    :class:`~raccn.datamodules.finegrained.FineGrainedDataModule`.
    """

    NAME = "Stanford Dogs"
    SOURCE = (
        "http://vision.stanford.edu/aditya86/ImageNetDogs/ (images.tar, lists.tar and, for the "
        "boxes, annotation.tar, all extracted into one folder)"
    )
    BOX_SOURCE = "Annotation/ (annotation.tar)"

    def expected(self) -> list[Expected]:
        root = self.root
        return [
            Expected("image_folder", (root / "Images",), folder=True),
            Expected("train_list", (root / "lists" / "train_list.mat", root / "train_list.mat")),
            Expected("test_list", (root / "lists" / "test_list.mat", root / "test_list.mat")),
        ]

    def _class_folders(self) -> list[str]:
        folder = self.require()["image_folder"]
        names = sorted(p.name for p in folder.iterdir() if p.is_dir())
        if not names:
            raise ValueError(
                f"{folder} holds no class folders (<synset>-<breed>/); extract images.tar again."
            )
        return names

    def read_class_names(self) -> list[str]:
        return [re.sub(r"^n\d+-", "", name) for name in self._class_folders()]

    def read_records(self) -> OfficialSplits:
        files = self.require()
        folders = self._class_folders()
        annotations = self.root / "Annotation"
        splits = []
        for key in ("train_list", "test_list"):
            path = files[key]
            mat = load_mat(path, ["file_list", "labels"])
            rel_paths, labels = mat_list(mat["file_list"]), mat_list(mat["labels"])
            boxes_from = mat_list(mat["annotation_list"]) if "annotation_list" in mat else None
            if len(labels) != len(rel_paths) or (boxes_from and len(boxes_from) != len(rel_paths)):
                raise ValueError(
                    f"{path}: file_list, labels and annotation_list differ in length "
                    f"({len(rel_paths)}, {len(labels)}, {len(boxes_from or [])})."
                )
            records = []
            for i, (rel_path, value) in enumerate(zip(rel_paths, labels)):
                origin = f"{path} entry {i + 1} ({rel_path})"
                label = label_from_file(value, len(folders), origin)
                if Path(rel_path).parts[0] != folders[label]:
                    raise ValueError(
                        f"{origin}: label {label + 1} is {folders[label]}, but the image lies in "
                        f"another folder; the lists do not match the Images/ folders."
                    )
                box = None
                if boxes_from is not None and annotations.is_dir():
                    box = read_voc_box(annotations / boxes_from[i], origin)
                records.append(ImageRecord(files["image_folder"] / rel_path, label, box, origin))
            splits.append(records)
        return OfficialSplits(train=splits[0], test=splits[1])
