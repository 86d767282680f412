"""Attention proposal network (APN) of RA-CNN (Fu et al., CVPR 2017, §3.2).

Two stacked fully connected layers on the trunk's last conv features, then a sigmoid, give
u = (u_x, u_y, u_l) in (0, 1)^3, mapped to a square inside the scale's L x L input::

    tl = L/2 * (f + (1 - f) u_l)          f = min_side_fraction (paper: 1/3)
    tx = tl + (L - 2 tl) u_x,   ty = tl + (L - 2 tl) u_y     (the box never leaves the image)

so the box's side 2 tl is at least f times the previous scale's side L (tl >= f L / 2). Some
public reimplementations read the paper's bound as tl >= L/3 (side >= 2L/3): that is
``min_side_fraction = 2/3`` here.

The last layer starts at zero, i.e. a centred box of half side L/2 * (1 + f) / 2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def square_from_unit(u: Tensor, extent: int, min_side_fraction: float) -> Tensor:
    """Map u (Tensor[B, 3]) = (u_x, u_y, u_l) in [0, 1]^3 to the square (tx, ty, tl) (Tensor[B, 3],
    pixels of the L x L input, L = ``extent``) by the formulas of the module docstring: side at
    least ``min_side_fraction`` x L, the square inside [0, L]^2."""
    f = min_side_fraction
    tl = 0.5 * extent * (f + (1.0 - f) * u[:, 2])
    free = extent - 2.0 * tl
    return torch.stack([tl + free * u[:, 0], tl + free * u[:, 1], tl], dim=1)


class AttentionProposalNetwork(nn.Module):
    """Args:
        in_channels: C of the trunk's last conv features.
        hidden: width of the first fully connected layer.
        pool: the features are average-pooled to ``pool x pool`` first (keeps the layer small:
            VGG-19 conv5_4 at 448 px is 28 x 28 x 512).
        min_side_fraction: f in (0, 1), lower bound of the box side relative to the input side.
    """

    def __init__(self, in_channels: int, hidden: int = 512, pool: int = 7,
                 min_side_fraction: float = 1.0 / 3.0) -> None:
        super().__init__()
        if not 0.0 < min_side_fraction < 1.0:
            raise ValueError(
                f"min_side_fraction must be in (0, 1) (paper: 1/3), got {min_side_fraction!r}"
            )
        if pool < 1 or hidden < 1:
            raise ValueError(f"APN pool and hidden must be >= 1, got pool={pool}, hidden={hidden}")
        self.min_side_fraction = float(min_side_fraction)
        self.pool = nn.AdaptiveAvgPool2d(pool)
        self.fc1 = nn.Linear(in_channels * pool * pool, hidden)
        self.fc2 = nn.Linear(hidden, 3)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, features: Tensor, extent: int) -> Tensor:
        """
        Args:
            features (Tensor[B, C, h, w]): last conv features of the scale.
            extent (int): side L of the scale's (square) input, in pixels.

        Returns:
            Tensor[B, 3]: (tx, ty, tl) in the input's pixels, inside [0, L]^2.
        """
        u = torch.sigmoid(self.fc2(F.relu(self.fc1(self.pool(features).flatten(1)))))
        return square_from_unit(u, extent, self.min_side_fraction)
