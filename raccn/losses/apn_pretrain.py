"""Targets of RA-CNN's APN pre-training (Fu et al. 2017, §3.4).

The paper initialises each APN by regressing the square whose centre is the highest response of
the last conv layer (channels summed) and whose side is half the input's. ``pretrain_squares``
gives that square from a response map, or one centred on the map's weighted centroid, which is
sub-cell precise where the map is coarse (an addition of ours, ``RACNNLitModule``'s
``extras.pretrain_target``).

Squares are ``(tx, ty, tl)`` (centre and half side, ``raccn.ops.boxes``) in pixels of the L x L
input the map covers; map cell (i, j) of an h x w map is centred at ((j + 0.5) L / w,
(i + 0.5) L / h).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["CENTRES", "pretrain_squares"]

CENTRES = ("peak", "centroid")


def pretrain_squares(maps: Tensor, extent: int, side: float = 0.5, centre: str = "peak",
                     power: float = 2.0) -> Tensor:
    """Square pre-training targets from response maps.

    Args:
        maps (Tensor[B, h, w]): a response per cell; for ``"centroid"`` >= 0 (e.g. a map's excess
            over its minimum, or a class activation map's positive part).
        extent (int): side L of the input the maps cover, in pixels.
        side (float): the squares' side as a fraction of L, in (0, 1] (paper: 0.5).
        centre (str): ``"peak"`` (paper: the centre of the arg-max cell) or ``"centroid"`` (the
            mean cell centre weighted by ``maps ** power``; all-zero maps give the input's centre).
        power (float): the exponent p of the centroid's weights (> 0); larger p leans to the peak.

    Returns:
        Tensor[B, 3]: (tx, ty, tl), tl = side * L / 2, moved inside [0, L]^2.
    """
    if centre not in CENTRES:
        raise ValueError(f"centre must be one of {CENTRES}, got {centre!r}")
    _, h, w = maps.shape
    L = extent
    if centre == "peak":
        idx = maps.flatten(1).argmax(1)
        cx = ((idx % w).to(maps.dtype) + 0.5) * L / w
        cy = (torch.div(idx, w, rounding_mode="floor").to(maps.dtype) + 0.5) * L / h
    else:
        weight = maps.pow(power) + 1e-12  # all-zero maps (no evidence): the centre
        weight = weight / weight.sum(dim=(1, 2), keepdim=True)
        cols = (torch.arange(w, device=maps.device, dtype=maps.dtype) + 0.5) * L / w
        rows = (torch.arange(h, device=maps.device, dtype=maps.dtype) + 0.5) * L / h
        cx = (weight.sum(1) * cols).sum(1)
        cy = (weight.sum(2) * rows).sum(1)
    tl = torch.full_like(cx, 0.5 * side * L)
    return torch.stack([cx.clamp(tl, L - tl), cy.clamp(tl, L - tl), tl], dim=1)
