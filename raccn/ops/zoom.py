"""Attention cropping and zooming of RA-CNN: mask the square, then resample it bilinearly.

Fu, Zheng, Mei, "Look Closer to See Better", CVPR 2017, §3.2: the attended region is
``X_att = X ⊙ M(tx, ty, tl)`` (Eq. 4, :func:`raccn.ops.boxcar_mask`) and is then *amplified*:
the square ``[tx - tl, tx + tl] x [ty - tl, ty + tl]`` is resampled by bilinear interpolation
to the input size of the next scale (Eq. 5). Here that is one ``F.grid_sample`` call.

Gradient routing. The paper back-propagates to ``(tx, ty, tl)`` through the mask only (its
§3.2 derivative of ``M``); the crop coordinates are treated as constants. That is the default
(``grid_grad=False``: the sampling grid is built from ``boxes.detach()``). ``grid_grad=True``
additionally differentiates the bilinear sampling positions (as in a spatial transformer).
Gradients with respect to ``images`` always flow.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from raccn.ops.boxcar import boxcar_mask, check_k

__all__ = ["check_crop_args", "check_zoom_args", "zoom"]


def check_crop_args(images: Tensor, boxes: Tensor, out_size: int) -> None:
    """Raise ``ValueError`` (with the fix) unless ``images`` is Tensor[B, C, H, W] (floating
    point), ``boxes`` Tensor[B, 3] and ``out_size`` a positive integer (any square cropper)."""
    if images.dim() != 4:
        raise ValueError(f"images must be Tensor[B, C, H, W], got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(
            f"images must be a floating-point tensor, got {images.dtype}; use images.float()"
        )
    B = images.shape[0]
    if boxes.shape != (B, 3):
        raise ValueError(
            f"boxes must be Tensor[B, 3] = (tx, ty, tl) in pixels with B={B} (one square per "
            f"image), got shape {tuple(boxes.shape)}"
        )
    if not isinstance(out_size, int) or out_size < 1:
        raise ValueError(f"out_size must be a positive integer (pixels), got {out_size!r}")


def check_zoom_args(images: Tensor, boxes: Tensor, out_size: int, k: float) -> None:
    """Raise ``ValueError`` (with the fix) for invalid :func:`zoom` arguments."""
    check_crop_args(images, boxes, out_size)
    check_k(k)


def zoom(
    images: Tensor, boxes: Tensor, out_size: int, k: float = 10.0, grid_grad: bool = False
) -> Tensor:
    """Attend to a square with the boxcar mask and zoom it to ``out_size x out_size``.

    Args:
        images (Tensor[B, C, H, W]): batch of images.
        boxes (Tensor[B, 3]): ``(tx, ty, tl)`` in pixels: centre x, centre y and *half* the side
            of the square ``[tx - tl, tx + tl] x [ty - tl, ty + tl]``. Pixel ``i`` covers
            ``[i, i + 1)``; ``(0, 0)`` is the top-left corner of the image. Cast to the dtype of
            ``images``. ``tl`` should be > 0 (not checked: no host sync).
        out_size (int): side ``n`` of the output, in pixels.
        k (float): steepness of the mask edges (see :func:`raccn.ops.boxcar_mask`), > 0.
        grid_grad (bool): if False (the paper), gradients reach ``boxes`` through the mask only;
            if True, also through the bilinear sampling positions.

    Returns:
        Tensor[B, C, n, n]: ``S(X ⊙ M)``. Output pixel ``(v, u)`` samples ``X ⊙ M`` bilinearly
        (``align_corners=False`` convention, pixel centres at ``i + 0.5``) at

            x_u = tx - tl + (u + 0.5) * 2 tl / n,   y_v = ty - tl + (v + 0.5) * 2 tl / n,

        each clamped to the square's extreme pixel centres ``[tx - tl + 0.5, tx + tl - 0.5]``
        (``[ty - tl + 0.5, ty + tl - 0.5]``; both bounds become ``tx`` when ``tl < 0.5``).
        The clamp is the one ``F.interpolate(mode="bilinear", align_corners=False)`` applies at
        the edges of its input, so for a square on pixel boundaries ``(x0, y0, x1, y1)`` and a
        large ``k``, ``zoom`` equals
        ``F.interpolate(images[..., y0:y1, x0:x1], size=(n, n), mode="bilinear",
        align_corners=False)`` (up- and downsampling; no antialiasing). Outside the image the
        input counts as zero.

    Differentiable with respect to ``images`` and ``boxes`` (autograd, no custom backward).
    """
    check_zoom_args(images, boxes, out_size, k)
    H, W = images.shape[-2:]
    n = out_size
    boxes = boxes.to(images.dtype)
    mask = boxcar_mask(boxes, H, W, k)  # (B, H, W)
    attended = images * mask[:, None]  # (B, C, H, W)  X ⊙ M

    g = boxes if grid_grad else boxes.detach()
    tx, ty, tl = g[:, 0:1], g[:, 1:2], g[:, 2:3]  # (B, 1) each
    u = torch.arange(n, device=images.device, dtype=images.dtype)  # (n,) output pixels
    s = (2 * u + 1) / n - 1  # (n,) in (-1, 1): (u + 0.5) * 2 / n - 1
    r = (tl - 0.5).clamp(min=0.0)  # (B, 1) half-distance between the extreme pixel centres
    offset = torch.clamp(tl * s, -r, r)  # (B, n) sample offsets from the centre, pixels
    gx = 2 * (tx + offset) / W - 1  # (B, n) normalised x, align_corners=False
    gy = 2 * (ty + offset) / H - 1  # (B, n)
    gx, gy = torch.broadcast_tensors(gx[:, None, :], gy[:, :, None])  # (B, n, n) each
    grid = torch.stack([gx, gy], dim=-1)  # (B, n, n, 2): grid[b, v, u] = (x_u, y_v)
    return F.grid_sample(attended, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
