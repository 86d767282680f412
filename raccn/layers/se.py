"""Squeeze-and-excitation (SE) block — timm's ``SEModule`` with the paper's settings.

Hu, Shen, Sun, "Squeeze-and-Excitation Networks", CVPR 2018, §3, Eq. (2)-(4): squeeze each
channel to its spatial mean, excite through a bottleneck of ratio ``r``, rescale the channels:

    z = mean_{h,w} x,   s = sigmoid(W2 relu(W1 z)),   y_c = s_c · x_c,

``W1 ∈ R^{C/r x C}``, ``W2 ∈ R^{C x C/r}`` (fully connected, with biases as in the released
models), ``r = 16``. Placement (paper Fig. 3): inside every residual block, on the residual branch
after its last convolution and before the identity is added.

The module is ``timm.layers.SEModule`` (a kept implementation, not a copy); this entry only fixes
its arguments to the paper's: hidden width ``round(C / r)`` (timm's default rounds it to a
multiple of 8, the paper does not).
"""

from __future__ import annotations

from timm.layers import SEModule
from torch import nn

__all__ = ["squeeze_excitation"]


def squeeze_excitation(channels: int, reduction: int = 16) -> nn.Module:
    """SE block on ``Tensor[B, C, H, W]`` (``C = channels``), output of the same shape.

    Args:
        channels (int): C, channels of the input.
        reduction (int): the paper's ``r``; the bottleneck has ``max(1, round(C / r))`` units.
    """
    if channels < 1 or reduction < 1:
        raise ValueError(f"channels and reduction must be >= 1, got {channels}, {reduction}")
    return SEModule(channels, rd_ratio=1.0 / reduction, rd_divisor=1)
