"""Non-local block, embedded Gaussian — timm's ``NonLocalAttn`` with the paper's settings.

Wang, Girshick, Gupta, He, "Non-local Neural Networks", CVPR 2018, §3.2-3.3, Eq. (1), (3), (6):
every position attends to every position,

    y_i = sum_j softmax_j(θ(x_i)ᵀ φ(x_j)) g(x_j),   z_i = BN(W_z y_i) + x_i,

with ``θ, φ, g`` 1×1 convolutions to ``C / 2`` channels and ``W_z`` a 1×1 convolution back to
``C``, followed by batch normalisation whose scale starts at zero, so the block starts as the
identity (§4.1). Placement (paper §4.1, Table 2a): one block in res4 of a ResNet, before its last
residual block — "after the stride-16 stage" of the trunks in ``raccn.models.backbones``.

The module is ``timm.layers.NonLocalAttn`` (a kept implementation, not a copy); this entry fixes
its arguments to the paper's: ``use_scale=False`` (timm divides the logits by ``sqrt(C)`` by
default, the paper's embedded Gaussian does not) and ``C / 2`` inner channels (timm's default is
``C / 8``). The paper's optional max-pool subsampling of ``φ`` and ``g`` is not included. timm's
attributes are ``t`` (θ), ``p`` (φ), ``g``, ``z`` (W_z), ``norm``.
"""

from __future__ import annotations

from timm.layers import NonLocalAttn
from torch import nn

__all__ = ["non_local"]


def non_local(channels: int, reduction: int = 2) -> nn.Module:
    """Non-local block on ``Tensor[B, C, H, W]`` (``C = channels``), output of the same shape.

    Args:
        channels (int): C, channels of the input.
        reduction (int): inner width ``round(C / reduction)`` of θ, φ, g (the paper's 2).
    """
    if channels < 1 or reduction < 1:
        raise ValueError(f"channels and reduction must be >= 1, got {channels}, {reduction}")
    return NonLocalAttn(channels, use_scale=False, rd_ratio=1.0 / reduction, rd_divisor=1)
