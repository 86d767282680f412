"""MNIST, plain or as the translated / cluttered variants of Mnih et al. (2014), Sec. 4.1."""

from __future__ import annotations

import torch

from raccn.datamodules.base import DigitCanvasDataModule
from raccn.datamodules.mnist_files import ensure_mnist_files, load_mnist
from raccn.datamodules.synthetic import TranslatedClutteredDataset


class MNISTDataModule(DigitCanvasDataModule):
    """MNIST digits, 28x28 ("plain") or on a larger canvas ("translated", "cluttered").

    Batches are ``(images, labels)``: Tensor[B, 1, H, W] float32 in [0, 1] with
    ``(H, W) = image_size``, and Tensor[B] int64 in 0..9.

    Splits: ``val_size`` images are held out of the 60k training images by a permutation seeded
    with ``seed``; the 10k test images are the test set. Training canvases are redrawn on every
    read (global torch RNG, reproducible with ``seed_everything``); validation and test canvases
    are fixed by ``seed + 1`` and by the constant ``TEST_PLACEMENT_SEED`` (so test numbers are
    comparable across runs whatever ``seed`` is). Clutter is cut from images of the same split.
    After ``setup``, ``split_indices[split]`` (Tensor[n] int64) gives the position of each item in
    its MNIST file (train and val index the training file, test the test file).

    Args:
        data_dir (str): folder holding ``MNIST/raw/<file>`` (torchvision's layout) or the four
            files directly; raw or ``.gz``. Downloads go to ``<data_dir>/MNIST/raw``.
        batch_size (int): items per batch, ``>= 1``.
        num_workers (int): DataLoader worker processes, ``>= 0``.
        variant (str): "plain" (28x28 as is), "translated" (digit at a random position of a
            ``canvas_size`` canvas) or "cluttered" (translated plus ``num_distractors`` patches).
        canvas_size (int): canvas side for "translated"/"cluttered", ``>= 28`` (paper: 60, 100).
        num_distractors (int): clutter patches per canvas for "cluttered", ``>= 1`` (paper: 4, 8).
        distractor_size (int): side of each clutter patch, ``1..28`` (paper: 8).
        train_shift (int): training images only: translate each by a random (dy, dx), each
            uniform in ``-train_shift..train_shift`` pixels, zero fill, redrawn on every read
            (``0``: off). Regularises the plain variant, whose digits otherwise sit still (the
            translated/cluttered canvases are redrawn anyway); MNIST's 4-pixel empty margin means
            2 loses no ink. ``0..canvas side - 1``.
        val_size (int): training images held out for validation, ``1..59999``.
        seed (int): split permutation and fixed validation placements, ``>= 0``.
        download (bool): try to download missing files in ``prepare_data``.
        predict_paths (list[str] | None): image files to predict on instead of the test split
            (read as grey, resized to ``image_size``: a light digit on a dark background, as
            MNIST).
    """

    VARIANTS = ("plain", "translated", "cluttered")
    TEST_PLACEMENT_SEED = 2

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: int = 128,
        num_workers: int = 0,
        variant: str = "plain",
        canvas_size: int = 60,
        num_distractors: int = 4,
        distractor_size: int = 8,
        train_shift: int = 0,
        val_size: int = 5000,
        seed: int = 0,
        download: bool = True,
        predict_paths: list[str] | None = None,
    ) -> None:
        if variant not in self.VARIANTS:
            raise ValueError(f"variant={variant!r} is unknown; use one of {self.VARIANTS}.")
        if variant != "plain" and canvas_size < 28:
            raise ValueError(
                f"canvas_size={canvas_size} cannot hold a 28x28 digit; use canvas_size >= 28 "
                "(the RAM paper uses 60 or 100)."
            )
        if variant == "cluttered" and num_distractors < 1:
            raise ValueError(
                f"num_distractors={num_distractors} with variant='cluttered'; use >= 1 (the RAM "
                "paper uses 4 on 60x60, 8 on 100x100) or variant='translated'."
            )
        if not 1 <= distractor_size <= 28:
            raise ValueError(
                f"distractor_size={distractor_size} must be cut from a 28x28 digit; use "
                "1 <= distractor_size <= 28 (the RAM paper uses 8)."
            )
        side = 28 if variant == "plain" else canvas_size
        if not 0 <= train_shift < side:
            raise ValueError(
                f"train_shift={train_shift} must be in 0..{side - 1} for {side}x{side} images "
                "(0: off; 2 is the usual augmentation for 28x28 MNIST)."
            )
        if not 1 <= val_size < 60_000:
            raise ValueError(
                f"val_size={val_size} must hold out part of the 60000 training images; use "
                "1 <= val_size <= 59999 (e.g. 5000)."
            )
        if seed < 0:
            raise ValueError(f"seed={seed} is negative; use an int >= 0.")
        super().__init__(batch_size, num_workers, side, predict_paths)
        self.save_hyperparameters()
        self.data_dir = data_dir
        self.variant = variant
        self.canvas_size = canvas_size if variant != "plain" else 28
        self.num_distractors = num_distractors if variant == "cluttered" else 0
        self.distractor_size = distractor_size
        self.train_shift = train_shift
        self.val_size = val_size
        self.seed = seed
        self.download = download
        self.split_indices: dict[str, torch.Tensor] = {}

    def prepare_data(self) -> None:
        """Download missing files if ``download``; raise ``FileNotFoundError`` if still missing."""
        ensure_mnist_files(self.data_dir, self.download)

    def setup(self, stage: str | None = None) -> None:
        """Load the files once (``FileNotFoundError`` if missing) and build the three splits
        (only the prediction set when predicting on ``predict_paths``)."""
        if self.setup_predict(stage) or self.train_set is not None:
            return
        mnist = load_mnist(self.data_dir)
        n = mnist.train_images.shape[0]
        if self.val_size >= n:
            raise ValueError(
                f"val_size={self.val_size} leaves no training images out of the {n} found in "
                f"{self.data_dir}; use val_size < {n}."
            )
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))
        val_idx, train_idx = perm[: self.val_size], perm[self.val_size :]
        self.split_indices = {
            "train": train_idx,
            "val": val_idx,
            "test": torch.arange(len(mnist.test_labels)),
        }
        splits = {
            "train": (mnist.train_images[train_idx], mnist.train_labels[train_idx], None),
            "val": (mnist.train_images[val_idx], mnist.train_labels[val_idx], self.seed + 1),
            "test": (mnist.test_images, mnist.test_labels, self.TEST_PLACEMENT_SEED),
        }
        shifts = {"train": self.train_shift, "val": 0, "test": 0}
        built = {
            split: TranslatedClutteredDataset(
                images,
                labels,
                canvas_size=self.canvas_size,
                num_distractors=self.num_distractors,
                distractor_size=self.distractor_size,
                fixed_seed=fixed_seed,
                max_shift=shifts[split],
            )
            for split, (images, labels, fixed_seed) in splits.items()
        }
        self.train_set, self.val_set, self.test_set = built["train"], built["val"], built["test"]
