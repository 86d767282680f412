"""Glimpse network f_g (Mnih et al. 2014, §4): what and where, fused into one vector.

    h_g = ReLU(Linear(ρ(x, l)))      h_l = ReLU(Linear(l))
    g   = ReLU(Linear(h_g) + Linear(h_l))
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from raccn.models.glimpse_sensor import GlimpseSensor


class GlimpseNetwork(GlimpseSensor):
    """Glimpse sensor followed by the what/where fusion.

    Args:
        in_channels: image channels C.
        patch_size: side of each glimpse patch in pixels.
        scales: number of patches per glimpse.
        scale_factor: patch ``j`` covers ``patch_size * scale_factor**j`` pixels.
        hidden_g: width of h_g (paper: 128).
        hidden_l: width of h_l (paper: 128).
        out_dim: width of g (paper: 256).
    """

    def __init__(
        self,
        in_channels: int = 1,
        patch_size: int = 8,
        scales: int = 1,
        scale_factor: float = 2.0,
        hidden_g: int = 128,
        hidden_l: int = 128,
        out_dim: int = 256,
    ) -> None:
        super().__init__(patch_size, scales, scale_factor)
        self.fc_hg = nn.Linear(in_channels * scales * patch_size**2, hidden_g)
        self.fc_hl = nn.Linear(2, hidden_l)
        self.fc_g = nn.Linear(hidden_g, out_dim)
        self.fc_l = nn.Linear(hidden_l, out_dim)

    def fuse(self, rho: Tensor, loc: Tensor) -> Tensor:
        """
        Args:
            rho (Tensor[B, scales, C, patch_size, patch_size]): the glimpse ρ(x, l).
            loc (Tensor[B, 2]): its centre l in [-1, 1].

        Returns:
            Tensor[B, out_dim]: the glimpse feature g_t.
        """
        h_g = F.relu(self.fc_hg(rho.flatten(1)))
        h_l = F.relu(self.fc_hl(loc))
        return F.relu(self.fc_g(h_g) + self.fc_l(h_l))
