"""A tiny folder of "own images" in the layout of ``ImageFolderDataModule``, with a boxes.csv.

Every image shows a white rectangle (the object) on a background whose colour tells its class
(``PALETTE[k]``, ``GREYS[k]`` for the grey file). Image sizes differ, so that the transforms'
scale and crop differ per image. The first training image of class 0 is a grey JPEG (mode "L"),
the first of class 1 a CMYK JPEG; ``corrupt=True`` adds ``train/<class 2>/broken.jpg``, which is
not an image.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from finegrained_fixtures import GREYS, PALETTE
from PIL import Image, ImageDraw

CLASSES = ["barn owl", "great_tit", "robin"]  # sorted: the label order
COUNTS = {"train": 5, "val": 2, "test": 2}  # images per class and split


class FolderImage(NamedTuple):
    """One written image: ``path``, ``split``, ``label``, PIL ``mode`` on disk, background
    ``colour`` (RGB), ``size`` (W, H) and the object's ``box`` (x0, y0, x1, y1) in its pixels."""

    path: Path
    split: str
    label: int
    mode: str
    colour: tuple[int, int, int]
    size: tuple[int, int]
    box: tuple[int, int, int, int]


class FolderFixture(NamedTuple):
    root: Path
    images: list[FolderImage]
    broken: Path | None

    def split(self, name: str) -> list[FolderImage]:
        return [im for im in self.images if im.split == name]


def write_image(path: Path, label: int, mode: str, size: tuple[int, int], box) -> tuple[int, ...]:
    """A background of class ``label`` with a white object filling ``box``; returns the
    background's RGB colour."""
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = (GREYS[label],) * 3 if mode == "L" else PALETTE[label]
    image = Image.new("RGB", size, colour)
    ImageDraw.Draw(image).rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=(255,) * 3)
    {"L": image.convert("L"), "CMYK": image.convert("CMYK")}.get(mode, image).save(path, quality=95)
    return colour


def write_folder(
    root: Path,
    splits: tuple[str, ...] = ("train", "val", "test"),
    corrupt: bool = True,
    boxes: bool = True,
    counts: dict[str, int] = COUNTS,
) -> FolderFixture:
    images = []
    for split in splits:
        for label, name in enumerate(CLASSES):
            for j in range(counts[split]):
                mode = {(0, 0): "L", (1, 0): "CMYK"}.get((label, j), "RGB") if split == "train" else "RGB"
                size = (40 + 6 * j + 3 * label, 30 + 2 * label)  # landscape, varied
                box = (3 + 2 * j, 2 + label, 3 + 2 * j + 14 + label, 2 + label + 12 + j)
                path = root / split / name / f"{name}_{j}.jpg"
                colour = write_image(path, label, mode, size, box)
                images.append(FolderImage(path, split, label, mode, colour, size, box))
    broken = None
    if corrupt:
        broken = root / "train" / CLASSES[2] / "broken.jpg"
        broken.write_bytes(b"this is not a JPEG file\n" * 4)
    if boxes:
        rows = [f"{im.path.relative_to(root).as_posix()},{','.join(map(str, im.box))}" for im in images]
        (root / "boxes.csv").write_text("path,x0,y0,x1,y1\n" + "\n".join(rows) + "\n")
    return FolderFixture(root, images, broken)
