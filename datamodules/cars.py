"""Stanford Cars (Krause et al., 2013): 16,185 photos of 196 car models (make, model, year),
8,144 for training and 8,041 for testing. The third data set of RA-CNN (Fu et al., 2017).

Read from the devkit as extracted: ``devkit/cars_meta.mat`` (``class_names``),
``devkit/cars_train_annos.mat`` and ``cars_test_annos_withlabels.mat`` (struct arrays
``annotations`` with ``bbox_x1, bbox_y1, bbox_x2, bbox_y2, class, fname``; each .mat is also
accepted in the other of ``data_dir/devkit/`` and ``data_dir/``) and the images in
``cars_train/`` and ``cars_test/`` (also the Kaggle mirror's ``cars_train/cars_train/``).
"""

from __future__ import annotations

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

FIELDS = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")


class StanfordCarsDataModule(FineGrainedDataModule):
    """Stanford Cars: 196 classes, official train/test split, boxes on the datasets.

    Class names come from ``cars_meta.mat`` (e.g. ``AM General Hummer SUV 2000``).
    ``train_set.boxes`` / ``test_set.boxes`` are Tensor[N, 4] ``(x, y, w, h)`` from the
    annotation corners as written (``x = bbox_x1``, ``w = bbox_x2 - bbox_x1``), in original
    pixels. Arguments: see :class:`~raccn.datamodules.finegrained.FineGrainedDataModule`.
    """

    NAME = "Stanford Cars"
    SOURCE = (
        "the Stanford Cars page https://ai.stanford.edu/~jkrause/cars/car_dataset.html or its "
        "Kaggle mirror (e.g. https://www.kaggle.com/datasets/jessicali9530/stanford-cars-dataset): "
        "car_devkit.tgz (devkit/), cars_train.tgz, cars_test.tgz and "
        "cars_test_annos_withlabels.mat"
    )
    BOX_SOURCE = "the annotation .mat files"

    def expected(self) -> list[Expected]:
        root = self.root

        def mat(name: str) -> tuple[Path, Path]:
            return (root / "devkit" / name, root / name)

        return [
            Expected("meta", mat("cars_meta.mat")),
            Expected("train_annos", mat("cars_train_annos.mat")),
            Expected("test_annos", mat("cars_test_annos_withlabels.mat")),
            Expected("train_images", (root / "cars_train",), folder=True),
            Expected("test_images", (root / "cars_test",), folder=True),
        ]

    def read_class_names(self) -> list[str]:
        path = self.require()["meta"]
        names = [str(name) for name in mat_list(load_mat(path, ["class_names"])["class_names"])]
        if not names:
            raise ValueError(f"{path}: class_names is empty.")
        return names

    def read_records(self) -> OfficialSplits:
        files = self.require()
        num_classes = self.num_classes
        splits = []
        for annos, images in (("train_annos", "train_images"), ("test_annos", "test_images")):
            path, folder = files[annos], files[images]
            if (folder / folder.name).is_dir():  # Kaggle mirror: cars_train/cars_train/*.jpg
                folder = folder / folder.name
            records = []
            for i, entry in enumerate(mat_list(load_mat(path, ["annotations"])["annotations"])):
                origin = f"{path} annotation {i + 1}"
                missing = [f for f in FIELDS if not hasattr(entry, f)]
                if missing:
                    raise ValueError(
                        f"{origin} has no field {', '.join(missing)}; for the test split use "
                        "cars_test_annos_withlabels.mat (cars_test_annos.mat has no classes)."
                    )
                origin = f"{origin} ({entry.fname})"
                label = label_from_file(getattr(entry, "class"), num_classes, origin, files["meta"])
                x1, y1, x2, y2 = (float(getattr(entry, f)) for f in FIELDS[:4])
                records.append(
                    ImageRecord(
                        folder / str(entry.fname), label, (x1, y1, x2 - x1, y2 - y1), origin
                    )
                )
            splits.append(records)
        return OfficialSplits(train=splits[0], test=splits[1])
