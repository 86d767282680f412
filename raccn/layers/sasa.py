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
keys would otherwise take weight). Neighbour ``(a - i, b - j)`` of every pixel is one slice of the
zero-padded ``k`` (or ``v``) map, a view, so the neighbourhoods are never copied (``F.unfold``
would write ``k^2`` copies of ``k`` and ``v``, ``d`` times the size of the attention weights, and
read them again in forward and backward). Per offset, ``q_ijᵀ k_ab`` is a product summed over
each head's ``d`` channels and ``y`` adds the weighted shifted values; ``q_ijᵀ r`` sums ``q``'s
products with the ``k`` row and the ``k`` column embeddings. Inside, the pixel axes lead and the
batch trails, ``(H, W, Nh, d, B)``: each slice is whole rows of ``W C_out B`` contiguous numbers.
Written here: timm's ``HaloAttn`` attends within blocks plus a halo (Vaswani et al. 2021), not
per-pixel windows.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

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
        B, _, H, W = x.shape
        return self._attend(x).permute(4, 3, 0, 1, 2).reshape(B, self.heads, -1, H * W)

    def _attend(self, x: Tensor) -> Tensor:
        """Weights ``Tensor[k*k, H, W, Nh, B]``, ``[p, i, j, h, b]`` as :meth:`attention`'s."""
        _, _, H, W = x.shape
        Nh, k, pad = self.heads, self.kernel_size, self.kernel_size // 2
        q = heads_last(self.query(x), Nh)  # (H, W, Nh, d, B)
        d = q.shape[3]
        keys = neighbours(heads_last(F.pad(self.key(x), (pad,) * 4), Nh), k, H, W)
        logits = torch.stack([(q * k_p).sum(3) for k_p in keys])  # (k*k, H, W, Nh, B): q_ijᵀ k_ab
        # q_ijᵀ r_{a-i, b-j} = q_ijᵀ [r_row; 0]_{a-i} + q_ijᵀ [0; r_col]_{b-j}: 2k products, not k^2
        C, half = Nh * d, self.rel_row.shape[1]
        r_row = F.pad(self.rel_row, (0, C - half)).view(k, Nh, d).to(q.dtype)
        r_col = F.pad(self.rel_col, (half, 0)).view(k, Nh, d).to(q.dtype)
        rel = (torch.einsum("ijhcn,uhc->uijhn", q, r_row)[:, None]
               + torch.einsum("ijhcn,vhc->vijhn", q, r_col)[None])  # (k, k, H, W, Nh, B)
        logits += rel.reshape(logits.shape)
        inside = torch.stack([*neighbours(F.pad(x.new_ones(H, W), (pad,) * 4), k, H, W)])
        logits += inside.log().to(logits.dtype)[..., None, None]  # 0 inside the image, -inf outside
        return torch.softmax(logits, dim=0)

    def forward(self, x: Tensor) -> Tensor:
        B, _, H, W = x.shape
        k, pad = self.kernel_size, self.kernel_size // 2
        a = self._attend(x)  # (k*k, H, W, Nh, B)
        values = neighbours(heads_last(F.pad(self.value(x), (pad,) * 4), self.heads), k, H, W)
        terms = (a_p[..., None, :] * v_p for a_p, v_p in zip(a.unbind(0), values))
        y = functools.reduce(torch.add, terms)  # (H, W, Nh, d, B): sum over ab of a_ab v_ab
        # y as (B, C_out, H, W): as_strided, not permute, so that backward copies the incoming
        # gradient into y's layout once, rather than every per-offset product reading it strided
        C = y.shape[2] * y.shape[3]
        y = y.contiguous().as_strided((B, C, H, W), (1, B, W * C * B, C * B)).contiguous()
        return F.avg_pool2d(y, self.stride) if self.stride > 1 else y


def heads_last(t: Tensor, heads: int) -> Tensor:
    """``Tensor[B, C, h, w]`` -> contiguous ``Tensor[h, w, heads, C / heads, B]``."""
    B, _, h, w = t.shape
    return t.reshape(B, heads, -1, h, w).permute(3, 4, 1, 2, 0).contiguous()


def neighbours(t: Tensor, k: int, H: int, W: int) -> Iterator[Tensor]:
    """The ``k*k`` views ``t[a : a + H, b : b + W]`` of a padded ``Tensor[H + k - 1, W + k - 1,
    ...]``, row-major over ``(a, b)``: view ``p`` holds neighbour ``p`` of every pixel. Made one
    at a time, each just before its use, so that backward adds each view's gradient into ``t``'s
    right after computing it (rather than holding all ``k*k``, ``k*k`` times the size of ``t``)."""
    for a in range(k):
        row = t[a:a + H]
        for b in range(k):
            yield row[:, b:b + W]
