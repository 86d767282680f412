"""Attention-augmented convolution with 2-D relative position logits.

Bello, Zoph, Vaswani, Shlens, Le, "Attention Augmented Convolutional Networks", ICCV 2019, §3.
The output concatenates a convolution with multi-head self-attention over all positions:

    AAConv(X) = Concat[Conv(X), MHA(X)],   MHA(X) = W_O Concat[O_1, ..., O_Nh],
    O_h = softmax((Q Kᵀ + S_H^rel + S_W^rel) / sqrt(d_k^h)) V            (Eq. 1-2, 5),
    l_{i,j} = q_iᵀ (k_j + r^W_{j_x - i_x} + r^H_{j_y - i_y}) / sqrt(d_k^h)   (Eq. 3),

with ``Q, K, V`` 1×1 projections of ``X`` (``d_k``, ``d_k``, ``d_v`` channels split into ``Nh``
heads), ``W_O`` a 1×1 projection, and learnt relative embeddings ``r^W``, ``r^H ∈ R^{d_k^h}``
for each column / row offset, shared by the heads. Defaults are the paper's: ``Nh = 8``,
``d_v = 0.2 F_out``, ``d_k = 2 d_v`` (§4, ``υ = 0.2``, ``κ = 2υ``), each rounded to a multiple
of ``Nh``. Placement (paper §4.1): it replaces the 3×3 convolutions of the residual blocks.

The paper's embeddings are tied to one feature-map size. Here they cover offsets up to
``max_size - 1`` and a map of any size up to ``max_size`` uses the central ones, so one block
serves several input sizes. With ``stride > 1`` the attention runs on the input average-pooled by
``stride`` (the convolution's own output grid, ``ceil(H / stride)``).

Written here (timm has no attention-augmented convolution); the relative-to-absolute indexing of
the logits is timm's ``rel_logits_1d`` (the paper's trick, from timm's bottleneck attention).
Memory grows as ``(H W)^2`` per head: meant for small maps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers.bottleneck_attn import rel_logits_1d
from torch import Tensor, nn

__all__ = ["AugmentedConv2d", "relative_logits"]


def relative_logits(q: Tensor, rel_h: Tensor, rel_w: Tensor) -> Tensor:
    """2-D relative position logits ``S_H^rel + S_W^rel``.

    Args:
        q (Tensor[B, H, W, d]): queries (B may fold batch and heads), already scaled.
        rel_h (Tensor[2H - 1, d]): row-offset embeddings, ``rel_h[m] = r^H_{m - (H - 1)}``.
        rel_w (Tensor[2W - 1, d]): column-offset embeddings, ``rel_w[m] = r^W_{m - (W - 1)}``.

    Returns:
        Tensor[B, H W, H W]: ``[b, i, j] = q_i · r^W_{j_x - i_x} + q_i · r^H_{j_y - i_y}``,
        positions ``i = i_y W + i_x`` (row-major).
    """
    B, H, W, _ = q.shape
    s_w = rel_logits_1d(q, rel_w, permute_mask=[0, 1, 3, 2, 4])  # (B, H, W, H, W)
    s_h = rel_logits_1d(q.transpose(1, 2), rel_h, permute_mask=[0, 3, 1, 4, 2])  # (B, H, W, H, W)
    return (s_h + s_w).reshape(B, H * W, H * W)


def _heads_multiple(value: float, heads: int) -> int:
    return heads * max(1, round(value / heads))


class AugmentedConv2d(nn.Module):
    """Attention-augmented convolution, ``Tensor[B, C_in, H, W] -> Tensor[B, C_out, H', W']``
    with ``H' = ceil(H / stride)`` (likewise W'); the first ``C_out - d_v`` channels are the
    convolution's, the last ``d_v`` the attention's.

    Args:
        in_channels (int): C_in.
        out_channels (int | None): C_out (default C_in).
        kernel_size (int): odd side of the convolution (padding ``kernel_size // 2``).
        stride (int): stride of the convolution and of the attention's average pooling.
        heads (int): Nh.
        value_ratio (float): υ, ``d_v ≈ υ C_out``; 1 leaves no convolution.
        key_ratio (float): κ, ``d_k ≈ κ C_out``.
        max_size (int): largest side of the attended map (the relative embeddings' range).
    """

    def __init__(self, in_channels: int, out_channels: int | None = None, kernel_size: int = 3,
                 stride: int = 1, heads: int = 8, value_ratio: float = 0.2,
                 key_ratio: float = 0.4, max_size: int = 64) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        if kernel_size < 1 or kernel_size % 2 == 0 or stride < 1 or heads < 1 or max_size < 1:
            raise ValueError(f"need an odd kernel_size and stride, heads, max_size >= 1, got "
                             f"{kernel_size}, {stride}, {heads}, {max_size}")
        dv = _heads_multiple(value_ratio * out_channels, heads)
        dk = _heads_multiple(key_ratio * out_channels, heads)
        if dv > out_channels:
            raise ValueError(f"d_v = {dv} (value_ratio {value_ratio} of {out_channels} channels, "
                             f"a multiple of heads={heads}) exceeds out_channels: lower heads or "
                             f"value_ratio")
        self.heads, self.dk, self.dv, self.stride, self.max_size = heads, dk, dv, stride, max_size
        self.conv = (nn.Conv2d(in_channels, out_channels - dv, kernel_size, stride,
                               kernel_size // 2, bias=False) if out_channels > dv else None)
        self.qkv = nn.Conv2d(in_channels, 2 * dk + dv, 1, bias=False)
        self.proj = nn.Conv2d(dv, dv, 1, bias=False)  # W_O
        dkh = dk // heads
        self.rel_h = nn.Parameter(torch.randn(2 * max_size - 1, dkh) * dkh**-0.5)
        self.rel_w = nn.Parameter(torch.randn(2 * max_size - 1, dkh) * dkh**-0.5)

    def heads_qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per-head ``q`` (scaled by ``d_k^h^-1/2``) ``Tensor[B, Nh, H W, d_k^h]``,
        ``k`` ``Tensor[B, Nh, d_k^h, H W]`` and ``v`` ``Tensor[B, Nh, d_v^h, H W]``."""
        B, _, H, W = x.shape
        Nh, dkh = self.heads, self.dk // self.heads
        q, k, v = self.qkv(x).split([self.dk, self.dk, self.dv], dim=1)
        q = q.reshape(B, Nh, dkh, H * W).transpose(2, 3) * dkh**-0.5
        return q, k.reshape(B, Nh, dkh, H * W), v.reshape(B, Nh, self.dv // Nh, H * W)

    def attention(self, q: Tensor, k: Tensor, height: int, width: int) -> Tensor:
        """Weights ``Tensor[B, Nh, H W, H W]`` (rows sum to 1) from :meth:`heads_qkv`'s q, k."""
        H, W = height, width
        if max(H, W) > self.max_size:
            raise ValueError(f"feature map {H}x{W} exceeds max_size={self.max_size} of the "
                             f"relative embeddings: build the block with max_size >= {max(H, W)} "
                             f"(in a trunk: attention_args: {{max_size: {max(H, W)}}})")
        B, Nh, _, dkh = q.shape
        m = self.max_size - 1  # index of offset 0
        rel = relative_logits(q.reshape(B * Nh, H, W, dkh),
                              self.rel_h[m - H + 1:m + H], self.rel_w[m - W + 1:m + W])
        return torch.softmax(q @ k + rel.view(B, Nh, H * W, H * W), dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        outs = [self.conv(x)] if self.conv is not None else []
        if self.stride > 1:
            x = F.avg_pool2d(x, self.stride, ceil_mode=True)
        B, _, H, W = x.shape
        q, k, v = self.heads_qkv(x)
        o = v @ self.attention(q, k, H, W).transpose(2, 3)  # (B, Nh, dvh, HW): sum_j a_ij v_j
        outs.append(self.proj(o.reshape(B, self.dv, H, W)))
        return torch.cat(outs, dim=1)
