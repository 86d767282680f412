"""Embedded proxy where the discriminative region is a small part, not the salient object.

Made to test RA-CNN's claim that the ranking loss, not a saliency heuristic, teaches the APN where
to look (Fu et al. 2017, §3.3). Each canvas holds

- the *object*: a digit from scikit-learn's bundled 8x8 digits, upsampled (``8 * upscale`` px);
- its *head*: a ``head_size`` square fixed to the object's top-right corner (its centre
  ``head_offset`` px beyond the corner, up and right), striped with period 2 px horizontally or
  vertically;
- *distractors*: ``num_distractors`` solid squares at full intensity, uniformly placed, behind
  the object: the most salient things on the canvas, carrying no class information.

The class is the digit and the stripes' direction (``digit + 10 * vertical``, 20 classes). The
digit is legible at half resolution (what scale 1 sees with ``input_sizes[0] = canvas_size / 2``)
but the head is flat grey there (a 2x2 area average of either striping is exactly 0.5), so only a
zoom onto the head reads the direction. The head lies mostly outside a square of a third of the
canvas centred on the object, so neither the object's box nor the centroid of the trunk's
response (pulled towards the bright distractors) shows it: the zoom has to move there.

Batches: ``(images Tensor[B, 3, S, S] float32 in [0, 1] (grey repeated), labels Tensor[B] int64)``
and, for every split, ``boxes Tensor[B, 4]``: the head's (x0, y0, x1, y1) in canvas pixels, the
discriminative region the APN's IoU is scored against (``apn_iou_scale2``).

All splits are drawn once, at ``setup``, from fixed seeds (train from ``seed``; val and test from
fixed seeds whatever ``seed`` is) over disjoint source digits (the split of
``ClutteredDigitsDataModule``), so every run scores the same test canvases.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.datasets import load_digits
from torch import Tensor
from torch.utils.data import TensorDataset

from raccn.datamodules.base import SplitDataModule
from raccn.datamodules.digits import ClutteredDigitsDataModule
from raccn.datamodules.predict import resize_transform

VAL_SEED, TEST_SEED = 101, 102


def paste(canvas: Tensor, patches: Tensor, x0: Tensor, y0: Tensor) -> Tensor:
    """Paste one square patch per canvas, batched (no loop over the batch).

    Args:
        canvas (Tensor[N, S, S]): modified in place and returned.
        patches (Tensor[N, p, p]): what to paste.
        x0, y0 (Tensor[N] int64): top-left corner of each patch in canvas pixels; the patch must
            lie inside the canvas.
    """
    N, S, _ = canvas.shape
    p = patches.shape[-1]
    offs = torch.arange(p)
    rows = (y0[:, None] + offs)[:, :, None].expand(N, p, p)  # (N, p, p)
    cols = (x0[:, None] + offs)[:, None, :].expand(N, p, p)
    flat = canvas.view(N, S * S)
    index = (rows * S + cols).reshape(N, -1)
    flat.scatter_(1, index, patches.reshape(N, -1))
    return canvas


def part_canvases(
    digits: Tensor, vertical: Tensor, canvas_size: int, head_size: int, head_offset: int,
    num_distractors: int, distractor_size: int, generator: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """Compose the canvases (see the module docstring).

    Args:
        digits (Tensor[N, d, d]): upsampled digits in [0, 1].
        vertical (Tensor[N] bool): stripe the head's columns instead of its rows.
        generator: source of the placements.

    Returns:
        (Tensor[N, S, S] in [0, 1], Tensor[N, 4] float32: the head's (x0, y0, x1, y1)).
    """
    N, d, _ = digits.shape
    S, h, o = canvas_size, head_size, head_offset
    reach = h // 2 + o  # how far the head sticks out beyond the object's top-right corner
    canvas = torch.zeros(N, S, S)
    for _ in range(num_distractors):
        pos = torch.randint(0, S - distractor_size + 1, (2, N), generator=generator)
        paste(canvas, torch.ones(N, distractor_size, distractor_size), pos[0], pos[1])
    # even positions: every 2x2 cell of the half-resolution view holds one period of the stripes
    x = 2 * torch.randint(0, (S - d - max(reach, 0)) // 2 + 1, (N,), generator=generator)
    y = 2 * torch.randint((max(reach, 0) + 1) // 2, (S - d) // 2 + 1, (N,), generator=generator)
    paste(canvas, digits, x, y)  # in front of the distractors
    hx, hy = x + d + o - h // 2, y - o - h // 2  # the head's top-left corner
    on = (torch.arange(h) % 2 == 0).float()
    stripes = torch.where(vertical[:, None, None], on[None, None, :], on[None, :, None])
    paste(canvas, stripes.expand(N, h, h).contiguous(), hx, hy)
    boxes = torch.stack([hx, hy, hx + h, hy + h], dim=1).float()
    return canvas, boxes


class PartDigitsDataModule(SplitDataModule):
    """The part proxy (module docstring). Defaults: 48-px digits (``upscale`` 6) on a 144-px
    canvas with a 24-px head whose centre is 8 px beyond the object's corner, and 4 solid
    distractors of 20 px.

    Args:
        data_dir (str | None): unused (the digits ship with scikit-learn).
        batch_size (int), num_workers (int): as every data module.
        upscale (int): the 8x8 digits are ``8 * upscale`` pixels wide.
        canvas_size (int): canvas side S.
        head_size (int): side of the striped head, a multiple of 4.
        head_offset (int): how far (pixels, along x and y) the head's centre lies beyond the
            object's top-right corner (even); larger is harder for a box centred on the object.
        num_distractors (int), distractor_size (int): solid bright squares behind the object.
        train_size, val_size, test_size (int): canvases per split. The source digits are split
            1297 / 200 / 300 (``ClutteredDigitsDataModule``); each split's canvases cycle over
            its digits with fresh placements and stripings.
        seed (int): seed of the training canvases (val/test use fixed seeds).
        predict_paths (list[str] | None): image files to predict on (read as grey, resized).
    """

    def __init__(
        self,
        data_dir: str | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
        upscale: int = 6,
        canvas_size: int = 144,
        head_size: int = 24,
        head_offset: int = 8,
        num_distractors: int = 4,
        distractor_size: int = 20,
        train_size: int = 12000,
        val_size: int = 1000,
        test_size: int = 3000,
        seed: int = 0,
        predict_paths: list[str] | None = None,
    ) -> None:
        side = 8 * upscale
        if upscale < 1 or head_size < 4 or head_size % 4 or head_offset % 2:
            raise ValueError(
                f"upscale={upscale} must be >= 1, head_size={head_size} a multiple of 4 and "
                f"head_offset={head_offset} even (the head on the 2x2 cells of scale 1's view)"
            )
        reach = head_size // 2 + head_offset
        if canvas_size < side + max(reach, 0) or head_offset < -head_size // 2:
            raise ValueError(
                f"canvas_size={canvas_size} cannot hold a {side}-px object and a head sticking out "
                f"{reach} px (head_size // 2 + head_offset); use canvas_size >= {side + max(reach, 0)}"
            )
        if num_distractors < 0 or not 1 <= distractor_size <= canvas_size:
            raise ValueError(
                f"num_distractors={num_distractors} must be >= 0 and distractor_size="
                f"{distractor_size} in 1..{canvas_size}"
            )
        if min(train_size, val_size, test_size) < 2:
            raise ValueError("train_size, val_size and test_size must each be >= 2")
        super().__init__(batch_size, num_workers, canvas_size, predict_paths)
        self.save_hyperparameters()

    @property
    def num_classes(self) -> int:
        return 20

    @property
    def num_channels(self) -> int:
        return 3

    @property
    def class_names(self) -> list[str]:
        """The digit and the head's stripes: ``"3-"`` horizontal, ``"3|"`` vertical."""
        return [f"{k % 10}{'-' if k < 10 else '|'}" for k in range(20)]

    def predict_transform(self) -> Callable[[Image.Image], Tensor]:
        """PIL image -> Tensor[3, S, S] in [0, 1]: grey, resized to the canvas, repeated to RGB."""
        grey = resize_transform(1, self.image_size)
        return lambda image: grey(image).expand(3, -1, -1)

    def setup(self, stage: str | None = None) -> None:
        if self.setup_predict(stage) or self.train_set is not None:
            return
        hp = self.hparams
        digits = load_digits()
        images = torch.as_tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
        images = F.interpolate(images, scale_factor=hp.upscale, mode="bilinear", align_corners=False)
        images = images[:, 0].clamp(0.0, 1.0)
        labels = torch.as_tensor(digits.target, dtype=torch.long)
        n_test, n_val = 300, 200  # source digits, as ClutteredDigitsDataModule's split
        perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(
            ClutteredDigitsDataModule.SPLIT_SEED))
        sources = {"test": perm[:n_test], "val": perm[n_test:n_test + n_val], "train": perm[n_test + n_val:]}
        sizes = {"train": hp.train_size, "val": hp.val_size, "test": hp.test_size}
        seeds = {"train": 1000 + hp.seed, "val": VAL_SEED, "test": TEST_SEED}
        built = {}
        for split, src in sources.items():
            g = torch.Generator().manual_seed(seeds[split])
            idx = src[torch.arange(sizes[split]) % len(src)]
            vertical = torch.rand(len(idx), generator=g) < 0.5
            canvas, boxes = part_canvases(images[idx], vertical, hp.canvas_size, hp.head_size,
                                          hp.head_offset, hp.num_distractors, hp.distractor_size, g)
            rgb = canvas[:, None].expand(-1, 3, -1, -1)
            built[split] = TensorDataset(rgb, labels[idx] + 10 * vertical.long(), boxes)
        self.train_set, self.val_set, self.test_set = built["train"], built["val"], built["test"]
