"""Stand-alone local self-attention (SASA).

Ramachandran, Parmar, Vaswani, Bello, Levskaya, Shlens, "Stand-Alone Self-Attention in Vision
Models", NeurIPS 2019, §2.2-2.3. Each pixel ``ij`` attends to its ``k x k`` neighbourhood
``N_k(i, j)``, with relative position embeddings:

    y_ij = sum_{ab ∈ N_k(i,j)} softmax_ab(q_ijᵀ k_ab + q_ijᵀ r_{a-i, b-j}) v_ab     (Eq. 3),

``q = W_Q x``, ``k = W_K x``, ``v = W_V x`` (1×1, no bias), split into ``Nh`` heads of
``d = C_out / Nh`` channels; ``r_{a-i, b-j}`` concatenates a row-offset embedding (the first
``C_out / 2`` channels) and a column-offset embedding (the rest), split into heads like ``q``.
Defaults are the paper's: ``k = 7``, ``Nh = 8``; with ``stride > 1`` a ``stride x stride``
average pool follows the attention (§3.1). Placement (paper §3.1): it replaces every 3×3
convolution of a ResNet ("full attention"; the stem may stay convolutional).

Neighbours outside the image are left out of the softmax (the paper does not say; zero-padded
keys would otherwise take weight). The neighbourhoods are gathered with ``F.unfold`` (memory
``k^2`` times that of ``k`` and ``v``). Written here: timm's ``HaloAttn`` attends within blocks
plus a halo (Vaswani et al. 2021), not per-pixel windows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["LocalSelfAttention2d"]


class LocalSelfAttention2d(nn.Module):
    """SASA layer, ``Tensor[B, C_in, H, W] -> Tensor[B, C_out, H', W']``, ``H' = H // stride``.

    Args:
        in_channels (int): C_in.
        out_channels (int | None): C_out (default C_in), divisible by ``heads``.
        kernel_size (int): odd side k of the neighbourhood.
        stride (int): side of the average pool after the attention (1: none).
        heads (int): Nh.
    """

    def __init__(self, in_channels: int, out_channels: int | None = None, kernel_size: int = 7,
                 stride: int = 1, heads: int = 8) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        if kernel_size < 1 or kernel_size % 2 == 0 or stride < 1 or heads < 1:
            raise ValueError(f"need an odd kernel_size and stride, heads >= 1, got "
                             f"{kernel_size}, {stride}, {heads}")
        if out_channels % heads or out_channels < 2:
            raise ValueError(f"out_channels={out_channels} must be >= 2 and divisible by "
                             f"heads={heads}")
        self.kernel_size, self.stride, self.heads = kernel_size, stride, heads
        self.query = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.key = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.value = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        half = out_channels // 2
        self.rel_row = nn.Parameter(torch.randn(kernel_size, half))  # r for offset a - i
        self.rel_col = nn.Parameter(torch.randn(kernel_size, out_channels - half))  # b - j

    def offsets(self) -> Tensor:
        """``r`` as ``Tensor[k*k, C_out]``, row-major over ``(a - i, b - j)`` from ``-(k//2)``."""
        k = self.kernel_size
        r_row = self.rel_row[:, None, :].expand(k, k, -1)
        r_col = self.rel_col[None, :, :].expand(k, k, -1)
        return torch.cat([r_row, r_col], dim=-1).reshape(k * k, -1)

    def attention(self, x: Tensor) -> Tensor:
        """Weights ``Tensor[B, Nh, k*k, H W]``: ``[b, h, p, ij]`` weighs neighbour ``p`` of pixel
        ``ij`` (row-major offsets as :meth:`offsets`); 0 outside the image."""
        return self._attend(x)[0]

    def _attend(self, x: Tensor) -> tuple[Tensor, Tensor]:
        B, _, H, W = x.shape
        Nh, k, pad = self.heads, self.kernel_size, self.kernel_size // 2
        q = self.query(x).reshape(B, Nh, -1, 1, H * W)  # (B, Nh, d, 1, HW)
        d = q.shape[2]
        keys = F.unfold(self.key(x), k, padding=pad).view(B, Nh, d, k * k, H * W)
        values = F.unfold(self.value(x), k, padding=pad).view(B, Nh, d, k * k, H * W)
        r = self.offsets().to(q.dtype).T.reshape(1, Nh, d, k * k, 1)
        logits = (q * (keys + r)).sum(2)  # (B, Nh, k*k, HW)
        inside = F.unfold(x.new_ones(1, 1, H, W), k, padding=pad).view(1, 1, k * k, H * W) > 0
        a = torch.softmax(logits.masked_fill(~inside, float("-inf")), dim=2)
        return a, values

    def forward(self, x: Tensor) -> Tensor:
        B, _, H, W = x.shape
        a, values = self._attend(x)
        y = (a[:, :, None] * values).sum(3).reshape(B, -1, H, W)  # (B, C_out, H, W)
        return F.avg_pool2d(y, self.stride) if self.stride > 1 else y
