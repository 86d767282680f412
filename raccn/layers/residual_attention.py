"""Attention module of the residual attention network.

Wang, Jiang, Qian, Yang, Li, Zhang, Wang, Tang, "Residual Attention Network for Image
Classification", CVPR 2017, §3. A trunk branch ``T`` and a soft mask branch ``M`` (bottom-up
top-down, sigmoid output of the same shape as ``T``: mixed channel and spatial attention) are
combined by attention residual learning:

    H(x) = (1 + M(x)) · T(x)                                               (Eq. 3),

so a mask near 0 keeps the trunk's features rather than erasing them. Hyper-parameters as in the
paper (§3.3, Attention-56: ``p = 1``, ``t = 2``, ``r = 1``): ``p`` residual units before the
split and after the merge, ``t`` in the trunk, ``r`` at each level of the mask branch.

Mask branch (paper Fig. 3): ``depth`` times max-pool (3×3, stride 2) then ``r`` units; on the
way up a skip unit plus the coarser level's output, ``r`` units, bilinear up-sampling back to the
input's size; then BN-ReLU-conv1×1 twice and a sigmoid. Residual units are pre-activation
bottlenecks (He et al. 2016), ``C -> C/4 -> C/4 -> C`` as in the paper. (The paper's innermost
level has ``2r`` units; here every level has ``r``.) Placement (paper Table 2): one module after
each of the first stages of the trunk, at the stage's width.

Written here: timm has no residual attention module.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["PreActBottleneck", "ResidualAttention"]


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck unit, ``Tensor[B, C, H, W]`` in and out:
    ``x + conv1x1(relu(bn(conv3x3(relu(bn(conv1x1(relu(bn(x)))))))))`` with width ``C/4``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        mid = max(1, channels // 4)
        self.body = nn.Sequential(
            nn.BatchNorm2d(channels), nn.ReLU(), nn.Conv2d(channels, mid, 1, bias=False),
            nn.BatchNorm2d(mid), nn.ReLU(), nn.Conv2d(mid, mid, 3, padding=1, bias=False),
            nn.BatchNorm2d(mid), nn.ReLU(), nn.Conv2d(mid, channels, 1, bias=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def _units(channels: int, n: int) -> nn.Sequential:
    return nn.Sequential(*[PreActBottleneck(channels) for _ in range(n)])


class _HourGlass(nn.Module):
    """One level of the mask branch: ``Tensor[B, C, H, W]`` in, same shape out."""

    def __init__(self, channels: int, depth: int, r: int) -> None:
        super().__init__()
        self.down = _units(channels, r)
        self.inner = _HourGlass(channels, depth - 1, r) if depth > 1 else None
        self.skip = PreActBottleneck(channels) if depth > 1 else None
        self.up = _units(channels, r) if depth > 1 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        y = self.down(F.max_pool2d(x, 3, 2, 1))
        if self.inner is not None:
            y = self.up(y + self.skip(y) + self.inner(y))
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


class ResidualAttention(nn.Module):
    """Attention module, ``Tensor[B, C, H, W]`` in and out: ``post((1 + M(u)) · T(u))``,
    ``u = pre(x)``.

    Args:
        channels (int): C.
        p (int): units before the split and after the merge.
        t (int): units of the trunk branch.
        r (int): units per level of the mask branch.
        depth (int): number of down-samplings in the mask branch (the paper's first stage has 3,
            its last 1; pick it so that ``H / 2^depth`` stays >= 1).
    """

    def __init__(self, channels: int, p: int = 1, t: int = 2, r: int = 1, depth: int = 2) -> None:
        super().__init__()
        if channels < 1 or min(p, t, r) < 0 or r < 1 or depth < 1:
            raise ValueError(f"need channels, r, depth >= 1 and p, t >= 0, got channels={channels},"
                             f" p={p}, t={t}, r={r}, depth={depth}")
        self.pre = _units(channels, p)
        self.trunk = _units(channels, t)
        self.mask = nn.Sequential(
            _HourGlass(channels, depth, r),
            nn.BatchNorm2d(channels), nn.ReLU(), nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels), nn.ReLU(), nn.Conv2d(channels, channels, 1, bias=False),
            nn.Sigmoid(),
        )
        self.post = _units(channels, p)

    def forward(self, x: Tensor) -> Tensor:
        u = self.pre(x)
        return self.post((1 + self.mask(u)) * self.trunk(u))


