"""CUB-200-2011 (Wah et al., 2011): 11,788 photos of 200 bird species, 5,994 for training and
5,794 for testing, each with one bird box. The first data set of RA-CNN (Fu et al., 2017).

Read from the official archive ``CUB_200_2011.tgz`` as extracted: text tables keyed by image
id (``images.txt``, ``image_class_labels.txt``, ``train_test_split.txt``,
``bounding_boxes.txt``, ``classes.txt``) and ``images/<class folder>/<file>.jpg``.
"""

from __future__ import annotations

import re
from pathlib import Path

from raccn.datamodules.finegrained import (
    Expected,
    FineGrainedDataModule,
    ImageRecord,
    OfficialSplits,
    label_from_file,
)

TABLES = {
    "images": ("images.txt", 2),  # <image id> <relative path>
    "labels": ("image_class_labels.txt", 2),  # <image id> <class id 1..200>
    "split": ("train_test_split.txt", 2),  # <image id> <1 = train, 0 = test>
    "boxes": ("bounding_boxes.txt", 5),  # <image id> <x> <y> <width> <height>
    "classes": ("classes.txt", 2),  # <class id> <class folder, e.g. 001.Black_footed_Albatross>
}


def read_table(path: Path, n_fields: int) -> dict[str, tuple[int, list[str]]]:
    """Rows of a whitespace-separated table keyed by their first field:
    ``{id: (line number, other fields)}``; ``ValueError`` naming file and line when a row has
    the wrong number of fields or repeats an id. Blank lines are ignored."""
    rows: dict[str, tuple[int, list[str]]] = {}
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split(maxsplit=n_fields - 1)
        if len(fields) != n_fields:
            raise ValueError(f"{path} line {line_no}: expected {n_fields} fields, got {line!r}.")
        if fields[0] in rows:
            raise ValueError(
                f"{path} line {line_no}: id {fields[0]} already on line {rows[fields[0]][0]}."
            )
        rows[fields[0]] = (line_no, fields[1:])
    return rows


class CUBDataModule(FineGrainedDataModule):
    """CUB-200-2011 birds: 200 classes, official train/test split, boxes on the datasets.

    ``data_dir`` is the folder holding ``CUB_200_2011/`` or that folder itself. Class names are
    the class folders of ``classes.txt`` without the number (``Black_footed_Albatross``).
    ``train_set.boxes`` / ``test_set.boxes`` are Tensor[N, 4] ``(x, y, w, h)`` from
    ``bounding_boxes.txt``, in original image pixels. Arguments: see
    :class:`~raccn.datamodules.finegrained.FineGrainedDataModule`.
    """

    NAME = "CUB-200-2011"
    SOURCE = (
        "https://www.vision.caltech.edu/datasets/cub_200_2011/ (CUB_200_2011.tgz; extracting it "
        "gives the folder CUB_200_2011/)"
    )
    BOX_SOURCE = "bounding_boxes.txt"

    @property
    def root(self) -> Path:
        """``<data_dir>/CUB_200_2011``, or ``data_dir`` itself if it is that folder."""
        folder = super().root
        if (folder / "CUB_200_2011").is_dir():
            return folder / "CUB_200_2011"
        if folder.name == "CUB_200_2011" or (folder / "images.txt").is_file():
            return folder
        return folder / "CUB_200_2011"

    def expected(self) -> list[Expected]:
        root = self.root
        tables = [Expected(key, (root / name,)) for key, (name, _) in TABLES.items()]
        return tables + [Expected("image_folder", (root / "images",), folder=True)]

    def read_class_names(self) -> list[str]:
        path = self.require()["classes"]
        rows = read_table(path, TABLES["classes"][1])
        ids = sorted(rows, key=lambda i: rows[i][0])
        if ids != [str(k) for k in range(1, len(ids) + 1)]:
            raise ValueError(
                f"{path}: class ids must be 1, 2, ..., {len(ids)} in order; got {ids[:10]}..."
            )
        return [re.sub(r"^\d+\.", "", rows[i][1][0]) for i in ids]

    def read_records(self) -> OfficialSplits:
        files = self.require()
        tables = {
            key: read_table(files[key], n) for key, (_, n) in TABLES.items() if key != "classes"
        }
        images = tables["images"]
        for key in ("labels", "split", "boxes"):
            path, rows = files[key], tables[key]
            for image_id, (line_no, _) in images.items():
                if image_id not in rows:
                    raise ValueError(
                        f"{path} has no line for image id {image_id} (listed on line {line_no} "
                        f"of {files['images']}); the metadata files do not belong together."
                    )
            for image_id, (line_no, _) in rows.items():
                if image_id not in images:
                    raise ValueError(
                        f"{path} line {line_no}: image id {image_id} is not in {files['images']}."
                    )
        num_classes = self.num_classes
        splits: dict[str, list[ImageRecord]] = {"1": [], "0": []}
        for image_id, (line_no, (rel_path,)) in images.items():
            label_line, (class_id,) = tables["labels"][image_id]
            label = label_from_file(
                class_id, num_classes, f"{files['labels']} line {label_line}", files["classes"]
            )
            split_line, (is_train,) = tables["split"][image_id]
            if is_train not in splits:
                raise ValueError(
                    f"{files['split']} line {split_line}: {is_train!r} must be 1 (train) or 0 (test)."
                )
            box_line, box_fields = tables["boxes"][image_id]
            try:
                x, y, w, h = (float(v) for v in box_fields)
            except ValueError:
                raise ValueError(
                    f"{files['boxes']} line {box_line}: box {box_fields} is not 4 numbers."
                ) from None
            path = files["image_folder"] / rel_path
            origin = f"{files['images']} line {line_no}"
            splits[is_train].append(ImageRecord(path, label, (x, y, w, h), origin))
        return OfficialSplits(train=splits["1"], test=splits["0"])
