"""Glimpse sensor (retina) of the Recurrent Attention Model.

Mnih, Heess, Graves, Kavukcuoglu, "Recurrent Models of Visual Attention", NIPS 2014, §3.1:
the sensor extracts ``scales`` square patches centred on the location ``l``; patch ``j`` has side
``size * scale_factor**j`` pixels and is brought to ``size x size`` pixels.

The op is written as two batched matrix products with exact area-averaging weights,
``patch_j = A_y(j) @ image @ A_x(j)^T``. ``A[m, i]`` is the length of the overlap between image
pixel ``i`` (the interval ``[i, i+1)``) and output cell ``m`` divided by the cell's length, so
every output pixel is the mean of the image over its square, pixels outside the image count as
zero, sub-pixel positions are handled exactly, and the result is differentiable (by autograd)
with respect to both the images and the locations. There is no loop over the batch.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["area_weights", "check_glimpse_args", "glimpse"]


def check_glimpse_args(size: int, scales: int, scale_factor: float) -> None:
    """Raise ``ValueError`` (with the fix) for invalid glimpse-sensor settings."""
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"glimpse size must be a positive integer (pixels), got {size!r}")
    if not isinstance(scales, int) or scales < 1:
        raise ValueError(f"glimpse scales must be an integer >= 1, got {scales!r}")
    if not scale_factor >= 1.0:
        raise ValueError(
            f"glimpse scale_factor must be >= 1 (each scale covers a larger square), "
            f"got {scale_factor!r}"
        )


def area_weights(start: Tensor, cell: Tensor, size: int, length: int) -> Tensor:
    """Area-averaging weights of ``size`` consecutive cells over ``length`` unit pixels.

    Args:
        start (Tensor[..., J]): left edge of the first cell, in pixels (pixel ``i`` covers
            ``[i, i+1)``).
        cell (Tensor[J]): length of one cell, in pixels, per scale (> 0).
        size (int): number of cells per scale.
        length (int): number of pixels.

    Returns:
        Tensor[..., J, size, length]: ``w[..., j, m, i]`` = |[i, i+1) ∩ cell m of scale j|
        divided by ``cell[j]``. Rows of cells lying inside ``[0, length)`` sum to 1.
    """
    m = torch.arange(size, device=start.device, dtype=start.dtype)
    # Edges of the cells, in units of the scale's cell: (start / cell) + m.
    lo = (start / cell)[..., None] + m  # (..., J, size)
    u = torch.arange(length + 1, device=start.device, dtype=start.dtype)
    u = u / cell[:, None, None]  # (J, 1, length+1) pixel edges in cell units
    # F(u) = clamp(u - lo, 0, 1) is the covered fraction of cell m left of u; its finite
    # difference over pixel edges is the overlap with each pixel.
    covered = (u - lo[..., None]).clamp(0.0, 1.0)  # (..., J, size, length+1)
    return covered[..., 1:] - covered[..., :-1]


def glimpse(
    images: Tensor, loc: Tensor, size: int, scales: int, scale_factor: float = 2.0
) -> Tensor:
    """Extract a multi-resolution glimpse ("retina") around ``loc``.

    Args:
        images (Tensor[B, C, H, W]): batch of images.
        loc (Tensor[B, 2]): glimpse centres as ``(x, y)`` in ``[-1, 1]``, ``(-1, -1)`` the
            top-left corner of the image and ``(1, 1)`` the bottom-right one. The convention is
            ``F.grid_sample(align_corners=False)``: ``loc`` maps to the point
            ``((x + 1) / 2 * W, (y + 1) / 2 * H)`` in pixel units, where pixel ``i`` covers
            ``[i, i + 1)``. Values outside ``[-1, 1]`` are allowed (the glimpse then sees
            mostly zeros).
        size (int): side of every output patch, in pixels.
        scales (int): number of patches.
        scale_factor (float): patch ``j`` covers a square of side ``size * scale_factor**j``
            pixels centred on ``loc``.

    Returns:
        Tensor[B, scales, C, size, size]: patch ``j`` is the square brought to ``size x size``
        by area averaging (each output pixel is the mean of the image over its sub-square).
        Outside the image counts as zero. When a square falls on pixel boundaries, patch 0
        equals the plain slice of the image and patch ``j`` equals the slice average-pooled by
        ``scale_factor**j``.

    Differentiable with respect to ``images`` and ``loc`` (autograd, no custom backward).
    """
    check_glimpse_args(size, scales, scale_factor)
    if images.dim() != 4:
        raise ValueError(f"images must be Tensor[B, C, H, W], got shape {tuple(images.shape)}")
    B, C, H, W = images.shape
    if loc.shape != (B, 2):
        raise ValueError(f"loc must be Tensor[B, 2] = (x, y) with B={B}, got {tuple(loc.shape)}")
    dtype, device = images.dtype, images.device
    loc = loc.to(dtype)
    J = scales

    cell = scale_factor ** torch.arange(J, device=device, dtype=dtype)  # (J,) cell side, px
    extent = torch.tensor([W, H], device=device, dtype=dtype)
    centre = (loc + 1.0) * 0.5 * extent  # (B, 2) pixels, (x, y)
    start = centre[:, :, None] - 0.5 * size * cell  # (B, 2, J) left/top edge of each square

    n = max(H, W)
    w = area_weights(start, cell, size, n)  # (B, 2, J, size, n)
    wx, wy = w[:, 0, ..., :W], w[:, 1, ..., :H]  # (B, J, size, W), (B, J, size, H)

    rows = torch.matmul(wy.reshape(B, 1, J * size, H), images)  # (B, C, J*size, W)
    rows = rows.view(B, C, J, size, W).transpose(1, 2).reshape(B * J, C * size, W)
    out = torch.bmm(rows, wx.reshape(B * J, size, W).transpose(1, 2))  # (B*J, C*size, size)
    return out.view(B, J, C, size, size)
