"""Convolutional block attention module (CBAM) — timm's ``CbamModule`` with the paper's settings.

Woo, Park, Lee, Kweon, "CBAM: Convolutional Block Attention Module", ECCV 2018, §3, Eq. (1)-(3):
channel attention, then spatial attention, each a sigmoid gate multiplied into the features:

    M_c(F) = sigmoid(W1 relu(W0 avgpool(F)) + W1 relu(W0 maxpool(F))),   F' = M_c(F) ⊙ F,
    M_s(F') = sigmoid(f7x7([mean_c F'; max_c F'])),                        F'' = M_s(F') ⊙ F',

with a shared MLP ``W0 ∈ R^{C/r x C}``, ``W1 ∈ R^{C x C/r}`` (no biases, as Eq. 2 writes it),
``r = 16``, and a 7×7 convolution from 2 maps to 1. As in the authors' released code the 7×7
convolution is followed by batch normalisation (so in eval mode ``f7x7`` is conv then the BN's
affine map). Placement (paper Fig. 3): inside every residual block, on the residual branch after
its last convolution and before the identity is added.

The module is ``timm.layers.CbamModule`` (a kept implementation, not a copy); this entry fixes
its arguments to the paper's.
"""

from __future__ import annotations

from timm.layers.cbam import CbamModule  # not re-exported by timm.layers; create_attn("cbam") is it
from torch import nn

__all__ = ["cbam"]


def cbam(channels: int, reduction: int = 16, kernel_size: int = 7) -> nn.Module:
    """CBAM on ``Tensor[B, C, H, W]`` (``C = channels``), output of the same shape.

    Args:
        channels (int): C, channels of the input.
        reduction (int): the paper's ``r``; the shared MLP has ``max(1, round(C / r))`` units.
        kernel_size (int): side of the spatial-attention convolution (odd; the paper's 7).
    """
    if channels < 1 or reduction < 1:
        raise ValueError(f"channels and reduction must be >= 1, got {channels}, {reduction}")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer (paper: 7), got {kernel_size}")
    return CbamModule(channels, rd_ratio=1.0 / reduction, rd_divisor=1,
                      spatial_kernel_size=kernel_size, mlp_bias=False)
