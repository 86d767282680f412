"""Glimpse network of DRAM (Ba, Mnih, Kavukcuoglu, ICLR 2015, §3): convolutional "what",
linear "where", fused by an element-wise product.

    x_n   = ρ(x, l_n)                                   (``raccn.ops.glimpse``, multi-scale)
    G_img = ReLU(Linear(ReLU(conv_3(ReLU(conv_2(ReLU(conv_1(x_n))))))))
    G_loc = ReLU(Linear(l_n))
    g_n   = G_img ⊙ G_loc
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from raccn.models.conv_stack import conv_stack
from raccn.models.glimpse_sensor import GlimpseSensor


class DRAMGlimpseNetwork(GlimpseSensor):
    """Glimpse sensor, a small ConvNet on the patches, and the multiplicative what/where fusion.

    The ``scales`` patches of a glimpse (all ``patch_size x patch_size``) are stacked along the
    channels, so the first convolution sees ``C * scales`` channels. The convolutions have
    kernels 5, 3, 3, ... (one per entry of ``channels``), stride 1 and "same" padding, each
    followed by ReLU, and no pooling (paper).

    Args:
        in_channels: image channels C.
        patch_size: side of each glimpse patch in pixels.
        scales: number of patches per glimpse.
        scale_factor: patch ``j`` covers ``patch_size * scale_factor**j`` pixels.
        channels: output channels of the convolutions (paper: 3 layers).
        out_dim: width D of G_img, G_loc and g_n.
    """

    def __init__(
        self,
        in_channels: int = 1,
        patch_size: int = 12,
        scales: int = 2,
        scale_factor: float = 2.0,
        channels: Sequence[int] = (64, 64, 128),
        out_dim: int = 256,
    ) -> None:
        super().__init__(patch_size, scales, scale_factor)
        self.convs = conv_stack(in_channels * scales, channels, 1, "conv_channels")
        self.fc_image = nn.Linear(channels[-1] * patch_size**2, out_dim)
        self.fc_loc = nn.Linear(2, out_dim)

    def fuse(self, rho: Tensor, loc: Tensor) -> Tensor:
        """
        Args:
            rho (Tensor[B, scales, C, patch_size, patch_size]): the glimpse x_n = ρ(x, l_n).
            loc (Tensor[B, 2]): its centre l_n in [-1, 1].

        Returns:
            Tensor[B, out_dim]: the glimpse feature g_n (>= 0).
        """
        g_image = F.relu(self.fc_image(self.convs(rho.flatten(1, 2)).flatten(1)))  # (B, D)
        g_loc = F.relu(self.fc_loc(loc))  # (B, D)
        return g_image * g_loc
