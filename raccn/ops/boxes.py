"""Square boxes (tx, ty, tl) of RA-CNN: conversions, nesting across scales, IoU.

A square box is ``(tx, ty, tl)`` in pixels: its centre and HALF side, in the pixel convention of
the image it lives in (pixel i covers [i, i+1)); it covers [tx - tl, tx + tl] x [ty - tl, ty + tl].
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["box_iou_pairs", "compose_squares", "square_to_xyxy"]


def square_to_xyxy(boxes: Tensor) -> Tensor:
    """boxes (Tensor[..., 3]) = (tx, ty, tl) -> Tensor[..., 4] = (x0, y0, x1, y1), same pixels."""
    tx, ty, tl = boxes.unbind(-1)
    return torch.stack([tx - tl, ty - tl, tx + tl, ty + tl], dim=-1)


def compose_squares(outer: Tensor, inner: Tensor, crop_size: int) -> Tensor:
    """Map a box found in an amplified crop back to the image the crop was cut from.

    Args:
        outer (Tensor[B, 3]): the crop's box (tx, ty, tl) in image pixels.
        inner (Tensor[B, 3]): a box (tx, ty, tl) in the pixels of the crop, which was resampled
            to ``crop_size x crop_size`` (see ``raccn.ops.zoom``).
        crop_size (int): side of the amplified crop.

    Returns:
        Tensor[B, 3]: the inner box in image pixels.
    """
    scale = 2.0 * outer[:, 2] / crop_size  # image pixels per crop pixel
    x0, y0 = outer[:, 0] - outer[:, 2], outer[:, 1] - outer[:, 2]
    return torch.stack([x0 + inner[:, 0] * scale, y0 + inner[:, 1] * scale, inner[:, 2] * scale], dim=1)


def box_iou_pairs(a: Tensor, b: Tensor) -> Tensor:
    """IoU of matching pairs: a, b (Tensor[B, 4]) = (x0, y0, x1, y1) -> Tensor[B] in [0, 1].

    (``torchvision.ops.box_iou`` computes all N x M pairs; here row i is paired with row i.)
    """
    lt = torch.maximum(a[:, :2], b[:, :2])
    rb = torch.minimum(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=1)
    area = lambda x: (x[:, 2:] - x[:, :2]).clamp(min=0).prod(dim=1)
    return inter / (area(a) + area(b) - inter).clamp(min=1e-12)
