"""Tiny CUB-200-2011, Stanford Dogs and Stanford Cars folders in the real on-disk formats.

Every image is a flat 40x30 colour whose value tells its class (``PALETTE[k]``, or
``GREYS[k]`` for the grey-scale files), so a loaded item can be checked against its label. In
each split the first image of class 0 is a grey-scale JPEG (mode "L") and the first of class 1
a CMYK JPEG. The .mat files hold exactly what ``scipy.io.loadmat`` returns for the real ones:
cell arrays of strings as object arrays of shape (N, 1) (or (1, N)) whose elements are 1-element
str arrays, struct arrays as structured arrays of shape (1, N) whose fields are (1, 1) arrays.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import scipy.io
from PIL import Image

SIZE = (40, 30)  # (width, height) of every fixture image
PALETTE = [(220, 40, 40), (40, 200, 60), (50, 70, 230), (230, 210, 40), (200, 60, 210)]
GREYS = [40, 90, 140, 190, 240]
CUB_NAMES = ["Black_footed_Albatross", "Laysan_Albatross", "Sooty_Albatross", "Groove_billed_Ani"]
DOG_FOLDERS = ["n02085620-Chihuahua", "n02085782-Japanese_spaniel", "n02085936-Maltese_dog"]
CAR_NAMES = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Acura TL Sedan 2012"]


class FixtureImage(NamedTuple):
    """One written image: absolute ``path``, 0-based ``label``, ``split`` ("train"/"test"),
    PIL ``mode`` on disk, ``colour`` (RGB after ``convert("RGB")``) and ``box`` (x, y, w, h)."""

    path: Path
    label: int
    split: str
    mode: str
    colour: tuple[int, int, int]
    box: tuple[float, float, float, float]


class FixtureSet(NamedTuple):
    """A written data set: ``data_dir`` to pass, ``class_names``, its ``images`` and the
    metadata files by role (``meta``)."""

    data_dir: Path
    class_names: list[str]
    images: list[FixtureImage]
    meta: dict[str, Path]

    def split(self, name: str) -> list[FixtureImage]:
        return [im for im in self.images if im.split == name]

    def labels(self) -> dict[Path, int]:
        return {im.path: im.label for im in self.images}


def write_image(path: Path, label: int, mode: str) -> tuple[int, int, int]:
    """Write a flat JPEG of class ``label`` in ``mode``; return its RGB colour."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "L":
        Image.new("L", SIZE, GREYS[label]).save(path, quality=95)
        return (GREYS[label],) * 3
    colour = PALETTE[label]
    if mode == "CMYK":
        Image.new("CMYK", SIZE, tuple(255 - c for c in colour) + (0,)).save(path, quality=95)
    else:
        Image.new("RGB", SIZE, colour).save(path, quality=95)
    return colour


def corrupt(path: Path, how: str) -> None:
    """Damage an image: "garbage" (not an image at all) or "truncated" (a valid header whose
    compressed data stops half-way, which ``Image.verify()`` alone does not notice)."""
    if how == "garbage":
        path.write_bytes(b"this is not a JPEG file\n" * 4)
        return
    noise = np.random.default_rng(0).integers(0, 256, (SIZE[1], SIZE[0], 3), dtype=np.uint8)
    Image.fromarray(noise).save(path, quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 3 // 4])


def _plan(num_classes: int, n_train: int, n_test: int):
    """(class, split, index within class and split, mode, running number) of every image."""
    n = 0
    for label in range(num_classes):
        for split, count in (("train", n_train), ("test", n_test)):
            for j in range(count):
                mode = {(0, 0): "L", (1, 0): "CMYK"}.get((label, j), "RGB")
                n += 1
                yield label, split, j, mode, n


def cell(strings: list[str], row: bool = False) -> np.ndarray:
    """A MATLAB cell array of char rows as loadmat returns it: object array (N, 1) or (1, N)."""
    out = np.empty((1, len(strings)) if row else (len(strings), 1), dtype=object)
    for i, s in enumerate(strings):
        out.flat[i] = np.array([s])
    return out


def write_cub(
    data_dir: Path, num_classes: int = 4, n_train: int = 3, n_test: int = 2, nested: bool = True
) -> FixtureSet:
    """CUB_200_2011 as extracted from CUB_200_2011.tgz (``nested``: under ``data_dir``)."""
    root = data_dir / "CUB_200_2011" if nested else data_dir
    names = (CUB_NAMES + [f"Bird_{k}" for k in range(len(CUB_NAMES), num_classes)])[:num_classes]
    images, lines = [], {"images": [], "labels": [], "split": [], "boxes": []}
    for label, split, j, mode, n in _plan(num_classes, n_train, n_test):
        rel = f"{label + 1:03d}.{names[label]}/{names[label]}_{j:04d}_{n}.jpg"
        path = root / "images" / rel
        box = (1.5 + n, 2.0 + n, 20.25, 10.0 + n)
        images.append(FixtureImage(path, label, split, mode, write_image(path, label, mode), box))
        lines["images"].append(f"{n} {rel}")
        lines["labels"].append(f"{n} {label + 1}")
        lines["split"].append(f"{n} {int(split == 'train')}")
        lines["boxes"].append(f"{n} " + " ".join(str(v) for v in box))
    files = {
        "images": "images.txt",
        "labels": "image_class_labels.txt",
        "split": "train_test_split.txt",
        "boxes": "bounding_boxes.txt",
    }
    meta = {key: root / name for key, name in files.items()}
    for key, path in meta.items():
        path.write_text("\n".join(lines[key]) + "\n")
    meta["classes"] = root / "classes.txt"
    meta["classes"].write_text(
        "".join(f"{k + 1} {k + 1:03d}.{name}\n" for k, name in enumerate(names))
    )
    return FixtureSet(data_dir, names, images, meta)


def write_dogs(
    data_dir: Path,
    num_classes: int = 3,
    n_train: int = 3,
    n_test: int = 2,
    lists_folder: bool = True,
    annotations: bool = True,
) -> FixtureSet:
    """Stanford Dogs as extracted from images.tar, lists.tar (into ``lists/`` if
    ``lists_folder``, else into ``data_dir``) and annotation.tar (if ``annotations``)."""
    folders = DOG_FOLDERS[:num_classes]
    images, lists = [], {"train": [], "test": []}
    for label, split, _, mode, n in _plan(num_classes, n_train, n_test):
        synset = folders[label].split("-")[0]
        rel = f"{folders[label]}/{synset}_{1000 + n}"
        path = data_dir / "Images" / f"{rel}.jpg"
        box = (float(n), float(n + 1), 20.0, 10.0)
        images.append(FixtureImage(path, label, split, mode, write_image(path, label, mode), box))
        lists[split].append((rel, label))
        if annotations:
            xml = data_dir / "Annotation" / rel
            xml.parent.mkdir(parents=True, exist_ok=True)
            xml.write_text(
                f"<annotation><folder>{synset}</folder><filename>{synset}_{1000 + n}</filename>"
                f"<size><width>{SIZE[0]}</width><height>{SIZE[1]}</height><depth>3</depth></size>"
                f"<object><name>{folders[label]}</name><bndbox><xmin>{n}</xmin><ymin>{n + 1}</ymin>"
                f"<xmax>{n + 20}</xmax><ymax>{n + 11}</ymax></bndbox></object>"
                "<object><name>other</name><bndbox><xmin>0</xmin><ymin>0</ymin><xmax>5</xmax>"
                "<ymax>5</ymax></bndbox></object></annotation>"
            )
    folder = data_dir / "lists" if lists_folder else data_dir
    folder.mkdir(parents=True, exist_ok=True)
    meta = {}
    for split, entries in lists.items():
        meta[f"{split}_list"] = folder / f"{split}_list.mat"
        scipy.io.savemat(
            meta[f"{split}_list"],
            {
                "file_list": cell([f"{rel}.jpg" for rel, _ in entries]),
                "annotation_list": cell([rel for rel, _ in entries]),
                "labels": np.array([[label + 1.0] for _, label in entries]),  # double, 1-based
            },
        )
    names = [f.split("-", 1)[1] for f in folders]
    return FixtureSet(data_dir, names, images, meta)


def annotation_structs(entries: list[tuple[tuple[int, int, int, int], int, str]]) -> np.ndarray:
    """The ``annotations`` struct array (1, N) of the Cars devkit from (corners, class, fname)."""
    dtype = [(f, object) for f in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")]
    out = np.zeros((1, len(entries)), dtype=dtype)
    for i, (corners, class_id, fname) in enumerate(entries):
        values = [np.array([[v]], dtype=np.uint16) for v in (*corners, class_id)]
        out[0, i] = (*values, np.array([fname]))
    return out


def write_cars(
    data_dir: Path,
    num_classes: int = 3,
    n_train: int = 3,
    n_test: int = 2,
    devkit: bool = True,
    kaggle_folders: bool = False,
) -> FixtureSet:
    """Stanford Cars: car_devkit.tgz (``devkit/``, or flat in ``data_dir`` if not ``devkit``),
    cars_test_annos_withlabels.mat in ``data_dir``, images in ``cars_train/``, ``cars_test/``
    (``cars_train/cars_train/`` ... with ``kaggle_folders``). File names restart at 00001.jpg in
    each split, as in the real data."""
    names = CAR_NAMES[:num_classes]
    images, annos = [], {"train": [], "test": []}
    for label, split, _, mode, n in _plan(num_classes, n_train, n_test):
        fname = f"{len(annos[split]) + 1:05d}.jpg"
        folder = data_dir / f"cars_{split}"
        path = (folder / folder.name if kaggle_folders else folder) / fname
        corners = (n, n + 1, n + 20, n + 11)
        box = (float(n), float(n + 1), 20.0, 10.0)
        images.append(FixtureImage(path, label, split, mode, write_image(path, label, mode), box))
        annos[split].append((corners, label + 1, fname))
    kit = data_dir / "devkit" if devkit else data_dir
    kit.mkdir(parents=True, exist_ok=True)
    meta = {
        "meta": kit / "cars_meta.mat",
        "train_annos": kit / "cars_train_annos.mat",
        "test_annos": data_dir / "cars_test_annos_withlabels.mat",
    }
    scipy.io.savemat(meta["meta"], {"class_names": cell(names, row=True)})
    scipy.io.savemat(meta["train_annos"], {"annotations": annotation_structs(annos["train"])})
    scipy.io.savemat(meta["test_annos"], {"annotations": annotation_structs(annos["test"])})
    return FixtureSet(data_dir, names, images, meta)
