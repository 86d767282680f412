"""A folder of the user's own images, one sub-folder per class, for any model here.

    <data_dir>/train/<class>/<image>     required
    <data_dir>/val/<class>/<image>       optional; without it val_split of train is held out
    <data_dir>/test/<class>/<image>      optional; without it `test` scores the validation images
    <data_dir>/boxes.csv                 optional object boxes: path,x0,y0,x1,y1 (with boxes: true)

torchvision's ``ImageFolder`` finds the classes (the sub-folder names, sorted: their order is
the label order) and the image files of each split (its extensions; other files are counted
and reported, not read). The records then go through the fine-grained base
(:class:`~raccn.datamodules.finegrained.FineGrainedDataModule`): the same splits, screening of
unreadable files (``skip_corrupt``), transforms and boxes as CUB's.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable
from pathlib import Path

from lightning_fabric.utilities.rank_zero import rank_zero_info
from PIL import Image
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor
from torchvision import transforms as T
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes
from torchvision.transforms import v2

from raccn.datamodules.finegrained import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    FineGrainedDataModule,
    ImageRecord,
    OfficialSplits,
    to_input,
)

SPLITS = ("train", "val", "test")
LAYOUT = "<data_dir>/train/<class>/<image> (optionally also val/<class>/... and test/<class>/...)"
BOXES_FILE = "boxes.csv"
BOX_COLUMNS = ("path", "x0", "y0", "x1", "y1")
TRANSFORMS = ("finegrained", "resize")
# Grey images are normalised with the mean of ImageNet's channel statistics.
GREY_MEAN = (sum(IMAGENET_MEAN) / 3,)
GREY_STD = (sum(IMAGENET_STD) / 3,)

Box = tuple[float, float, float, float]


def _key(path: str | Path) -> Path:
    """``path`` normalised (``a/./b`` = ``a/b``) to match the files ``ImageFolder`` lists."""
    return Path(os.path.normpath(path))


def read_boxes_csv(path: Path, root: Path) -> dict[Path, tuple[Box, int]]:
    """The boxes of ``path`` (a CSV with the header ``path,x0,y0,x1,y1``; ``path`` relative to
    ``root``, corners in pixels of the original image, ``x1 > x0``, ``y1 > y0``) as
    ``{image path: ((x, y, w, h), line number)}``; ``ValueError`` naming file and line on a
    missing column, a value that is not a finite number, an empty box or a repeated path."""
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in BOX_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(
                f"{path}: the header must name the columns {','.join(BOX_COLUMNS)} (missing "
                f"{', '.join(missing)}; found {reader.fieldnames}). One row per image: its path "
                f"relative to {root}, then the box corners in pixels of the image."
            )
        boxes: dict[Path, tuple[Box, int]] = {}
        for row in reader:
            line = reader.line_num
            try:
                x0, y0, x1, y1 = (float(row[c]) for c in BOX_COLUMNS[1:])
            except (TypeError, ValueError):
                values = [row[c] for c in BOX_COLUMNS[1:]]
                raise ValueError(f"{path} line {line}: box {values} is not 4 numbers.") from None
            if not all(map(math.isfinite, (x0, y0, x1, y1))) or x1 <= x0 or y1 <= y0:
                raise ValueError(
                    f"{path} line {line}: box ({x0}, {y0}, {x1}, {y1}) is empty or not finite; "
                    "the corners must be x0 < x1 and y0 < y1 (x to the right, y downwards)."
                )
            key = _key(root / row["path"].strip())
            if key in boxes:
                raise ValueError(
                    f"{path} line {line}: {row['path']} already has a box (line {boxes[key][1]})."
                )
            boxes[key] = ((x0, y0, x1 - x0, y1 - y0), line)
    return boxes


def ignored_files(folder: Path, listed: set[Path]) -> list[Path]:
    """Files under ``folder`` (not hidden) that ``ImageFolder`` did not list: other extensions,
    or files outside the class folders."""
    found = []
    for top, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [_key(os.path.join(top, f)) for f in files if not f.startswith(".")]
    return sorted(p for p in found if p not in listed)


class ImageFolderDataModule(FineGrainedDataModule):
    """The user's images in class folders (layout: the module docstring).

    Batches ``(images, labels)``: Tensor[B, C, S, S] float32 (``C = channels``, ``S =
    image_size``) and Tensor[B] int64; with ``boxes``, validation and test batches add the boxes
    (Tensor[B, 4], ``(x0, y0, x1, y1)`` in pixels of the transformed image, as CUB's).
    ``class_names`` are the class folders' names, in label (sorted) order.

    ``transforms="finegrained"`` (photos, RA-CNN): the paper's resize to ``resize_size``, random
    ``image_size`` crop and flip for training, centre crop for validation, test and prediction,
    normalised with ImageNet's mean/std (RGB) or their channel average (grey).
    ``transforms="resize"`` (digit-like images, RAM): every image resized to ``image_size`` x
    ``image_size`` whatever its aspect, values in [0, 1], no augmentation (``resize_size`` is
    not used).

    Errors, before training: no ``train/`` folder, no class folder, a class folder without
    images, class folders that differ between splits, a damaged ``boxes.csv``. Files with other
    extensions are left out with one warning. An unreadable image fails when read, naming the
    file, or with ``skip_corrupt`` is left out at setup (counted, one warning, ``skipped``).

    Args:
        data_dir (str): the folder holding ``train/`` (and ``val/``, ``test/``, ``boxes.csv``).
        channels (int): 3 (RGB) or 1 (grey); any image is converted (grey, CMYK, palette, ...).
        transforms (str): ``"finegrained"`` or ``"resize"`` (above).
        val_split (float): fraction of ``train/`` held out for validation (seeded by ``seed``)
            when there is no ``val/``, in [0, 1); 0: validate on ``test/``.
        **kwargs: the other arguments of
            :class:`~raccn.datamodules.finegrained.FineGrainedDataModule` (``batch_size``,
            ``num_workers``, ``image_size``, ``resize_size``, ``skip_corrupt``, ``seed``,
            ``predict_paths``, ``boxes``: read ``<data_dir>/boxes.csv``; every validation and
            test image needs a row, training images may have none).
    """

    NAME = "the image folder"
    SOURCE = LAYOUT
    BOX_SOURCE = BOXES_FILE

    def __init__(
        self,
        data_dir: str = "data",
        channels: int = 3,
        transforms: str = "finegrained",
        val_split: float = 0.1,
        **kwargs,
    ) -> None:
        if channels not in (1, 3):
            raise ValueError(f"channels={channels!r} must be 1 (grey) or 3 (RGB).")
        if transforms not in TRANSFORMS:
            raise ValueError(
                f"transforms={transforms!r} must be one of {TRANSFORMS}: 'finegrained' for "
                "photos (resize, random crop and flip), 'resize' for digit-like images."
            )
        super().__init__(data_dir=data_dir, val_split=val_split, **kwargs)
        self.channels, self.transforms = channels, transforms

    # -------------------------------------------------------------- properties and transforms
    @property
    def num_channels(self) -> int:
        """Channels ``C`` of the images (``channels``)."""
        return self.channels

    @property
    def pixel_mean(self) -> tuple[float, ...] | None:
        """Per-channel mean subtracted by the transforms; ``None`` with ``"resize"``."""
        if self.transforms == "resize":
            return None
        return IMAGENET_MEAN if self.channels == 3 else GREY_MEAN

    @property
    def pixel_std(self) -> tuple[float, ...] | None:
        """Per-channel standard deviation divided by the transforms; ``None`` with ``"resize"``."""
        if self.transforms == "resize":
            return None
        return IMAGENET_STD if self.channels == 3 else GREY_STD

    def training_transform(self) -> Callable[[Image.Image], Tensor]:
        if self.transforms == "resize":
            return T.Compose([self.test_geometry(), to_input(None)])
        return super().training_transform()

    def test_geometry(self) -> Callable:
        if self.transforms == "resize":
            return v2.Resize(self.image_size)
        return super().test_geometry()

    # -------------------------------------------------------------- reading the folder
    def require(self) -> dict[str, Path]:
        """``{"train": <data_dir>/train}``; ``FileNotFoundError`` saying how to lay it out."""
        root, train = self.root, self.root / "train"
        if train.is_dir():
            return {"train": train}
        hint = ""
        if root.is_dir():
            folders = sorted(p.name for p in root.iterdir() if p.is_dir())
            if folders and not set(folders) & set(SPLITS):
                hint = (
                    f"\n{root} holds the folders {', '.join(folders[:5])}"
                    f"{' ...' if len(folders) > 5 else ''}: if these are your classes, move them "
                    f"into {train}/."
                )
        raise FileNotFoundError(
            f"no training images: {train}/ does not exist.{hint}\nLay your images out as "
            f"{LAYOUT} and point the data module at the folder holding train/ with "
            f"--data.init_args.data_dir=<folder> (now data_dir={self.data_dir!r})."
        )

    def _classes(self, folder: Path) -> list[str]:
        try:
            return find_classes(str(folder))[0]
        except FileNotFoundError:
            files = [p.name for p in folder.iterdir() if p.is_file()][:3]
            loose = f" (it holds files such as {', '.join(files)})" if files else ""
            raise ValueError(
                f"{folder}/ holds no class folders{loose}: put each class's images in "
                f"{folder}/<class>/; the folder names are the class names."
            ) from None

    def read_class_names(self) -> list[str]:
        """The class folders of ``train/``, sorted (torchvision's ``find_classes``)."""
        return self._classes(self.require()["train"])

    def read_records(self) -> OfficialSplits:
        classes = self.class_names
        boxes: dict[Path, tuple[Box, int]] = {}
        csv_path = self.root / BOXES_FILE
        if self.boxes:
            if not csv_path.is_file():
                raise FileNotFoundError(
                    f"boxes=True, but {csv_path} does not exist: write it with the header "
                    f"{','.join(BOX_COLUMNS)} and one row per image (path relative to "
                    f"{self.root}, box corners in pixels), or set --data.init_args.boxes false."
                )
            boxes = read_boxes_csv(csv_path, self.root)
        elif csv_path.is_file():
            rank_zero_info(
                f"{csv_path} is not read: set --data.init_args.boxes true to score the APN's "
                "boxes against it (apn_iou_scale{s})."
            )
        box_of = {path: box for path, (box, _) in boxes.items()}
        splits: dict[str, list[ImageRecord] | None] = {}
        ignored: list[Path] = []
        for split in SPLITS:
            folder = self.root / split
            if not folder.is_dir():
                splits[split] = None
                continue
            found = self._classes(folder)
            if found != classes:
                lacks, extra = sorted(set(classes) - set(found)), sorted(set(found) - set(classes))
                differences = [f"lacks {lacks}"] if lacks else []
                differences += [f"has {extra}, which train/ has not"] if extra else []
                raise ValueError(
                    f"class folders differ between splits: {folder}/ {' and '.join(differences)}."
                    " Every split needs the same class folders (the labels follow the folder "
                    "names); move or rename them."
                )
            try:
                samples = ImageFolder(str(folder)).samples
            except FileNotFoundError as e:  # a class folder without image files
                raise ValueError(
                    f"{folder}/: {e} Add images to these class folders, or remove the classes "
                    "from every split."
                ) from None
            records = [(_key(path), label) for path, label in samples]
            splits[split] = [
                ImageRecord(path, label, box_of.get(path), f"{split}/{classes[label]}/")
                for path, label in records
            ]
            ignored += ignored_files(folder, {r.path for r in splits[split]})
        if ignored:
            examples = ", ".join(str(p) for p in ignored[:3])
            rank_zero_warn(
                f"{len(ignored)} file(s) in {self.root} are not read: not in a class folder, or "
                f"not an image type torchvision's ImageFolder reads ({', '.join(IMG_EXTENSIONS)}); "
                f"e.g. {examples}."
            )
        listed = {r.path for records in splits.values() for r in records or ()}
        unknown = [(line, p) for p, (_, line) in boxes.items() if p not in listed]
        if unknown:
            listing = "".join(f"\n  line {line}: {p}" for line, p in sorted(unknown)[:5])
            raise ValueError(
                f"{csv_path}: {len(unknown)} row(s) name no image of train/, val/ or test/:"
                f"{listing}\nPaths are relative to {self.root}, e.g. train/<class>/<image>."
            )
        return OfficialSplits(train=splits["train"], test=splits["test"], val=splits["val"])
