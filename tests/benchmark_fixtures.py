"""Tiny FGVC-Aircraft, Oxford Flowers-102 and Oxford-IIIT Pets folders in their published
layouts, as torchvision's data-set classes read them.

Images are the flat 40x30 colours of tests/finegrained_fixtures.py (``PALETTE[k]`` for class k);
the first training image of class 0 is a grey JPEG, the first of class 1 a CMYK JPEG. Each writer
returns a ``FixtureSet`` (data_dir, class names, images, metadata files).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import scipy.io
from finegrained_fixtures import FixtureImage, FixtureSet, write_image

AIRCRAFT_VARIANTS = ["707-320", "A300B4", "Cessna 172"]  # a name with a space, as in the real list
AIRCRAFT_FAMILIES = ["Boeing 707", "A300", "Cessna 172"]
PET_BREEDS = ["Abyssinian", "american_bulldog", "Bengal"]  # cats capitalised, dogs not (real ids)
PET_NAMES = ["Abyssinian", "American Bulldog", "Bengal"]  # torchvision's class names


def _mode(label: int, first: bool) -> str:
    return {0: "L", 1: "CMYK"}.get(label, "RGB") if first else "RGB"


def write_aircraft(data_dir: Path, n_train: int = 3, n_test: int = 2) -> FixtureSet:
    """``fgvc-aircraft-2013b/data/`` with images, the variant and family lists and splits, and
    ``images_box.txt``. The ``trainval`` list interleaves the classes, as the real one does."""
    data = data_dir / "fgvc-aircraft-2013b" / "data"
    images, lines = [], {"variant": {"trainval": [], "test": []}, "family": {"trainval": [], "test": []}}
    boxes = []
    n = 0
    for split, count in (("trainval", n_train), ("test", n_test)):
        for j in range(count):
            for label in range(len(AIRCRAFT_VARIANTS)):
                n += 1
                image_id = f"{1000000 + 37 * n:07d}"
                path = data / "images" / f"{image_id}.jpg"
                mode = _mode(label, split == "trainval" and j == 0)
                box = (float(n), float(n + 1), 20.0, 10.0)  # (x, y, w, h)
                colour = write_image(path, label, mode)
                images.append(FixtureImage(path, label, "train" if split == "trainval" else "test",
                                           mode, colour, box))
                lines["variant"][split].append(f"{image_id} {AIRCRAFT_VARIANTS[label]}")
                lines["family"][split].append(f"{image_id} {AIRCRAFT_FAMILIES[label]}")
                boxes.append(f"{image_id} {n} {n + 1} {n + 20} {n + 11}")
    meta = {
        "variants": data / "variants.txt",
        "families": data / "families.txt",
        "boxes": data / "images_box.txt",
    }
    meta["variants"].write_text("".join(f"{v}\n" for v in AIRCRAFT_VARIANTS))
    meta["families"].write_text("".join(f"{v}\n" for v in AIRCRAFT_FAMILIES))
    meta["boxes"].write_text("\n".join(boxes) + "\n")
    for level, splits in lines.items():
        for split, rows in splits.items():
            meta[f"{level}_{split}"] = data / f"images_{level}_{split}.txt"
            meta[f"{level}_{split}"].write_text("\n".join(rows) + "\n")
    return FixtureSet(data_dir, AIRCRAFT_VARIANTS, images, meta)


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_flowers(data_dir: Path, num_classes: int = 3, counts=(1, 1, 2)) -> FixtureSet:
    """``flowers-102/`` with ``jpg/image_<id>.jpg``, ``imagelabels.mat`` (``labels`` 1..K, as
    uint8 (1, N)) and ``setid.mat`` (``trnid``, ``valid``, ``tstid``, uint16 (1, n)). Split
    names of the images: "train" (trnid and valid, the module's training set) or "test"."""
    root = data_dir / "flowers-102"
    images, labels, ids = [], [], {"trnid": [], "valid": [], "tstid": []}
    image_id = 0
    for label in range(num_classes):
        for key, count in zip(ids, counts):
            for j in range(count):
                image_id += 1
                path = root / "jpg" / f"image_{image_id:05d}.jpg"
                mode = _mode(label, key == "trnid" and j == 0)
                colour = write_image(path, label, mode)
                split = "test" if key == "tstid" else "train"
                images.append(FixtureImage(path, label, split, mode, colour, (0.0, 0.0, 1.0, 1.0)))
                labels.append(label + 1)
                ids[key].append(image_id)
    meta = {"label": root / "imagelabels.mat", "setid": root / "setid.mat"}
    scipy.io.savemat(meta["label"], {"labels": np.array([labels], dtype=np.uint8)})
    scipy.io.savemat(meta["setid"], {k: np.array([v], dtype=np.uint16) for k, v in ids.items()})
    return FixtureSet(data_dir, [], images, meta)


def write_pets(data_dir: Path, n_train: int = 3, n_test: int = 2) -> FixtureSet:
    """``oxford-iiit-pet/`` with ``images/<Breed>_<n>.jpg`` and ``annotations/trainval.txt``,
    ``annotations/test.txt`` (``<image id> <class 1..K> <species 1 cat, 2 dog> <breed id>``)."""
    root = data_dir / "oxford-iiit-pet"
    images, lines = [], {"trainval": [], "test": []}
    for label, breed in enumerate(PET_BREEDS):
        species = 1 if breed[0].isupper() else 2
        for split, count in (("trainval", n_train), ("test", n_test)):
            for j in range(count):
                image_id = f"{breed}_{len(images) + 1}"
                path = root / "images" / f"{image_id}.jpg"
                mode = _mode(label, split == "trainval" and j == 0)
                colour = write_image(path, label, mode)
                images.append(FixtureImage(path, label, "train" if split == "trainval" else "test",
                                           mode, colour, (0.0, 0.0, 1.0, 1.0)))
                lines[split].append(f"{image_id} {label + 1} {species} {label // 2 + 1}")
    meta = {}
    for split, rows in lines.items():
        meta[split] = root / "annotations" / f"{split}.txt"
        meta[split].parent.mkdir(parents=True, exist_ok=True)
        meta[split].write_text("\n".join(rows) + "\n")
    return FixtureSet(data_dir, PET_NAMES, images, meta)


def write_benchmark(name: str, data_dir: Path, monkeypatch) -> FixtureSet:
    """Write the fixture ``name`` ("aircraft", "flowers", "pets"); for Flowers-102 also make
    torchvision accept the fixture's .mat files (it checks their MD5 sums) for this test."""
    from torchvision.datasets import Flowers102

    fx = {"aircraft": write_aircraft, "flowers": write_flowers, "pets": write_pets}[name](data_dir)
    if name == "flowers":
        for key, path in fx.meta.items():
            monkeypatch.setitem(Flowers102._file_dict, key, (path.name, md5(path)))
    return fx
