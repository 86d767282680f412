"""Differentiable square attention mask ("boxcar") of RA-CNN.

Fu, Zheng, Mei, "Look Closer to See Better: Recurrent Attention Convolutional Neural Network for
Fine-grained Image Recognition", CVPR 2017, §3.2, Eq. (3)-(4): the attention proposal network
outputs a square ``(tx, ty, tl)`` and the region is cut out with the continuous mask

    M(x, y) = [h(x - tx(tl)) - h(x - tx(br))] · [h(y - ty(tl)) - h(y - ty(br))],
    h(z) = 1 / (1 + exp(-k z)),

with ``tx(tl) = tx - tl``, ``tx(br) = tx + tl`` (likewise for y). For large ``k`` it is ~1
inside the square and ~0 outside, yet it is smooth in ``(tx, ty, tl)`` so gradients reach the
attention proposal network. The mask is separable: a ``[B, W]`` x-factor times a ``[B, H]``
y-factor.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["boxcar_mask", "check_boxcar_args"]


def check_k(k: float) -> None:
    """Raise ``ValueError`` unless the mask steepness ``k`` is > 0 and finite."""
    if not (k > 0 and math.isfinite(k)):
        raise ValueError(
            f"k must be > 0 and finite (steepness of the mask edges; the paper uses a large "
            f"value such as 10), got {k!r}"
        )


def check_boxcar_args(boxes: Tensor, height: int, width: int, k: float) -> None:
    """Raise ``ValueError`` (with the fix) for invalid :func:`boxcar_mask` arguments."""
    if boxes.dim() != 2 or boxes.shape[1] != 3:
        raise ValueError(
            f"boxes must be Tensor[B, 3] = (tx, ty, tl) in pixels, got shape {tuple(boxes.shape)}"
        )
    if not boxes.is_floating_point():
        raise ValueError(
            f"boxes must be a floating-point tensor, got {boxes.dtype}; use boxes.float()"
        )
    for name, value in (("height", height), ("width", width)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer (pixels), got {value!r}")
    check_k(k)


def boxcar_mask(boxes: Tensor, height: int, width: int, k: float = 10.0) -> Tensor:
    """Soft square mask ``M`` of RA-CNN (Eq. 4) on a ``height x width`` pixel grid.

    Args:
        boxes (Tensor[B, 3]): ``(tx, ty, tl)`` in pixels: centre x, centre y and *half* the
            side of the square, which covers ``[tx - tl, tx + tl] x [ty - tl, ty + tl]``.
            Pixel ``i`` covers ``[i, i + 1)``, so the image spans ``[0, W] x [0, H]`` and
            ``(0, 0)`` is the top-left corner. ``tl`` should be > 0 (not checked: no host sync).
        height (int): H, number of rows.
        width (int): W, number of columns.
        k (float): steepness of the logistic edges ``h(z) = sigmoid(k z)``, > 0.

    Returns:
        Tensor[B, H, W] (dtype and device of ``boxes``): ``M[b, i, j]`` evaluated at the pixel
        centre ``(x, y) = (j + 0.5, i + 0.5)``. It is ~1 deep inside the square, ~0 far outside,
        ~0.5 on an edge and ~0.25 on a corner.

    Differentiable with respect to ``boxes`` (autograd).
    """
    check_boxcar_args(boxes, height, width, k)
    tx, ty, tl = boxes[:, 0:1], boxes[:, 1:2], boxes[:, 2:3]  # (B, 1) each
    x = torch.arange(width, device=boxes.device, dtype=boxes.dtype) + 0.5  # (W,) pixel centres
    y = torch.arange(height, device=boxes.device, dtype=boxes.dtype) + 0.5  # (H,)
    mx = torch.sigmoid(k * (x - (tx - tl))) - torch.sigmoid(k * (x - (tx + tl)))  # (B, W)
    my = torch.sigmoid(k * (y - (ty - tl))) - torch.sigmoid(k * (y - (ty + tl)))  # (B, H)
    return my[:, :, None] * mx[:, None, :]  # (B, H, W)
