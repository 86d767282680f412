"""Bounding box of the largest connected component of a binary mask, batched.

AG-CNN (Guan et al., "Diagnose like a Radiologist: Attention Guided Convolutional Neural Network
for Thorax Disease Classification", 2018, §3.2) crops the image to the box of the largest
connected region of the thresholded heat map. Here the components are labelled by label
propagation: every foreground cell starts with its own label (its raster index + 1) and takes the
maximum over its neighbours, restricted to the foreground, until nothing changes (at most
``h * w`` rounds, each one pooling over the whole batch); a component ends labelled by its last
cell in raster order. No loop over the batch, no SciPy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["label_components", "largest_component_boxes"]


def _neighbour_max(labels: Tensor, connectivity: int) -> Tensor:
    """Max over each cell and its 4- or 8-neighbours: Tensor[B, h, w] -> Tensor[B, h, w]."""
    if connectivity == 8:
        return F.max_pool2d(labels[:, None], 3, stride=1, padding=1)[:, 0]
    p = F.pad(labels, (1, 1, 1, 1))  # zeros: labels are >= 0
    return torch.stack([labels, p[:, :-2, 1:-1], p[:, 2:, 1:-1], p[:, 1:-1, :-2], p[:, 1:-1, 2:]]).amax(0)


def label_components(mask: Tensor, connectivity: int = 8) -> Tensor:
    """Connected components of ``mask``.

    Args:
        mask (Tensor[B, h, w], bool): foreground cells.
        connectivity (int): 8 (cells touching at a corner are connected) or 4.

    Returns:
        Tensor[B, h, w] (int64): 0 on the background; on a component, 1 + the raster index
        ``i * w + j`` of its last cell in raster order (distinct per component).
    """
    if mask.dim() != 3 or mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool Tensor[B, h, w], got {mask.dtype} {tuple(mask.shape)}")
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}")
    h, w = mask.shape[1:]
    if h * w >= 2**24:
        raise ValueError(f"mask of {h}x{w} cells is too large (labels are exact in float32 below 2^24)")
    index = torch.arange(1, h * w + 1, device=mask.device, dtype=torch.float32).view(1, h, w)
    labels = torch.where(mask, index, 0.0)  # (B, h, w)
    for _ in range(h * w):  # a component's diameter is < h * w cells
        grown = torch.where(mask, _neighbour_max(labels, connectivity), 0.0)
        if torch.equal(grown, labels):
            break
        labels = grown
    return labels.long()


def largest_component_boxes(mask: Tensor, connectivity: int = 8) -> Tensor:
    """Box of the largest connected component of each mask, in cells.

    Args:
        mask (Tensor[B, h, w], bool): foreground cells; cell ``(i, j)`` covers
            ``[j, j + 1) x [i, i + 1)``.
        connectivity (int): 8 or 4 (see :func:`label_components`).

    Returns:
        Tensor[B, 4] (float32): ``(x0, y0, x1, y1)`` with exclusive ends, so the component spans
        columns ``x0 .. x1 - 1`` and rows ``y0 .. y1 - 1``. Among components of equal size the
        one whose last cell comes first in raster order wins. An empty mask gives the whole map
        ``(0, 0, w, h)``.
    """
    labels = label_components(mask, connectivity)  # (B, h, w)
    B, h, w = labels.shape
    sizes = torch.zeros(B, h * w + 1, device=labels.device, dtype=torch.long)
    sizes.scatter_add_(1, labels.flatten(1), torch.ones_like(labels.flatten(1)))
    sizes[:, 0] = 0  # background
    best = sizes.argmax(1)  # (B,) the first (smallest) label among the largest
    keep = (labels == best[:, None, None]) | (best == 0)[:, None, None]  # empty mask: everything
    rows, cols = keep.any(2), keep.any(1)  # (B, h), (B, w)
    y0, x0 = rows.int().argmax(1), cols.int().argmax(1)  # first True
    y1, x1 = h - rows.flip(1).int().argmax(1), w - cols.flip(1).int().argmax(1)  # last True + 1
    return torch.stack([x0, y0, x1, y1], dim=1).float()
