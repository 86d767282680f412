"""Translated and cluttered digit canvases (Mnih et al., 2014, "Recurrent Models of Visual
Attention", Sec. 4.1).

* translated: the h x w digit image is pasted at a uniformly random position fully inside an
  S x S black canvas;
* cluttered: in addition, ``K`` patches of size d x d, each cut at a random position from a
  random *other* image of the set, are pasted at uniformly random canvas positions. Overlaps are
  resolved by a pixel-wise maximum, so clutter never darkens the digit.

Coordinates are (row, col) of the top-left pixel, 0-based, rows growing downwards. Pixel values
are non-negative (the canvas background is 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset


class Box(NamedTuple):
    """Axis-aligned box on the canvas: top-left ``(row, col)`` and size ``(height, width)``."""

    row: int
    col: int
    height: int
    width: int


class Distractor(NamedTuple):
    """One clutter patch: cut from image ``source`` at ``crop`` and pasted at ``paste``.

    ``crop`` is a box in the source image's coordinates, ``paste`` the box on the canvas; both
    have the same height and width (``distractor_size``).
    """

    source: int
    crop: Box
    paste: Box


class Placement(NamedTuple):
    """Everything random about one canvas: where the digit went and which clutter was added."""

    digit: Box
    distractors: tuple[Distractor, ...]


def compose(
    digit: Tensor,
    canvas_size: int,
    pos: tuple[int, int],
    distractors: Sequence[tuple[Tensor, tuple[int, int]]] = (),
) -> Tensor:
    """Paste ``digit`` and clutter patches onto a black square canvas.

    Args:
        digit (Tensor[h, w]): non-negative image, any dtype (uint8 or float).
        canvas_size (int): side ``S`` of the canvas, ``S >= max(h, w)``.
        pos ((int, int)): (row, col) of the digit's top-left pixel, ``0 <= row <= S - h``,
            ``0 <= col <= S - w``.
        distractors (sequence of (Tensor[d, d'], (int, int))): patches and the (row, col) of
            their top-left pixel; each is combined with the canvas by a pixel-wise maximum,
            after the digit, in order.

    Returns:
        Tensor[S, S]: the canvas, same dtype and device as ``digit``.
    """
    canvas = digit.new_zeros(canvas_size, canvas_size)
    _paste_region(canvas, digit, pos, "digit")[...] = digit
    for patch, patch_pos in distractors:
        region = _paste_region(canvas, patch, patch_pos, "distractor")
        torch.maximum(region, patch, out=region)
    return canvas


def _paste_region(canvas: Tensor, patch: Tensor, pos: tuple[int, int], what: str) -> Tensor:
    """View of ``canvas`` (Tensor[S, S]) under ``patch`` (Tensor[h, w]) placed at ``pos``."""
    (row, col), (h, w), size = pos, patch.shape, canvas.shape[0]
    if not (0 <= row <= size - h and 0 <= col <= size - w):
        raise ValueError(
            f"{what} of size {h}x{w} at (row, col)=({row}, {col}) does not fit a {size}x{size} "
            f"canvas; use 0 <= row <= {size - h} and 0 <= col <= {size - w}."
        )
    return canvas[row : row + h, col : col + w]


class TranslatedClutteredDataset(Dataset):
    """Digits on a larger canvas, optionally with clutter (RAM "translated"/"cluttered" MNIST).

    Args:
        images (Tensor[N, h, w]): uint8 in [0, 255] or float in [0, 1].
        labels (Tensor[N]): class indices (int64).
        canvas_size (int): side ``S`` of the square output, ``S >= max(h, w)``. With
            ``S == h == w`` and no distractors the images are returned unchanged (plain MNIST).
        num_distractors (int): clutter patches per canvas, ``>= 0``.
        distractor_size (int): side ``d`` of each clutter patch, ``1 <= d <= min(h, w)``
            (not checked when ``num_distractors == 0``).
        fixed_seed (int | None): ``None`` (training): a fresh placement on every read, drawn from
            the global torch RNG, so ``seed_everything`` and Lightning's per-worker seeding make
            runs reproducible. An int ``>= 0`` (validation/test): item ``i`` is always drawn from
            ``numpy.random.default_rng([fixed_seed, i])``, so the same canvas comes back on every
            read, in every process and every run; :meth:`placement` then reports it.

    Items are ``(image, label)``: ``image`` Tensor[1, S, S] float32 in [0, 1], ``label`` a 0-dim
    int64 tensor.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        canvas_size: int,
        num_distractors: int = 0,
        distractor_size: int = 8,
        fixed_seed: int | None = None,
    ) -> None:
        if images.ndim != 3:
            raise ValueError(
                f"images must be Tensor[N, h, w], got shape {tuple(images.shape)}; "
                "squeeze the channel dimension of single-channel images."
            )
        if labels.shape != images.shape[:1]:
            raise ValueError(
                f"labels must be Tensor[N] with N={images.shape[0]} (one per image), "
                f"got shape {tuple(labels.shape)}."
            )
        n, h, w = images.shape
        if canvas_size < max(h, w):
            raise ValueError(
                f"canvas_size={canvas_size} is smaller than the {h}x{w} digits; "
                f"use canvas_size >= {max(h, w)}."
            )
        if num_distractors < 0:
            raise ValueError(f"num_distractors={num_distractors} is negative; use 0 or more.")
        if num_distractors > 0 and not 1 <= distractor_size <= min(h, w):
            raise ValueError(
                f"distractor_size={distractor_size} must be cut from a {h}x{w} digit; "
                f"use 1 <= distractor_size <= {min(h, w)}."
            )
        if num_distractors > 0 and n < 2:
            raise ValueError(
                f"distractors are cut from *other* images but the set has {n} image(s); "
                "use num_distractors=0 or at least 2 images."
            )
        if fixed_seed is not None and fixed_seed < 0:
            raise ValueError(f"fixed_seed={fixed_seed} is negative; use None or an int >= 0.")
        self.images = images
        self.labels = labels.long()
        self.canvas_size = canvas_size
        self.num_distractors = num_distractors
        self.distractor_size = distractor_size
        self.fixed_seed = fixed_seed
        self._is_plain = canvas_size == h == w and num_distractors == 0
        # Every random choice of an item is floor(u * high) for one uniform u in [0, 1):
        # digit row/col, then per distractor: source (among the N-1 others), crop row/col,
        # paste row/col.
        d = distractor_size
        per_distractor = [n - 1, h - d + 1, w - d + 1, canvas_size - d + 1, canvas_size - d + 1]
        self._highs = np.array(
            [canvas_size - h + 1, canvas_size - w + 1] + per_distractor * num_distractors,
            dtype=np.float64,
        )

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        i = int(i) + len(self) if i < 0 else int(i)  # as a list: -1 is the last item
        digit = self.images[i]  # (h, w)
        if self._is_plain:
            canvas = digit
        else:
            p = self._draw(i)
            clutter = [
                (
                    self.images[
                        x.source,
                        x.crop.row : x.crop.row + x.crop.height,
                        x.crop.col : x.crop.col + x.crop.width,
                    ],
                    (x.paste.row, x.paste.col),
                )
                for x in p.distractors
            ]
            canvas = compose(digit, self.canvas_size, (p.digit.row, p.digit.col), clutter)
        if canvas.dtype == torch.uint8:
            image = canvas.float().div_(255.0)
        else:
            image = canvas.to(torch.float32, copy=self._is_plain)  # never alias self.images
        return image.unsqueeze(0), self.labels[i]

    def placement(self, i: int) -> Placement:
        """Where item ``i``'s digit and clutter are; only defined when ``fixed_seed`` is set."""
        if self.fixed_seed is None:
            raise ValueError(
                "placement() needs a fixed placement, but fixed_seed=None draws a new one on "
                "every read; construct the dataset with fixed_seed=<int>."
            )
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} items.")
        return self._draw(i % len(self))

    def box(self, i: int) -> Box:
        """Canvas box (row, col, height, width) of item ``i``'s h x w digit image.

        The box covers the whole pasted image, including its empty margin (MNIST digits sit in a
        20x20 region centred in the 28x28 image). Needs ``fixed_seed``.
        """
        return self.placement(i).digit

    def _draw(self, i: int) -> Placement:
        """Draw (fixed_seed=None) or recompute (fixed_seed set) the placement of item ``i``."""
        _, h, w = self.images.shape
        if self.fixed_seed is None:
            u = torch.rand(len(self._highs), dtype=torch.float64).numpy()
        else:
            u = np.random.default_rng([self.fixed_seed, i]).random(len(self._highs))
        r = (u * self._highs).astype(np.int64).tolist()
        d = self.distractor_size
        distractors = []
        for k in range(2, len(r), 5):
            source = r[k] + (r[k] >= i)  # skip the item itself: uniform over the N-1 others
            distractors.append(
                Distractor(source, Box(r[k + 1], r[k + 2], d, d), Box(r[k + 3], r[k + 4], d, d))
            )
        return Placement(Box(r[0], r[1], h, w), tuple(distractors))
