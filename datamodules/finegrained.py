"""Shared part of the fine-grained data modules of RA-CNN (Fu et al., CVPR 2017, Sec. 4):
CUB-200-2011, Stanford Dogs and Stanford Cars read from their own on-disk formats.

Here: image records, RGB loading, the paper's transforms, checks of the expected files with
actionable errors, helpers for the ``.mat`` metadata, screening of unreadable images, the
train/val/test splits and their loaders. Each data set file only says where its files are and
how to turn its metadata into :class:`ImageRecord` lists.

Conventions: labels are 0-based class indices (the metadata files count from 1); boxes are
``(x, y, w, h)`` in pixels of the original image, ``(x, y)`` the top-left corner.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np
import scipy.io
import torch
from PIL import Image
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import transforms as T

from raccn.datamodules.base import SplitDataModule

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# What PIL raises on a damaged or unsupported file (UnidentifiedImageError is an OSError).
PIL_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


class ImageRecord(NamedTuple):
    """One image listed by a metadata file.

    ``path``: absolute image path; ``label``: 0-based class; ``box``: ``(x, y, w, h)`` in
    original pixels or ``None``; ``origin``: where it was listed, e.g. ``".../images.txt line
    12"``, for error messages.
    """

    path: Path
    label: int
    box: tuple[float, float, float, float] | None
    origin: str


class OfficialSplits(NamedTuple):
    """A data set's official training and test lists."""

    train: list[ImageRecord]
    test: list[ImageRecord]


class Expected(NamedTuple):
    """A file (or folder) a data set needs, under a ``key``; any one of ``candidates`` will do."""

    key: str
    candidates: tuple[Path, ...]
    folder: bool = False

    def find(self) -> Path | None:
        """The first candidate that exists (as a folder or file), else ``None``."""
        return next(
            (p for p in self.candidates if (p.is_dir() if self.folder else p.is_file())), None
        )

    def describe(self) -> str:
        kind, slash = ("folder", "/") if self.folder else ("file", "")
        alternatives = "".join(f" (or {p}{slash})" for p in self.candidates[1:])
        return f"{kind} {self.candidates[0]}{slash}{alternatives}"


class CorruptImageError(OSError):
    """An image file that PIL cannot decode; the message names the file."""


def load_rgb(path: str | Path) -> Image.Image:
    """Decode an image as 3-channel RGB (grey, CMYK, palette, RGBA and 16-bit files too)."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except PIL_ERRORS as e:
        raise CorruptImageError(
            f"cannot read image {path}: {type(e).__name__}: {e}. Replace the file, or drop every "
            "unreadable image at setup with --data.init_args.skip_corrupt true."
        ) from e


def check_image(path: str | Path) -> str | None:
    """Cheaply check that ``path`` decodes: header ``verify()`` plus a reduced-scale decode
    (``verify`` alone misses truncated JPEG data). Returns ``None`` if fine, else the reason."""
    try:
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            image.draft("RGB", (64, 64))  # JPEG: decode at 1/2..1/8 scale, still reads all data
            image.load()
    except PIL_ERRORS as e:
        return f"{type(e).__name__}: {e}"
    return None


def train_transform(image_size: int, resize_size: int) -> T.Compose:
    """Paper's training transform: shorter side to ``resize_size``, random ``image_size``
    square crop, random horizontal flip, ImageNet normalisation -> Tensor[3, S, S] float32."""
    return T.Compose(
        [
            T.Resize(resize_size),
            T.RandomCrop(image_size),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def eval_transform(image_size: int, resize_size: int) -> T.Compose:
    """Paper's test transform: shorter side to ``resize_size``, centre ``image_size`` square
    crop, ImageNet normalisation -> Tensor[3, S, S] float32."""
    return T.Compose(
        [
            T.Resize(resize_size),
            T.CenterCrop(image_size),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def label_from_file(value: Any, num_classes: int, origin: str) -> int:
    """0-based label of a 1-based class id read at ``origin``; ``ValueError`` unless it is an
    integer in ``1..num_classes``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{origin}: class {value!r} is not a number.") from None
    if not number.is_integer() or not 1 <= number <= num_classes:
        raise ValueError(
            f"{origin}: class {value} is outside 1..{num_classes} (class ids count from 1 over "
            f"the {num_classes} classes); the metadata files are from different versions or "
            "damaged, extract them again."
        )
    return int(number) - 1


def load_mat(path: Path, keys: Sequence[str]) -> dict[str, Any]:
    """``scipy.io.loadmat`` with MATLAB's singleton dimensions squeezed and structs as objects
    (``cell(N, 1)`` of char -> array of str, ``struct(1, N)`` -> array of ``mat_struct``);
    ``ValueError`` naming the file if it is not a .mat file or lacks one of ``keys``."""
    try:
        mat = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
    except Exception as e:  # scipy raises many types on a damaged file
        raise ValueError(f"{path} is not a readable .mat file ({type(e).__name__}: {e}).") from e
    missing = [k for k in keys if k not in mat]
    if missing:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise ValueError(f"{path} has no variable {', '.join(missing)} (found: {found}).")
    return mat


def mat_list(value: Any) -> list[Any]:
    """A squeezed .mat array (or a lone squeezed element, when N = 1) as a flat Python list."""
    return np.atleast_1d(np.asarray(value, dtype=object)).ravel().tolist()


class FineGrainedDataset(Dataset):
    """Images and 0-based labels of a list of :class:`ImageRecord`.

    Items are ``(image, label)``: ``transform(load_rgb(path))`` (Tensor[3, S, S] with the
    module's transforms) and Tensor[] int64.

    Attributes:
        paths (list[Path]): image files, in item order.
        labels (Tensor[N] int64): 0-based classes.
        boxes (Tensor[N, 4] float32 | None): ``(x, y, w, h)`` in original image pixels, or
            ``None`` unless every record has a box.
    """

    def __init__(self, records: Sequence[ImageRecord], transform: Callable) -> None:
        self.records = list(records)
        self.transform = transform
        self.paths = [r.path for r in self.records]
        self.labels = torch.tensor([r.label for r in self.records], dtype=torch.int64)
        has_boxes = bool(self.records) and all(r.box is not None for r in self.records)
        self.boxes = (
            torch.tensor([r.box for r in self.records], dtype=torch.float32).view(-1, 4)
            if has_boxes
            else None
        )

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.transform(load_rgb(self.paths[i])), self.labels[i]


class FineGrainedDataModule(SplitDataModule):
    """Base of the fine-grained data modules; batches ``(images, labels)``: Tensor[B, 3, S, S]
    float32 normalised with ImageNet mean/std (``S = image_size``) and Tensor[B] int64 in
    ``0..num_classes-1``.

    Splits: the data set's official train and test lists. ``val_split > 0`` holds out that
    fraction of the training images (permutation seeded with ``seed``) for validation; with
    ``val_split = 0`` validation runs on the test split, as the papers report test accuracy.
    Validation and test use the test transform. After ``setup``, ``split_indices[split]``
    (Tensor[n] int64) gives each item's position in its official list (train and val index the
    training list) and ``skipped`` lists the unreadable images left out.

    Subclasses set ``NAME`` and ``SOURCE`` and implement :meth:`expected`,
    :meth:`read_class_names` and :meth:`read_records`.

    Args:
        data_dir (str): folder holding the data set as extracted from its archives.
        batch_size (int): images per batch, ``>= 1``.
        num_workers (int): DataLoader worker processes, ``>= 0`` (0 = main process).
        image_size (int): side ``S`` of the square crops, ``>= 1`` (paper: 448).
        resize_size (int): shorter image side before cropping, ``>= image_size`` (paper: 512).
        skip_corrupt (bool): check every image at ``setup`` and leave out unreadable ones (with
            one warning) instead of failing when such an image is read.
        val_split (float): fraction of the training images held out for validation, in [0, 1).
        seed (int): seed of the validation hold-out permutation.
        predict_paths (list[str] | None): image files to predict on instead of the test split,
            read as RGB with the test transform (``predict_transform``); the metadata is still
            read for the class names, the listed images are not.
    """

    NAME: ClassVar[str] = ""
    SOURCE: ClassVar[str] = ""

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: int = 16,
        num_workers: int = 0,
        image_size: int = 448,
        resize_size: int = 512,
        skip_corrupt: bool = False,
        val_split: float = 0.0,
        seed: int = 0,
        predict_paths: list[str] | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers, image_size, predict_paths)
        if image_size < 1:
            raise ValueError(f"image_size={image_size} must be >= 1; the paper uses 448.")
        if resize_size < image_size:
            raise ValueError(
                f"resize_size={resize_size} is smaller than image_size={image_size}, so the "
                f"crop would not fit; use resize_size >= {image_size} (the paper: 512 for 448)."
            )
        if not 0.0 <= val_split < 1.0:
            raise ValueError(
                f"val_split={val_split} must be in [0, 1): the fraction of training images held "
                "out for validation; use 0 to validate on the test split (as the papers)."
            )
        self.save_hyperparameters()
        self.data_dir = data_dir
        self.resize_size = resize_size
        self.skip_corrupt = skip_corrupt
        self.val_split = val_split
        self.seed = seed
        self._class_names: list[str] | None = None
        self.skipped: list[Path] = []
        self.split_indices: dict[str, Tensor] = {}

    # -------------------------------------------------------------- what subclasses provide
    @property
    def root(self) -> Path:
        """Absolute folder the data set's files are looked for in."""
        return Path(self.data_dir).expanduser().resolve()

    def expected(self) -> list[Expected]:
        """The files and folders the data set needs (checked before anything is read)."""
        raise NotImplementedError

    def read_class_names(self) -> list[str]:
        """Class names, in label order."""
        raise NotImplementedError

    def read_records(self) -> OfficialSplits:
        """The official training and test lists; ``ValueError`` naming file and line/entry on
        inconsistent metadata."""
        raise NotImplementedError

    # -------------------------------------------------------------- properties
    @property
    def class_names(self) -> list[str]:
        """Class names in label order (read from the metadata on first use)."""
        if self._class_names is None:
            self._class_names = self.read_class_names()
        return self._class_names

    @property
    def num_classes(self) -> int:
        """Number of classes ``K`` (read from the metadata: 200 / 120 / 196 for the real sets)."""
        return len(self.class_names)

    @property
    def num_channels(self) -> int:
        """Channels ``C`` of the images (RGB)."""
        return 3

    @property
    def pixel_mean(self) -> tuple[float, float, float]:
        """Per-channel mean subtracted by the transforms (ImageNet's), to undo for display."""
        return IMAGENET_MEAN

    @property
    def pixel_std(self) -> tuple[float, float, float]:
        """Per-channel standard deviation divided by the transforms (ImageNet's)."""
        return IMAGENET_STD

    def predict_transform(self) -> Callable[[Image.Image], Tensor]:
        """PIL image (any mode) -> Tensor[3, S, S]: RGB, then the paper's test transform."""
        test_tf = eval_transform(self._image_side, self.resize_size)
        return lambda image: test_tf(image.convert("RGB"))

    # -------------------------------------------------------------- checks and setup
    def require(self) -> dict[str, Path]:
        """Map each expected key to its path; ``FileNotFoundError`` listing what is missing."""
        expected = self.expected()
        found = {e.key: e.find() for e in expected}
        n_missing = sum(path is None for path in found.values())
        if n_missing:
            listing = "".join(
                f"\n  {'missing' if found[e.key] is None else 'found  '} {e.describe()}"
                for e in expected
            )
            raise FileNotFoundError(
                f"{self.NAME} not found: {n_missing} of the {len(expected)} expected files and "
                f"folders are missing:{listing}\n"
                f"Get the data set from {self.SOURCE}, extract it, and point the data module at "
                f"the folder holding it with --data.init_args.data_dir=<folder> (now "
                f"data_dir={self.data_dir!r})."
            )
        return found  # type: ignore[return-value]  # every value is a Path here

    def prepare_data(self) -> None:
        """Nothing is downloaded; only check that the files are there (``FileNotFoundError``)."""
        self.require()

    def setup(self, stage: str | None = None) -> None:
        """Read the metadata, check it and the listed images, and build the three splits (only
        the prediction set when predicting on ``predict_paths``)."""
        if self.setup_predict(stage) or self.train_set is not None:
            return
        splits = self.read_records()
        train, test = splits.train, splits.test
        absent = [r for r in train + test if not r.path.is_file()]
        if absent:
            listing = "".join(f"\n  {r.origin}: {r.path}" for r in absent[:5])
            raise ValueError(
                f"{len(absent)} image(s) listed by the {self.NAME} metadata do not exist, e.g."
                f"{listing}\nThe image folder is incomplete or from another version; extract "
                "the images again."
            )
        n_val = round(self.val_split * len(train))
        if self.val_split > 0 and not 0 < n_val < len(train):
            raise ValueError(
                f"val_split={self.val_split} holds out {n_val} of the {len(train)} training "
                f"images; choose val_split so that between 1 and {len(train) - 1} are held out."
            )
        perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(self.seed))
        indices = {
            "train": perm[n_val:].sort().values,
            "val": perm[:n_val].sort().values,
            "test": torch.arange(len(test)),
        }
        if self.skip_corrupt:
            indices = self._drop_unreadable(train, test, indices)
        if n_val == 0:
            indices["val"] = indices["test"]
        self.split_indices = indices
        train_tf = train_transform(self._image_side, self.resize_size)
        test_tf = eval_transform(self._image_side, self.resize_size)
        self.train_set = FineGrainedDataset([train[i] for i in indices["train"]], train_tf)
        self.test_set = FineGrainedDataset([test[i] for i in indices["test"]], test_tf)
        self.val_set = (
            FineGrainedDataset([train[i] for i in indices["val"]], test_tf)
            if n_val
            else self.test_set
        )

    def _drop_unreadable(
        self, train: list[ImageRecord], test: list[ImageRecord], indices: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        paths = sorted({r.path for r in train + test})
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            reasons = dict(zip(paths, pool.map(check_image, paths)))
        self.skipped = [p for p in paths if reasons[p] is not None]
        if self.skipped:
            examples = "; ".join(f"{p} ({reasons[p]})" for p in self.skipped[:3])
            more = f" and {len(self.skipped) - 3} more" if len(self.skipped) > 3 else ""
            rank_zero_warn(
                f"skip_corrupt=True: left out {len(self.skipped)} unreadable image(s) of "
                f"{self.NAME}: {examples}{more} (all in datamodule.skipped)."
            )
        bad = set(self.skipped)

        def keep(records: list[ImageRecord], idx: Tensor) -> Tensor:
            return torch.tensor(
                [i for i in idx.tolist() if records[i].path not in bad], dtype=torch.int64
            )

        return {
            "train": keep(train, indices["train"]),
            "val": keep(train, indices["val"]),
            "test": keep(test, indices["test"]),
        }
