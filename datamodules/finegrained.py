"""Shared part of the fine-grained data modules of RA-CNN (Fu et al., CVPR 2017, Sec. 4):
CUB-200-2011, Stanford Dogs and Stanford Cars read from their own on-disk formats, the benchmarks
torchvision reads (FGVC-Aircraft, Flowers-102, Oxford-IIIT Pets) and a user's image folder.

Here: image records, RGB (or grey) loading, the paper's transforms and the box transform that
follows the test transform, checks of the expected files with actionable errors, helpers for the
``.mat`` metadata, screening of unreadable images, the train/val/test splits and their loaders.
Each data set file only says where its files are and how to turn its metadata into
:class:`ImageRecord` lists.

Conventions: labels are 0-based class indices (the metadata files count from 1); boxes of the
records are ``(x, y, w, h)`` in pixels of the original image, ``(x, y)`` the top-left corner;
boxes in batches are ``(x0, y0, x1, y1)`` in pixels of the transformed image (the model's input).
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
from torchvision import tv_tensors
from torchvision.transforms import v2

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
    """A data set's official training and test lists, and its validation list if it has one.
    ``test`` is ``None`` for a data set without test images (a user's folder without ``test/``):
    the validation images are tested then."""

    train: list[ImageRecord]
    test: list[ImageRecord] | None
    val: list[ImageRecord] | None = None


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


def convert_image(image: Image.Image, mode: str = "RGB") -> Image.Image:
    """``image`` (any PIL mode: grey, CMYK, palette, RGBA, 16-bit) as RGB, or for ``mode="L"``
    as its luminance, computed from that RGB so every file type is reduced the same way."""
    rgb = image.convert("RGB")
    return rgb if mode == "RGB" else rgb.convert(mode)


def load_image(path: str | Path, mode: str = "RGB") -> Image.Image:
    """Decode an image as ``mode`` ("RGB" or "L", see :func:`convert_image`);
    :class:`CorruptImageError` naming the file if PIL cannot decode it."""
    try:
        with Image.open(path) as image:
            return convert_image(image, mode)
    except PIL_ERRORS as e:
        raise CorruptImageError(
            f"cannot read image {path}: {type(e).__name__}: {e}. Replace the file, or drop every "
            "unreadable image at setup with --data.init_args.skip_corrupt true."
        ) from e


def load_rgb(path: str | Path) -> Image.Image:
    """Decode an image as 3-channel RGB (grey, CMYK, palette, RGBA and 16-bit files too)."""
    return load_image(path, "RGB")


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


def to_input(
    mean: Sequence[float] | None = IMAGENET_MEAN, std: Sequence[float] | None = IMAGENET_STD
) -> T.Compose:
    """PIL image -> Tensor[C, H, W] float32: values in [0, 1], then normalised with the
    per-channel ``mean``/``std`` (none when ``mean`` is ``None``)."""
    steps: list[Callable] = [T.ToTensor()]
    if mean is not None:
        steps.append(T.Normalize(mean, std))
    return T.Compose(steps)


def train_transform(
    image_size: int,
    resize_size: int,
    mean: Sequence[float] | None = IMAGENET_MEAN,
    std: Sequence[float] | None = IMAGENET_STD,
) -> T.Compose:
    """Paper's training transform: shorter side to ``resize_size``, random ``image_size``
    square crop, random horizontal flip, normalisation (ImageNet's by default; see
    :func:`to_input`) -> Tensor[C, S, S] float32."""
    return T.Compose(
        [
            T.Resize(resize_size),
            T.RandomCrop(image_size),
            T.RandomHorizontalFlip(),
            to_input(mean, std),
        ]
    )


def eval_geometry(image_size: int, resize_size: int) -> v2.Compose:
    """Geometry of the paper's test transform: shorter side to ``resize_size``, centre
    ``image_size`` square crop. torchvision's v2 transforms, so that called as
    ``geometry(image, boxes)`` with ``tv_tensors.BoundingBoxes`` they move the boxes with the
    image (see :class:`BoxedTransform`)."""
    return v2.Compose([v2.Resize(resize_size), v2.CenterCrop(image_size)])


def eval_transform(
    image_size: int,
    resize_size: int,
    mean: Sequence[float] | None = IMAGENET_MEAN,
    std: Sequence[float] | None = IMAGENET_STD,
) -> T.Compose:
    """Paper's test transform: :func:`eval_geometry` then :func:`to_input` (ImageNet
    normalisation by default) -> Tensor[C, S, S] float32."""
    return T.Compose([eval_geometry(image_size, resize_size), to_input(mean, std)])


class BoxedTransform:
    """A deterministic transform applied to an image and its object box together.

    ``geometry`` (torchvision v2 transforms: resize, crop, ...) moves the box exactly as it moves
    the image's pixels, and clamps it to the output image (the visible part of the object);
    ``finish`` then turns the image into a tensor (see :func:`to_input`).

    Call: ``(image PIL, box Tensor[4] (x0, y0, x1, y1) in original image pixels)`` ->
    ``(image Tensor[C, S, S], box Tensor[4] float32 (x0, y0, x1, y1) in output pixels)``.
    """

    def __init__(self, geometry: Callable, finish: Callable[[Image.Image], Tensor]) -> None:
        self.geometry, self.finish = geometry, finish

    def __call__(self, image: Image.Image, box: Tensor) -> tuple[Tensor, Tensor]:
        boxes = tv_tensors.BoundingBoxes(
            box.view(1, 4), format="XYXY", canvas_size=(image.height, image.width)
        )
        image, boxes = self.geometry(image, boxes)
        return self.finish(image), boxes.as_subclass(Tensor).view(4).float()


def label_from_file(value: Any, num_classes: int, origin: str, class_list: Any = None) -> int:
    """0-based label of a 1-based class id read at ``origin``; ``ValueError`` unless it is an
    integer in ``1..num_classes`` (naming ``class_list``, the file the classes were read from,
    which may be the cut-short one)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{origin}: class {value!r} is not a number.") from None
    if not number.is_integer() or not 1 <= number <= num_classes:
        raise ValueError(
            f"{origin}: class {value} is outside 1..{num_classes} (class ids count from 1 over "
            f"the {num_classes} classes{f' of {class_list}' if class_list else ''}); the metadata "
            "files are from different versions or "
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

    Items are ``(image, label)``: ``transform(load_image(path, mode))`` (Tensor[C, S, S] with
    the module's transforms) and Tensor[] int64; with a ``box_transform``, ``(image, label,
    box)``: the image and its record's box through it (box Tensor[4] float32, ``(x0, y0, x1,
    y1)`` in pixels of the transformed image), so every record needs a box.

    Attributes:
        paths (list[Path]): image files, in item order.
        labels (Tensor[N] int64): 0-based classes.
        boxes (Tensor[N, 4] float32 | None): ``(x, y, w, h)`` in original image pixels, or
            ``None`` unless every record has a box.
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        transform: Callable,
        mode: str = "RGB",
        box_transform: BoxedTransform | None = None,
    ) -> None:
        self.records = list(records)
        self.transform = transform
        self.mode = mode
        self.box_transform = box_transform
        self.paths = [r.path for r in self.records]
        self.labels = torch.tensor([r.label for r in self.records], dtype=torch.int64)
        has_boxes = bool(self.records) and all(r.box is not None for r in self.records)
        self.boxes = (
            torch.tensor([r.box for r in self.records], dtype=torch.float32).view(-1, 4)
            if has_boxes
            else None
        )
        if box_transform is not None and self.records and self.boxes is None:
            raise ValueError("box_transform needs a box on every record")

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[Tensor, ...]:
        image = load_image(self.paths[i], self.mode)
        if self.box_transform is None:
            return self.transform(image), self.labels[i]
        x, y, w, h = self.boxes[i].tolist()
        image, box = self.box_transform(image, torch.tensor([x, y, x + w, y + h]))
        return image, self.labels[i], box


class FineGrainedDataModule(SplitDataModule):
    """Base of the fine-grained data modules; batches ``(images, labels)``: Tensor[B, 3, S, S]
    float32 normalised with ImageNet mean/std (``S = image_size``) and Tensor[B] int64 in
    ``0..num_classes-1``; with ``boxes``, validation and test batches also carry the object's
    box, ``(images, labels, boxes Tensor[B, 4])`` (``(x0, y0, x1, y1)`` in pixels of the
    transformed images, moved with the test transform and clamped to the crop), so RA-CNN logs
    ``{val,test}/apn_iou_scale{s}``.

    Splits: the data set's official train and test lists. ``val_split > 0`` holds out that
    fraction of the training images (permutation seeded with ``seed``) for validation; with
    ``val_split = 0`` validation runs on the test split, as the papers report test accuracy. A
    data set with an official validation list (a user's ``val/`` folder) validates on it.
    Validation and test use the test transform. After ``setup``, ``split_indices[split]``
    (Tensor[n] int64) gives each item's position in its official list (train and a held-out
    val index the training list) and ``skipped`` lists the unreadable images left out.

    Subclasses set ``NAME``, ``SOURCE`` (and ``BOX_SOURCE`` if the data set has boxes) and
    implement :meth:`expected`, :meth:`read_class_names` and :meth:`read_records`.

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
        boxes (bool): validation and test batches carry each image's object box (from
            ``BOX_SOURCE``; every validation and test image needs one).
    """

    NAME: ClassVar[str] = ""
    SOURCE: ClassVar[str] = ""
    BOX_SOURCE: ClassVar[str] = ""  #: where the boxes come from; "" = the data set has none

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
        boxes: bool = False,
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
        if boxes and not self.BOX_SOURCE:
            raise ValueError(
                f"boxes=True, but {self.NAME or type(self).__name__} has no object boxes; set "
                "--data.init_args.boxes false."
            )
        self.save_hyperparameters()
        self.data_dir = data_dir
        self.resize_size = resize_size
        self.skip_corrupt = skip_corrupt
        self.val_split = val_split
        self.seed = seed
        self.boxes = boxes
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
    def pixel_mean(self) -> tuple[float, ...] | None:
        """Per-channel mean subtracted by the transforms (ImageNet's), to undo for display;
        ``None``: not normalised."""
        return IMAGENET_MEAN

    @property
    def pixel_std(self) -> tuple[float, ...] | None:
        """Per-channel standard deviation divided by the transforms (ImageNet's)."""
        return IMAGENET_STD

    # -------------------------------------------------------------- transforms
    @property
    def image_mode(self) -> str:
        """PIL mode images are loaded in: "RGB", or "L" for one channel."""
        return "RGB" if self.num_channels == 3 else "L"

    def training_transform(self) -> Callable[[Image.Image], Tensor]:
        """Training images: the paper's (random crop and flip, :func:`train_transform`)."""
        return train_transform(self._image_side, self.resize_size, self.pixel_mean, self.pixel_std)

    def test_geometry(self) -> Callable:
        """The geometry of validation and test images (torchvision v2, moves boxes too): the
        paper's resize and centre crop (:func:`eval_geometry`)."""
        return eval_geometry(self._image_side, self.resize_size)

    def test_transform(self) -> Callable[[Image.Image], Tensor]:
        """Validation and test images: :meth:`test_geometry`, then :func:`to_input`."""
        return T.Compose([self.test_geometry(), to_input(self.pixel_mean, self.pixel_std)])

    def predict_transform(self) -> Callable[[Image.Image], Tensor]:
        """PIL image (any mode) -> Tensor[C, S, S]: RGB (or grey), then the test transform."""
        test_tf, mode = self.test_transform(), self.image_mode
        return lambda image: test_tf(convert_image(image, mode))

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
        empty = [found[e.key] for e in expected if not e.folder and found[e.key].stat().st_size == 0]
        if empty:
            raise ValueError(
                f"{self.NAME}: {', '.join(map(str, empty))} is empty (0 bytes): a download or "
                f"extraction was cut short. Extract it again from {self.SOURCE}."
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
        self._check_not_empty(splits)
        train = splits.train
        lists = {"train": train, "val": splits.val, "test": splits.test}  # official lists
        absent = [r for records in lists.values() for r in records or () if not r.path.is_file()]
        if absent:
            listing = "".join(f"\n  {r.origin}: {r.path}" for r in absent[:5])
            raise ValueError(
                f"{len(absent)} image(s) listed by the {self.NAME} metadata do not exist, e.g."
                f"{listing}\nThe image folder is incomplete or from another version; extract "
                "the images again."
            )
        indices = {s: torch.arange(len(rs)) for s, rs in lists.items() if rs is not None}
        val_on_test = splits.val is None and self.val_split == 0
        if splits.val is None:  # hold out val_split of the training images, or none
            lists["val"] = train
            n_val = round(self.val_split * len(train))
            if self.val_split > 0 and not 0 < n_val < len(train):
                raise ValueError(
                    f"val_split={self.val_split} holds out {n_val} of the {len(train)} training "
                    f"images; choose val_split so that between 1 and {len(train) - 1} are held "
                    "out."
                )
            perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(self.seed))
            indices["train"], indices["val"] = perm[n_val:].sort().values, perm[:n_val].sort().values
        if self.skip_corrupt:
            indices = self._drop_unreadable(lists, indices)
        if val_on_test:  # validate on the test split, as the papers
            if splits.test is None:
                raise ValueError(
                    f"{self.NAME} has neither validation nor test images and val_split=0: "
                    "nothing to validate on. Hold out training images with "
                    "--data.init_args.val_split 0.1, or add validation images."
                )
            lists["val"], indices["val"] = lists["test"], indices["test"]
        if splits.test is None:  # no test images: test the validation images
            lists["test"], indices["test"] = lists["val"], indices["val"]
            rank_zero_warn(
                f"{self.NAME} has no test images: `test` and `predict` run on the "
                f"{len(indices['val'])} validation images (add a test split for an independent "
                "score)."
            )
        self.split_indices = indices
        chosen = {s: [lists[s][i] for i in indices[s]] for s in ("train", "val", "test")}
        box_tf = self._box_transform(chosen) if self.boxes else None
        mode, test_tf = self.image_mode, self.test_transform()
        self.train_set = FineGrainedDataset(chosen["train"], self.training_transform(), mode)
        self.test_set = FineGrainedDataset(chosen["test"], test_tf, mode, box_tf)
        self.val_set = (
            self.test_set
            if lists["val"] is lists["test"]
            else FineGrainedDataset(chosen["val"], test_tf, mode, box_tf)
        )

    def _check_not_empty(self, splits: OfficialSplits) -> None:
        """``ValueError`` naming the metadata files when an official list holds no image (an
        empty or cut-short list file would otherwise train or test on nothing, silently)."""
        empty = [name for name, records in splits._asdict().items()
                 if records is not None and not records]
        if empty:
            try:
                files = [str(e.find()) for e in self.expected() if not e.folder and e.find()]
            except NotImplementedError:  # a module that lists no metadata files (a folder)
                files = []
            where = ", ".join(files) if files else f"the folders under {self.root}"
            raise ValueError(
                f"{self.NAME} lists no {' and no '.join(empty)} images; its metadata ({where}) "
                f"is empty or cut short. Extract it again from {self.SOURCE}."
            )

    def _box_transform(self, chosen: dict[str, list[ImageRecord]]) -> BoxedTransform:
        """The joint image-and-box test transform; ``ValueError`` naming the validation and test
        images without a box."""
        missing = sorted({r.path for s in ("val", "test") for r in chosen[s] if r.box is None})
        if missing:
            listing = "".join(f"\n  {p}" for p in missing[:5])
            raise ValueError(
                f"boxes=True, but {len(missing)} validation/test image(s) of {self.NAME} have no "
                f"box in {self.BOX_SOURCE}, e.g.:{listing}\nAdd their boxes, or set "
                "--data.init_args.boxes false."
            )
        return BoxedTransform(self.test_geometry(), to_input(self.pixel_mean, self.pixel_std))

    def _drop_unreadable(
        self, lists: dict[str, list[ImageRecord] | None], indices: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        paths = sorted({lists[s][i].path for s, idx in indices.items() for i in idx.tolist()})
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
        return {
            s: torch.tensor(
                [i for i in idx.tolist() if lists[s][i].path not in bad], dtype=torch.int64
            )
            for s, idx in indices.items()
        }
