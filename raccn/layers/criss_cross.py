"""Recurrent criss-cross attention of CCNet.

Huang, Wang, Huang, Huang, Wei, Liu, "CCNet: Criss-Cross Attention for Semantic Segmentation",
ICCV 2019, §3.2-3.3. 1×1 convolutions give ``Q, K ∈ R^{C/8 x H x W}`` and ``V ∈ R^{C x H x W}``;
position ``u`` attends only to ``Ω_u``, the ``H + W - 1`` positions in its row and its column
(itself counted once):

    A_{i,u} = softmax_{i ∈ Ω_u}(Q_u · K_i),   H'_u = γ sum_{i ∈ Ω_u} A_{i,u} V_i + H_u   (Eq. 1-2),

``γ`` a learnt scalar starting at 0 (the identity). The module is applied ``R`` times with
shared weights (the "recurrent" criss-cross attention, §3.3; R = 2 lets every position reach
every other). Cost ``O((H + W) H W)`` instead of the non-local block's ``O((H W)^2)``.

Placement (paper Fig. 2): after the last stage of the trunk (the paper wraps it in 3×3 conv
layers that reduce the channels for segmentation; as a plug-in block it keeps ``C``).

Written here: timm has no criss-cross block.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["CrissCrossAttention"]


class CrissCrossAttention(nn.Module):
    """Criss-cross attention applied ``recurrence`` times, ``Tensor[B, C, H, W]`` in and out.

    Args:
        channels (int): C.
        reduction (int): Q and K have ``C // reduction`` channels (the paper's 8).
        recurrence (int): R, passes through the shared module (the paper's 2).
    """

    def __init__(self, channels: int, reduction: int = 8, recurrence: int = 2) -> None:
        super().__init__()
        if channels < 1 or reduction < 1 or channels < reduction:
            raise ValueError(f"need channels >= reduction >= 1, got channels={channels}, "
                             f"reduction={reduction}")
        if recurrence < 1:
            raise ValueError(f"recurrence must be >= 1 (the paper's R = 2), got {recurrence}")
        self.recurrence = recurrence
        self.query = nn.Conv2d(channels, channels // reduction, 1)
        self.key = nn.Conv2d(channels, channels // reduction, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(()))

    def attention(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """One pass's weights: ``Tensor[B, H, W, H]`` over the column (``[b, h, w, g]`` is the
        weight of position ``(g, w)`` for query ``(h, w)``; 0 at ``g = h``) and
        ``Tensor[B, H, W, W]`` over the row (``[b, h, w, v]`` weighs ``(h, v)``)."""
        H = x.shape[-2]
        q, k = self.query(x), self.key(x)  # (B, C/8, H, W) each
        e_col = torch.einsum("bchw,bcgw->bhwg", q, k)  # (B, H, W, H)
        self_in_col = torch.eye(H, dtype=torch.bool, device=x.device)[:, None, :]  # (H, 1, H)
        e_col = e_col.masked_fill(self_in_col, float("-inf"))  # u itself is counted in its row
        e_row = torch.einsum("bchw,bchv->bhwv", q, k)  # (B, H, W, W)
        a = torch.softmax(torch.cat([e_col, e_row], dim=-1), dim=-1)  # (B, H, W, H + W)
        return a.split([H, x.shape[-1]], dim=-1)

    def attend(self, x: Tensor) -> Tensor:
        """One pass, Eq. (2)."""
        a_col, a_row = self.attention(x)
        v = self.value(x)  # (B, C, H, W)
        out = torch.einsum("bhwg,bcgw->bchw", a_col, v) + torch.einsum("bhwv,bchv->bchw", a_row, v)
        return self.gamma * out + x

    def forward(self, x: Tensor) -> Tensor:
        for _ in range(self.recurrence):
            x = self.attend(x)
        return x
