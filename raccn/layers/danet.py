"""Dual attention of DANet: position attention and channel attention, fused by a sum.

Fu, Liu, Tian, Li, Bao, Fang, Lu, "Dual Attention Network for Scene Segmentation", CVPR 2019,
§3.2-3.4. For a feature map ``A ∈ R^{C x N}`` (``N = H W`` positions):

Position attention module (Eq. 1-2): 1×1 convolutions give ``B, C' ∈ R^{C/8 x N}`` and
``D ∈ R^{C x N}`` (``C'`` is the paper's "C", renamed here to keep it apart from the channel count);

    s_ji = exp(B_i · C'_j) / sum_i exp(B_i · C'_j),   E_j = α sum_i s_ji D_i + A_j.

Channel attention module (Eq. 3-4), no convolutions:

    x_ji = exp(A_i · A_j) / sum_i exp(A_i · A_j),     E_j = β sum_i x_ji A_i + A_j,

with ``A_i`` the i-th channel (a vector over positions). ``α`` and ``β`` are learnt scalars that
start at 0, so both modules start as the identity. This follows the paper's Eq. 3; the authors'
released code instead takes the softmax of ``max_i(A_i · A_j) - A_i · A_j``.

Placement (paper Fig. 2): both modules run in parallel on the output of the last stage of the
trunk and their outputs are summed. The paper's head wraps each module in 3×3 conv-BN-ReLU layers
that reduce to ``C/4`` channels for segmentation; as a plug-in block :class:`DualAttention` keeps
the trunk's ``C`` channels, leaves those layers out, and averages the two outputs (the paper's
sum, halved so the block is the identity at initialisation).

Written here: timm has no DANet block.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["ChannelAttention", "DualAttention", "PositionAttention"]


def _check(channels: int, reduction: int = 1) -> None:
    if channels < 1 or reduction < 1 or channels < reduction:
        raise ValueError(f"need channels >= reduction >= 1, got channels={channels}, "
                         f"reduction={reduction}")


class PositionAttention(nn.Module):
    """DANet's position attention module (Eq. 1-2) on ``Tensor[B, C, H, W]``, same shape out.

    Args:
        channels (int): C.
        reduction (int): ``B`` and ``C'`` have ``C // reduction`` channels (the paper's 8).
    """

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        _check(channels, reduction)
        self.conv_b = nn.Conv2d(channels, channels // reduction, 1)
        self.conv_c = nn.Conv2d(channels, channels // reduction, 1)
        self.conv_d = nn.Conv2d(channels, channels, 1)
        self.alpha = nn.Parameter(torch.zeros(()))

    def attention(self, a: Tensor) -> Tensor:
        """``s`` as ``Tensor[B, N, N]``: ``s[b, j, i] = s_ji`` (rows sum to 1), N = H W row-major."""
        b = self.conv_b(a).flatten(2)  # (B, C/8, N)
        c = self.conv_c(a).flatten(2)  # (B, C/8, N)
        return torch.softmax(c.transpose(1, 2) @ b, dim=-1)  # (B, N_j, N_i)

    def forward(self, a: Tensor) -> Tensor:
        B, C, H, W = a.shape
        s = self.attention(a)  # (B, N, N)
        d = self.conv_d(a).flatten(2)  # (B, C, N)
        out = d @ s.transpose(1, 2)  # (B, C, N): out[:, :, j] = sum_i s_ji D_i
        return self.alpha * out.view(B, C, H, W) + a


class ChannelAttention(nn.Module):
    """DANet's channel attention module (Eq. 3-4) on ``Tensor[B, C, H, W]``, same shape out.

    It has one parameter, ``β``; ``channels`` is accepted so that every block is built as
    ``block(channels)``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        _check(channels)
        self.beta = nn.Parameter(torch.zeros(()))

    @staticmethod
    def attention(a: Tensor) -> Tensor:
        """``x`` as ``Tensor[B, C, C]``: ``x[b, j, i] = x_ji`` (rows sum to 1)."""
        f = a.flatten(2)  # (B, C, N)
        return torch.softmax(f @ f.transpose(1, 2), dim=-1)  # (B, C_j, C_i)

    def forward(self, a: Tensor) -> Tensor:
        B, C, H, W = a.shape
        out = self.attention(a) @ a.flatten(2)  # (B, C, N): out[:, j] = sum_i x_ji A_i
        return self.beta * out.view(B, C, H, W) + a


class DualAttention(nn.Module):
    """DANet's two modules in parallel, outputs averaged: ``(PAM(A) + CAM(A)) / 2``.

    ``Tensor[B, C, H, W]`` in and out. Args as :class:`PositionAttention`.
    """

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        self.position = PositionAttention(channels, reduction)
        self.channel = ChannelAttention(channels)

    def forward(self, a: Tensor) -> Tensor:
        return 0.5 * (self.position(a) + self.channel(a))
