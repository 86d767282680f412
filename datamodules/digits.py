"""Cluttered digits from scikit-learn's bundled 8x8 digits: the default data set, no download.

The 1,797 UCI handwritten digits (``sklearn.datasets.load_digits``, values 0..16) are scaled to
[0, 1], upsampled and placed on a canvas with clutter exactly like cluttered MNIST
(:class:`~raccn.datamodules.synthetic.TranslatedClutteredDataset`), giving a small but real
attention task that trains on a CPU in minutes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from raccn.datamodules.base import DigitCanvasDataModule
from raccn.datamodules.synthetic import TranslatedClutteredDataset


class ClutteredDigitsDataModule(DigitCanvasDataModule):
    """scikit-learn digits, upsampled, on a cluttered canvas.

    Batches are ``(images, labels)``: Tensor[B, 1, S, S] float32 in [0, 1] with
    ``S = canvas_size``, and Tensor[B] int64 in 0..9.

    Comparable numbers: the train/val/test split comes from a permutation with the fixed seed
    ``SPLIT_SEED`` and the val/test canvases from the fixed seeds ``VAL_PLACEMENT_SEED`` /
    ``TEST_PLACEMENT_SEED``, whatever ``seed`` is, so every run with the same geometry
    (``upscale``, ``canvas_size``, ``num_distractors``, ``distractor_size``, ``val_size``,
    ``test_size``) is scored on the very same test images. Training canvases are redrawn on
    every read from the global torch RNG (reproducible with ``seed_everything``). After
    ``setup``, ``split_indices[split]`` (Tensor[n] int64) indexes ``load_digits()``.

    Args:
        data_dir (str | None): unused (the data ship with scikit-learn); accepted so that all
            data modules can be configured alike.
        batch_size (int): items per batch, ``>= 1``.
        num_workers (int): DataLoader worker processes, ``>= 0``.
        upscale (int): integer zoom of the 8x8 digits (bilinear), ``>= 1``; digits are
            ``8 * upscale`` pixels wide.
        canvas_size (int): canvas side, ``>= 8 * upscale``.
        num_distractors (int): clutter patches per canvas, ``>= 0`` (0: translated digits).
        distractor_size (int): side of each clutter patch, ``1..8 * upscale``.
        val_size (int): validation images, ``>= 2``.
        test_size (int): test images, ``>= 2``; ``val_size + test_size < 1797``.
        seed (int): unused (see "Comparable numbers"); accepted so that all data modules can be
            configured alike.
        predict_paths (list[str] | None): image files to predict on instead of the test split
            (read as grey, resized to the canvas).
    """

    SPLIT_SEED = 1234
    VAL_PLACEMENT_SEED = 1
    TEST_PLACEMENT_SEED = 2
    NUM_IMAGES = 1797

    def __init__(
        self,
        data_dir: str | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
        upscale: int = 2,
        canvas_size: int = 40,
        num_distractors: int = 4,
        distractor_size: int = 6,
        val_size: int = 200,
        test_size: int = 300,
        seed: int = 0,
        predict_paths: list[str] | None = None,
    ) -> None:
        if upscale < 1:
            raise ValueError(f"upscale={upscale} must be >= 1; use 1 to keep the 8x8 digits.")
        side = 8 * upscale
        if canvas_size < side:
            raise ValueError(
                f"canvas_size={canvas_size} cannot hold the {side}x{side} digits "
                f"(8 * upscale={upscale}); use canvas_size >= {side}."
            )
        if num_distractors < 0:
            raise ValueError(f"num_distractors={num_distractors} is negative; use 0 or more.")
        if not 1 <= distractor_size <= side:
            raise ValueError(
                f"distractor_size={distractor_size} must be cut from a {side}x{side} digit; "
                f"use 1 <= distractor_size <= {side}."
            )
        if val_size < 2 or test_size < 2 or val_size + test_size >= self.NUM_IMAGES:
            raise ValueError(
                f"val_size={val_size}, test_size={test_size}: each must be >= 2 and together "
                f"< {self.NUM_IMAGES} (the number of digits) to leave training images; "
                "e.g. use val_size=200, test_size=300."
            )
        super().__init__(batch_size, num_workers, canvas_size, predict_paths)
        self.save_hyperparameters()
        self.upscale = upscale
        self.canvas_size = canvas_size
        self.num_distractors = num_distractors
        self.distractor_size = distractor_size
        self.val_size = val_size
        self.test_size = test_size
        self.split_indices: dict[str, torch.Tensor] = {}

    def setup(self, stage: str | None = None) -> None:
        """Load and upsample the digits once and build the three splits (only the prediction
        set when predicting on ``predict_paths``)."""
        if self.setup_predict(stage) or self.train_set is not None:
            return
        digits = load_digits()
        images = torch.as_tensor(digits.images, dtype=torch.float32) / 16.0  # (N, 8, 8)
        images = (
            F.interpolate(
                images.unsqueeze(1),
                scale_factor=self.upscale,
                mode="bilinear",
                align_corners=False,
                antialias=False,
            )
            .squeeze(1)
            .clamp_(0.0, 1.0)
        )  # (N, 8u, 8u)
        labels = torch.as_tensor(digits.target, dtype=torch.long)
        perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(self.SPLIT_SEED))
        test_idx = perm[: self.test_size]
        val_idx = perm[self.test_size : self.test_size + self.val_size]
        train_idx = perm[self.test_size + self.val_size :]
        self.split_indices = {"train": train_idx, "val": val_idx, "test": test_idx}
        splits = {
            "train": (train_idx, None),
            "val": (val_idx, self.VAL_PLACEMENT_SEED),
            "test": (test_idx, self.TEST_PLACEMENT_SEED),
        }
        built = {
            split: TranslatedClutteredDataset(
                images[idx],
                labels[idx],
                canvas_size=self.canvas_size,
                num_distractors=self.num_distractors,
                distractor_size=self.distractor_size,
                fixed_seed=fixed_seed,
            )
            for split, (idx, fixed_seed) in splits.items()
        }
        self.train_set, self.val_set, self.test_set = built["train"], built["val"], built["test"]
