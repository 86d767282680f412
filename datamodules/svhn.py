"""SVHN format 1, whole house numbers (Netzer et al. 2011, http://ufldl.stanford.edu/housenumbers/),
preprocessed as Goodfellow et al. (ICLR 2014) and used by DRAM (Ba et al., ICLR 2015).

On disk: ``<data_dir>/train/``, ``test/`` and optionally ``extra/``, each with ``1.png``,
``2.png``, ... and ``digitStruct.mat`` (:mod:`datamodules.digit_struct`). Each number's
digit boxes are clipped to its image, their union is expanded by 30 % about its centre (and
clipped to the image again), that region is resized to ``resize_size`` (64) square, and the
model sees a random ``image_size`` (54) square crop of it when training, the centre crop
otherwise.

Nothing is silently mislabelled: a label outside 1..10 is an error naming the file and entry;
a number with a box wholly outside its image (or of no area), or with more digits than
``max_length``, is left out and counted (``counts``, logged); boxes partly outside are clipped
and counted; a listed PNG that is missing is an error, one that does not decode is an error
naming it, or with ``skip_corrupt`` left out and counted.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor
from torch.utils.data import Dataset

from raccn.datamodules.digit_struct import (
    SVHN_URL,
    DigitStruct,
    DigitStructError,
    load_digit_struct,
)
from raccn.datamodules.finegrained import PIL_ERRORS, CorruptImageError, check_image, load_rgb
from raccn.datamodules.label_sequences import EOS, SequenceDataModule


class HouseNumbers(NamedTuple):
    """The usable numbers of a folder (or a split of them).

    ``paths`` (list[Path], N): PNG files; ``entries`` (Tensor[N] int64): position of each in its
    ``digitStruct.mat``; ``boxes`` (Tensor[N, 4] float32): the region that is cropped,
    ``(x0, y0, x1, y1)`` in image pixels (x right, y down, ``x1``/``y1`` exclusive); ``targets``
    (Tensor[N, S] int64): digits then EOS (:mod:`datamodules.label_sequences`); ``lengths``
    (Tensor[N] int64).
    """

    paths: list[Path]
    entries: Tensor
    boxes: Tensor
    targets: Tensor
    lengths: Tensor

    def __len__(self) -> int:
        return len(self.paths)

    def take(self, idx: Tensor) -> HouseNumbers:
        """The numbers at ``idx`` (Tensor[n] int64), in that order."""
        return HouseNumbers([self.paths[i] for i in idx.tolist()], self.entries[idx],
                            self.boxes[idx], self.targets[idx], self.lengths[idx])

    @staticmethod
    def cat(parts: Sequence[HouseNumbers]) -> HouseNumbers:
        """The numbers of ``parts``, one after the other."""
        return HouseNumbers([p for part in parts for p in part.paths],
                            *(torch.cat([getattr(p, k) for p in parts])
                              for k in ("entries", "boxes", "targets", "lengths")))


class FolderCounts(NamedTuple):
    """What happened to a folder's numbers: ``listed`` in ``digitStruct.mat``, ``kept``; left
    out: ``too_long`` (more digits than ``max_length``), ``box_outside`` (a box wholly outside
    the image or of no area), ``unreadable`` (PNG does not decode, ``skip_corrupt``); and
    ``clipped_boxes``: boxes partly outside their image, clipped (their numbers kept)."""

    listed: int
    kept: int
    too_long: int
    box_outside: int
    unreadable: int
    clipped_boxes: int


def _image_size(path: Path) -> tuple[int, int] | str:
    """``(width, height)`` from the PNG header, or why it cannot be read."""
    try:
        with Image.open(path) as image:
            return image.size
    except PIL_ERRORS as e:
        return f"{type(e).__name__}: {e}"


def _parallel(fn: Callable, items: Sequence) -> list:
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return list(pool.map(fn, items))


def check_labels(ds: DigitStruct, mat: Path) -> None:
    """``DigitStructError`` naming the file, entry and PNG of the first label outside 1..10."""
    labels = ds.labels
    bad = ~np.isfinite(labels) | (labels != np.round(labels)) | (labels < 1) | (labels > 10)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        i = int(np.searchsorted(np.cumsum(ds.counts), k, side="right"))
        raise DigitStructError(
            f"{mat}: entry {i} ({ds.names[i]}) has label {labels[k]:g}, outside 1..10 (SVHN "
            f"labels digits 1..9 as themselves and 0 as 10); {int(bad.sum())} label(s) in all. "
            "The file is damaged or not SVHN's; extract it again."
        )


def crop_boxes(ds: DigitStruct, sizes: np.ndarray, expand: float
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Goodfellow et al.'s crop of every number.

    Args:
        ds: the parsed annotations (N entries, M boxes ``(left, top, width, height)``).
        sizes (ndarray[N, 2]): ``(width, height)`` of each image.
        expand: growth of the union box, 0.3 = 30 % wider and taller about its centre.

    Returns:
        ``(boxes ndarray[N, 4] float64, outside ndarray[N] bool, clipped ndarray[M] bool)``: the
        crop ``(x0, y0, x1, y1)`` (union of the clipped digit boxes, expanded, clipped to the
        image); whether a box of the number lies wholly outside its image or has no area (its
        crop is then meaningless); which boxes were partly outside and clipped.
    """
    n = len(ds.names)
    owner = np.repeat(np.arange(n), ds.counts)  # (M,) entry of each box
    w, h = sizes[owner, 0].astype(np.float64), sizes[owner, 1].astype(np.float64)
    left, top, width, height = ds.boxes.T
    x0, y0 = np.clip(left, 0, w), np.clip(top, 0, h)
    x1, y1 = np.clip(left + width, 0, w), np.clip(top + height, 0, h)
    empty = (x1 <= x0) | (y1 <= y0)
    clipped = ~empty & ((left < 0) | (top < 0) | (left + width > w) | (top + height > h))
    outside = np.bincount(owner, weights=empty, minlength=n) > 0
    union = np.stack([np.full(n, np.inf), np.full(n, np.inf), np.full(n, -np.inf),
                      np.full(n, -np.inf)], axis=1)
    np.minimum.at(union[:, 0], owner, x0)
    np.minimum.at(union[:, 1], owner, y0)
    np.maximum.at(union[:, 2], owner, x1)
    np.maximum.at(union[:, 3], owner, y1)
    centre = (union[:, :2] + union[:, 2:]) / 2
    half = (union[:, 2:] - union[:, :2]) * (1 + expand) / 2
    boxes = np.concatenate([centre - half, centre + half], axis=1)
    boxes = np.clip(boxes, 0, np.concatenate([sizes, sizes], axis=1))
    boxes[~np.isfinite(boxes)] = 0  # numbers without boxes (left out by the caller)
    return boxes, outside | (ds.counts == 0), clipped


def read_folder(folder: Path, max_length: int, expand: float, skip_corrupt: bool
                ) -> tuple[HouseNumbers, FolderCounts]:
    """The usable numbers of one SVHN folder and what was left out (see the module docstring).

    Raises:
        FileNotFoundError: ``digitStruct.mat`` or listed PNGs missing (named).
        DigitStructError: the ``.mat`` is not readable, or a label is outside 1..10.
        CorruptImageError: a PNG's header does not decode (unless ``skip_corrupt``).
    """
    mat = folder / "digitStruct.mat"
    ds = load_digit_struct(mat)
    check_labels(ds, mat)
    paths = [folder / name for name in ds.names]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        listing = "".join(f"\n  {p}" for p in missing[:5])
        raise FileNotFoundError(
            f"{len(missing)} of the {len(paths)} images listed by {mat} do not exist, e.g."
            f"{listing}\nThe folder is incomplete or from another split; extract it again from "
            f"{folder.name}.tar.gz ({SVHN_URL})."
        )
    sizes = _parallel(_image_size, paths)
    reasons = _parallel(check_image, paths) if skip_corrupt else [None] * len(paths)
    reasons = [s if isinstance(s, str) else r for s, r in zip(sizes, reasons)]
    unreadable = np.array([r is not None for r in reasons], dtype=bool)
    if unreadable.any() and not skip_corrupt:
        k = int(np.flatnonzero(unreadable)[0])
        raise CorruptImageError(
            f"cannot read image {paths[k]} (listed by {mat}): {reasons[k]}; "
            f"{int(unreadable.sum())} unreadable in all. Extract the folder again, or leave such "
            "images out (counted) with --data.init_args.skip_corrupt true."
        )
    size_array = np.array([s if not isinstance(s, str) else (1, 1) for s in sizes]).reshape(-1, 2)
    boxes, outside, clipped = crop_boxes(ds, size_array, expand)
    too_long = ds.counts > max_length
    keep = ~unreadable & ~outside & ~too_long
    counts = FolderCounts(
        listed=len(paths),
        kept=int(keep.sum()),
        too_long=int((too_long & ~unreadable & ~outside).sum()),
        box_outside=int((outside & ~unreadable).sum()),
        unreadable=int(unreadable.sum()),
        clipped_boxes=int(clipped[np.repeat(keep, ds.counts)].sum()),
    )
    owner = np.repeat(np.arange(len(paths)), ds.counts)
    slot = np.arange(len(owner)) - np.repeat(ds.starts, ds.counts)  # position in its number
    targets = np.full((len(paths), max_length), EOS, dtype=np.int64)
    fits = slot < max_length
    targets[owner[fits], slot[fits]] = ds.labels[fits].astype(np.int64) % 10  # 10 -> 0
    idx = np.flatnonzero(keep)
    numbers = HouseNumbers(
        [paths[i] for i in idx],
        torch.from_numpy(idx),
        torch.from_numpy(boxes[idx]).float(),
        torch.from_numpy(targets[idx]),
        torch.from_numpy(ds.counts[idx]),
    )
    _log(folder, counts, max_length, [(paths[i], reasons[i]) for i in np.flatnonzero(unreadable)])
    return numbers, counts


def _log(folder: Path, c: FolderCounts, max_length: int, unreadable: list) -> None:
    parts = []
    if c.too_long:
        parts.append(f"{c.too_long} longer than max_length={max_length} left out")
    if c.box_outside:
        parts.append(f"{c.box_outside} with a box wholly outside the image (or empty) left out")
    if c.unreadable:
        examples = "; ".join(f"{p} ({r})" for p, r in unreadable[:3])
        parts.append(f"{c.unreadable} unreadable image(s) left out (skip_corrupt), e.g. {examples}")
    if c.clipped_boxes:
        parts.append(f"{c.clipped_boxes} box(es) partly outside their image clipped")
    message = f"SVHN {folder}: {c.kept} of {c.listed} numbers used" + "".join(
        f"; {p}" for p in parts)
    (rank_zero_warn if c.box_outside or c.unreadable else rank_zero_info)(message)


def load_crop(path: Path, box: Tensor, side: int) -> Tensor:
    """The region ``box`` (Tensor[4], ``(x0, y0, x1, y1)`` image pixels, sub-pixel) of an image,
    resized (bilinear, antialiased) to ``side x side``: Tensor[3, side, side] uint8."""
    image = load_rgb(path).resize((side, side), Image.BILINEAR, box=tuple(box.tolist()))
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)


class HouseNumberDataset(Dataset):
    """House numbers as model inputs.

    Items are ``(image, targets, length)``: Tensor[3, s, s] float32 in [0, 1] (``s =
    image_size``), Tensor[S] int64, Tensor[] int64. The number's region (``numbers.boxes``) is
    resized to ``resize_size`` square; ``train`` takes a uniformly random ``s x s`` crop of it
    (global torch RNG, so ``seed_everything`` reproduces it), otherwise the centre crop.

    Args:
        numbers: the numbers.
        image_size (int): ``s``.
        resize_size (int): side ``R >= s`` of the resized region.
        train (bool): random crops (else centre crops).
        preloaded (Tensor[N, 3, R, R] uint8 | None): every region already resized (see
            :func:`preload`); batches (``__getitems__``) are then cut at once, without decoding.
    """

    def __init__(self, numbers: HouseNumbers, image_size: int, resize_size: int, train: bool,
                 preloaded: Tensor | None = None) -> None:
        if preloaded is not None and preloaded.shape != (len(numbers), 3, resize_size, resize_size):
            raise ValueError(f"preloaded must be Tensor[{len(numbers)}, 3, {resize_size}, "
                             f"{resize_size}], got {tuple(preloaded.shape)}")
        self.numbers, self.preloaded = numbers, preloaded
        self.image_size, self.resize_size, self.train = image_size, resize_size, train

    def __len__(self) -> int:
        return len(self.numbers)

    def _offsets(self, n: int) -> Tensor:
        """(Tensor[n, 2] int64) top-left ``(row, col)`` of each crop in the ``R x R`` region."""
        free = self.resize_size - self.image_size
        if self.train:
            return torch.randint(0, free + 1, (n, 2))
        return torch.full((n, 2), free // 2, dtype=torch.int64)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, Tensor]:
        n = self.numbers
        full = (self.preloaded[i] if self.preloaded is not None
                else load_crop(n.paths[i], n.boxes[i], self.resize_size))
        (row, col), s = self._offsets(1)[0].tolist(), self.image_size
        image = full[:, row : row + s, col : col + s].float().div_(255.0)
        return image, n.targets[i], n.lengths[i]

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[Tensor, Tensor, Tensor]]:
        """Items ``indices``; with ``preloaded`` all crops are cut by one indexing op."""
        if self.preloaded is None:
            return [self[i] for i in indices]
        idx = torch.as_tensor(indices, dtype=torch.int64).reshape(-1)  # (B,)
        B, s = len(idx), self.image_size
        offsets = self._offsets(B)
        grid = torch.arange(s)
        rows = (offsets[:, 0:1] + grid)[:, None, :, None]  # (B, 1, s, 1)
        cols = (offsets[:, 1:2] + grid)[:, None, None, :]  # (B, 1, 1, s)
        batch = idx[:, None, None, None]
        channel = torch.arange(3)[None, :, None, None]
        images = self.preloaded[batch, channel, rows, cols].float().div_(255.0)  # (B, 3, s, s)
        return list(zip(images, self.numbers.targets[idx], self.numbers.lengths[idx]))


def preload(numbers: HouseNumbers, resize_size: int) -> Tensor:
    """Every number's region decoded and resized once: Tensor[N, 3, R, R] uint8 (12 KB each at
    R = 64: 410 MB for SVHN train, 2.9 GB with extra)."""
    out = torch.empty(len(numbers), 3, resize_size, resize_size, dtype=torch.uint8)

    def one(i: int) -> None:
        out[i] = load_crop(numbers.paths[i], numbers.boxes[i], resize_size)

    _parallel(one, range(len(numbers)))
    return out


class SVHNDataModule(SequenceDataModule):
    """SVHN format 1: whole house numbers, batches ``(images, targets, lengths)`` with images
    Tensor[B, 3, s, s] float32 in [0, 1], targets Tensor[B, max_length] int64 (digits, then EOS
    = 10) and lengths Tensor[B] int64 (:mod:`datamodules.label_sequences`).

    Splits: ``val_split`` of ``train/`` (a permutation seeded with ``seed``) is held out for
    validation; the rest, plus all of ``extra/`` with ``use_extra``, is the training set;
    ``test/`` is the test set. ``val_split = 0`` validates on the test set. After ``setup``,
    ``numbers[split]`` (:class:`HouseNumbers`) lists each split's files, regions and targets
    and ``counts[folder]`` (:class:`FolderCounts`) what was left out of each folder.

    ``digitStruct.mat`` is parsed once (``prepare_data``) and the parse kept beside it
    (:func:`~datamodules.digit_struct.load_digit_struct`).

    Args:
        data_dir (str): folder holding ``train/``, ``test/`` (and ``extra/``) as extracted from
            train.tar.gz, test.tar.gz (extra.tar.gz).
        batch_size (int): numbers per batch, ``>= 1``.
        num_workers (int): DataLoader worker processes, ``>= 0``.
        max_length (int): label slots ``S``; longer numbers are left out, counted (5, as
            Goodfellow et al., keeps nearly every SVHN number).
        image_size (int): side ``s`` of the crops the model sees (54), ``<= resize_size``.
        resize_size (int): side the number's region is resized to (64).
        expand (float): growth of the digits' union box, ``>= 0`` (0.3: 30 %).
        val_split (float): fraction of ``train/`` held out for validation, in [0, 1).
        use_extra (bool): add the 202,353 numbers of ``extra/`` to the training set.
        seed (int): seed of the validation hold-out.
        preload (bool): decode and resize every region at ``setup`` and keep them in memory
            (``R x R x 3`` bytes each), so that batches are cut without decoding; for small sets
            (the embedded one) and machines with the memory.
        skip_corrupt (bool): check every PNG fully at ``setup`` and leave out (counted) those
            that do not decode, instead of failing.
        predict_paths (list[str] | None): image files to predict on, each a photo framed
            around a number like the test crops: resized to ``resize_size`` square, centre
            ``image_size`` crop.
    """

    FOLDERS = ("train", "test", "extra")

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: int = 128,
        num_workers: int = 0,
        max_length: int = 5,
        image_size: int = 54,
        resize_size: int = 64,
        expand: float = 0.3,
        val_split: float = 0.05,
        use_extra: bool = False,
        seed: int = 0,
        preload: bool = False,
        skip_corrupt: bool = False,
        predict_paths: list[str] | None = None,
    ) -> None:
        if not 1 <= image_size <= resize_size:
            raise ValueError(
                f"image_size={image_size}, resize_size={resize_size}: the crop must fit the "
                "resized region, 1 <= image_size <= resize_size (Goodfellow et al.: 54 of 64)."
            )
        if not expand >= 0:
            raise ValueError(f"expand={expand} must be >= 0 (0.3 grows the digits' box by 30 %).")
        if not 0.0 <= val_split < 1.0:
            raise ValueError(
                f"val_split={val_split} must be in [0, 1): the fraction of train/ held out for "
                "validation (0: validate on the test set)."
            )
        super().__init__(batch_size, num_workers, image_size, max_length, predict_paths)
        self.save_hyperparameters()
        self.data_dir = data_dir
        self.resize_size = resize_size
        self.expand = expand
        self.val_split = val_split
        self.use_extra = use_extra
        self.seed = seed
        self.preload = preload
        self.skip_corrupt = skip_corrupt
        self.numbers: dict[str, HouseNumbers] = {}
        self.counts: dict[str, FolderCounts] = {}

    @property
    def num_channels(self) -> int:
        """RGB."""
        return 3

    @property
    def root(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()

    def folders(self) -> list[str]:
        """The folders read: train, test (and extra)."""
        return list(self.FOLDERS if self.use_extra else self.FOLDERS[:2])

    def predict_transform(self) -> Callable[[Image.Image], Tensor]:
        """PIL image -> Tensor[3, s, s]: RGB, resized to ``resize_size`` square, centre crop."""
        R, s = self.resize_size, self._image_side
        offset = (R - s) // 2

        def transform(image: Image.Image) -> Tensor:
            resized = np.asarray(image.convert("RGB").resize((R, R), Image.BILINEAR))
            crop = torch.from_numpy(resized[offset : offset + s, offset : offset + s].copy())
            return crop.permute(2, 0, 1).float().div_(255.0)

        return transform

    def prepare_data(self) -> None:
        """Parse every folder's ``digitStruct.mat`` once and cache the parse (once per node, so
        the processes of a multi-GPU run then read the cache)."""
        for folder in self.folders():
            load_digit_struct(self.root / folder / "digitStruct.mat")

    def setup(self, stage: str | None = None) -> None:
        """Read the annotations (cached), check them and the PNGs, build the three splits (only
        the prediction set when predicting on ``predict_paths``)."""
        if self.setup_predict(stage) or self.train_set is not None:
            return
        read = {}
        for folder in self.folders():
            read[folder], self.counts[folder] = read_folder(
                self.root / folder, self.max_length, self.expand, self.skip_corrupt
            )
        train = read["train"]
        n_val = round(self.val_split * len(train))
        if self.val_split > 0 and not 0 < n_val < len(train):
            raise ValueError(
                f"val_split={self.val_split} holds out {n_val} of the {len(train)} usable "
                f"numbers of train/; choose it so that between 1 and {len(train) - 1} are."
            )
        perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(self.seed))
        self.numbers = {
            "train": HouseNumbers.cat([train.take(perm[n_val:].sort().values)]
                                      + ([read["extra"]] if self.use_extra else [])),
            "val": train.take(perm[:n_val].sort().values) if n_val else read["test"],
            "test": read["test"],
        }
        s, R = self._image_side, self.resize_size
        sets = {
            split: HouseNumberDataset(
                numbers, s, R, train=split == "train",
                preloaded=preload(numbers, R) if self.preload else None,
            )
            for split, numbers in self.numbers.items()
            if split != "val" or n_val
        }
        self.train_set, self.test_set = sets["train"], sets["test"]
        self.val_set = sets["val"] if n_val else sets["test"]
