"""Plug-in attention blocks, built by name: ``build_attention(name, channels, **kwargs)``.

Every block maps ``Tensor[B, C, H, W]`` to a tensor of the same shape (the two convolution
replacements take ``out_channels`` and ``stride`` like the 3×3 convolution they replace).
``PLACEMENT[name]`` says where its paper puts it, so a trunk option can insert it by name:
``"residual"`` (inside every residual block, on the residual branch before the addition),
``"stride16"`` (after the stride-16 stage, the paper's res4), ``"last"`` (after the last stage),
``"stages"`` (after each stage but the last), ``"conv3x3"`` (replacing the 3×3 convolutions).

| name | block | paper | placement | implementation |
| --- | --- | --- | --- | --- |
| ``se`` | squeeze-excitation | Hu et al. 2018 | residual | timm ``SEModule`` (paper's settings) |
| ``cbam`` | channel then spatial gate | Woo et al. 2018 | residual | timm ``CbamModule`` |
| ``non_local`` | embedded-Gaussian non-local | Wang et al. 2018 | stride16 | timm ``NonLocalAttn`` (paper's settings: no logit scale, C/2 inner) |
| ``danet`` | position + channel attention | Fu et al. 2019 | last | ours, :mod:`raccn.layers.danet` |
| ``ccnet`` | criss-cross attention, R passes | Huang et al. 2019 | last | ours, :mod:`raccn.layers.criss_cross` |
| ``aa_conv`` | attention-augmented convolution | Bello et al. 2019 | conv3x3 | ours, :mod:`raccn.layers.aa_conv` (relative logits' indexing from timm) |
| ``sasa`` | stand-alone local self-attention | Ramachandran et al. 2019 | conv3x3 | ours, :mod:`raccn.layers.sasa` |
| ``residual_attention`` | ``(1 + M(x)) · T(x)`` module | Wang et al. 2017 | stages | ours, :mod:`raccn.layers.residual_attention` |

timm (``timm.layers.create_attn``) has SE, CBAM and non-local blocks; for these the entries here
only set the paper's hyper-parameters and document the equation. It has no DANet, CCNet,
attention-augmented convolution, SASA (its ``HaloAttn`` is blocked, not per-pixel, local
attention) or residual attention module, so those are written here and tested against naive
references (``tests/test_layers.py``).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from raccn.layers.aa_conv import AugmentedConv2d
from raccn.layers.cbam import cbam
from raccn.layers.criss_cross import CrissCrossAttention
from raccn.layers.danet import ChannelAttention, DualAttention, PositionAttention
from raccn.layers.non_local import non_local
from raccn.layers.residual_attention import ResidualAttention
from raccn.layers.sasa import LocalSelfAttention2d
from raccn.layers.se import squeeze_excitation

__all__ = [
    "ATTENTION",
    "PLACEMENT",
    "AugmentedConv2d",
    "ChannelAttention",
    "CrissCrossAttention",
    "DualAttention",
    "LocalSelfAttention2d",
    "PositionAttention",
    "ResidualAttention",
    "build_attention",
    "cbam",
    "non_local",
    "squeeze_excitation",
]

#: name -> builder ``(channels, **kwargs) -> nn.Module`` (see the table above).
ATTENTION: dict[str, Callable[..., nn.Module]] = {
    "se": squeeze_excitation,
    "cbam": cbam,
    "non_local": non_local,
    "danet": DualAttention,
    "ccnet": CrissCrossAttention,
    "aa_conv": AugmentedConv2d,
    "sasa": LocalSelfAttention2d,
    "residual_attention": ResidualAttention,
}

#: name -> where the block's paper puts it (see the module docstring).
PLACEMENT: dict[str, str] = {
    "se": "residual",
    "cbam": "residual",
    "non_local": "stride16",
    "danet": "last",
    "ccnet": "last",
    "aa_conv": "conv3x3",
    "sasa": "conv3x3",
    "residual_attention": "stages",
}


def build_attention(name: str, channels: int, **kwargs) -> nn.Module:
    """Build the block ``name`` (a key of :data:`ATTENTION`) for ``channels`` input channels."""
    if name not in ATTENTION:
        raise ValueError(f"unknown attention block {name!r}: choose one of {sorted(ATTENTION)}")
    return ATTENTION[name](channels, **kwargs)
