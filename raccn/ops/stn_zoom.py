"""Spatial-transformer zoom: crop and amplify a square by differentiable bilinear sampling alone.

Jaderberg, Simonyan, Zisserman, Kavukcuoglu, "Spatial Transformer Networks", NeurIPS 2015. The
output grid's points ``(x_t, y_t)`` (normalised to ``[-1, 1]``) are mapped to source points by the
attention transform of §3.2 (Eq. 3, isotropic scale ``s`` and translation ``(t_x, t_y)``)

    (x_s, y_s)^T = [[s, 0, t_x], [0, s, t_y]] (x_t, y_t, 1)^T,

and the output is the bilinear kernel of Eq. (5),
``V = Σ_nm U_nm max(0, 1 - |x_s - m|) max(0, 1 - |y_s - n|)``, whose sub-gradients with respect to
``(x_s, y_s)`` (Eq. 7) carry the loss to the transform. Here ``F.affine_grid`` builds the grid and
``F.grid_sample`` samples; the RA-CNN box ``(tx, ty, tl)`` in pixels gives
``s_x = 2 tl / W``, ``s_y = 2 tl / H``, ``t_x = 2 tx / W - 1``, ``t_y = 2 ty / H - 1``.

Unlike :func:`raccn.ops.zoom` (RA-CNN's boxcar mask, then resampling) nothing is masked: the box
receives gradients only through the sampling positions, i.e. from the image's spatial gradient
under the samples, not from what enters or leaves the square. Samples are neither clamped to the
square, so near the square's edges the bilinear kernel also reads the pixel just outside it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from raccn.ops.zoom import check_crop_args

__all__ = ["stn_theta", "stn_zoom"]


def stn_theta(boxes: Tensor, height: int, width: int) -> Tensor:
    """Affine matrices of :func:`stn_zoom` for ``F.affine_grid(..., align_corners=False)``.

    Args:
        boxes (Tensor[B, 3]): ``(tx, ty, tl)`` in pixels (see :func:`stn_zoom`).
        height (int): H of the source images.
        width (int): W of the source images.

    Returns:
        Tensor[B, 2, 3]: ``[[2 tl / W, 0, 2 tx / W - 1], [0, 2 tl / H, 2 ty / H - 1]]``, mapping
        the output's normalised coordinates to the source's.
    """
    tx, ty, tl = boxes.unbind(1)  # (B,) each
    zero = torch.zeros_like(tl)
    row_x = torch.stack([2 * tl / width, zero, 2 * tx / width - 1], dim=1)  # (B, 3)
    row_y = torch.stack([zero, 2 * tl / height, 2 * ty / height - 1], dim=1)  # (B, 3)
    return torch.stack([row_x, row_y], dim=1)  # (B, 2, 3)


def stn_zoom(images: Tensor, boxes: Tensor, out_size: int) -> Tensor:
    """Crop the square ``boxes`` from ``images`` and amplify it to ``out_size x out_size`` with a
    spatial transformer (affine grid + bilinear sampling), differentiable through the grid.

    Args:
        images (Tensor[B, C, H, W]): batch of images.
        boxes (Tensor[B, 3]): ``(tx, ty, tl)`` in pixels, as in :func:`raccn.ops.zoom`: centre
            x, centre y and *half* the side of the square ``[tx - tl, tx + tl] x
            [ty - tl, ty + tl]``. Pixel ``i`` covers ``[i, i + 1)``; ``(0, 0)`` is the top-left
            corner of the image. Cast to the dtype of ``images``. ``tl`` should be > 0 (not
            checked: no host sync).
        out_size (int): side ``n`` of the output, in pixels.

    Returns:
        Tensor[B, C, n, n]. Output pixel ``(v, u)`` samples ``images`` bilinearly
        (``align_corners=False`` convention, pixel centres at ``i + 0.5``) at

            x_u = tx + tl (2 u + 1 - n) / n,   y_v = ty + tl (2 v + 1 - n) / n,

        the positions of :func:`raccn.ops.zoom` without its clamp to the square's extreme pixel
        centres (and without its mask). Outside the image the input counts as zero. For a
        square on pixel boundaries ``(x0, y0, x1, y1)`` whose side ``x1 - x0 >= n`` (no
        upsampling) every sample lies within the square's pixel centres, and ``stn_zoom``
        equals ``F.interpolate(images[..., y0:y1, x0:x1], size=(n, n), mode="bilinear",
        align_corners=False)``; when upsampling, the outermost samples also read the pixels
        just outside the square.

    Differentiable with respect to ``images`` and ``boxes`` (autograd through ``F.affine_grid``
    and ``F.grid_sample``, no custom backward); bilinear sampling has kinks where a sample
    crosses a pixel centre, where the box gradient is a one-sided derivative.
    """
    check_crop_args(images, boxes, out_size)
    B, C, H, W = images.shape
    theta = stn_theta(boxes.to(images.dtype), H, W)  # (B, 2, 3)
    grid = F.affine_grid(theta, [B, C, out_size, out_size], align_corners=False)  # (B, n, n, 2)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
