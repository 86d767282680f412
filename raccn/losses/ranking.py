"""Pairwise inter-scale ranking loss of RA-CNN.

Fu, Zheng, Mei, "Look Closer to See Better", CVPR 2017, §3.3, Eq. (8):

    L_rank = mean_b Σ_{s=1}^{S-1} max(0, p_t^(s) - p_t^(s+1) + margin)

where ``p_t^(s)`` is the softmax probability of the true class at scale ``s`` (coarse to fine).
It pushes each finer scale to be more confident than the coarser one by at least ``margin``.
Computed on probabilities, not raw logits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["check_margin", "check_ranking_args", "ranking_loss"]


def check_ranking_args(logits: Sequence[Tensor], target: Tensor, margin: float) -> None:
    """Raise ``ValueError`` (with the fix) for invalid :func:`ranking_loss` arguments."""
    if isinstance(logits, Tensor) or not isinstance(logits, Sequence):
        raise ValueError(  # noqa: TRY004 (all input checks raise ValueError, see STYLE.md)
            "logits must be a list of Tensor[B, K], one per scale from coarse to fine "
            "(for a stacked Tensor[S, B, K] pass list(logits.unbind(0)))"
        )
    if len(logits) < 2:
        raise ValueError(
            f"ranking_loss needs >= 2 scales (pairs of adjacent scales), got {len(logits)}"
        )
    shape = tuple(logits[0].shape)
    if len(shape) != 2 or any(tuple(l.shape) != shape for l in logits):
        raise ValueError(
            f"every scale's logits must be Tensor[B, K] of the same shape, got "
            f"{[tuple(l.shape) for l in logits]}"
        )
    if target.shape != (shape[0],) or target.is_floating_point() or target.is_complex():
        raise ValueError(
            f"target must be Tensor[B] of integer class indices with B={shape[0]}, got "
            f"{target.dtype} of shape {tuple(target.shape)}"
        )
    check_margin(margin)


def check_margin(margin: float) -> None:
    """Raise ``ValueError`` unless the ranking margin is >= 0 and finite."""
    if not (margin >= 0 and math.isfinite(margin)):
        raise ValueError(f"margin must be >= 0 and finite (the paper uses 0.05), got {margin!r}")


def ranking_loss(logits: Sequence[Tensor], target: Tensor, margin: float = 0.05) -> Tensor:
    """Inter-scale pairwise ranking loss.

    Args:
        logits (Sequence[Tensor[B, K]]): one tensor of class scores per scale, coarse to fine
            (``S >= 2`` scales).
        target (Tensor[B]): true class indices in ``[0, K)`` (integer dtype).
        margin (float): required gap between the true-class probabilities of adjacent scales,
            >= 0.

    Returns:
        Tensor (scalar): ``mean_b Σ_s max(0, p_t^(s) - p_t^(s+1) + margin)``. Its gradient
        lowers the coarser scale's true-class probability and raises the finer one's.
    """
    check_ranking_args(logits, target, margin)
    index = target.long()[:, None]  # (B, 1)
    p_t = torch.cat([F.softmax(l, dim=1).gather(1, index) for l in logits], dim=1)  # (B, S)
    return F.relu(p_t[:, :-1] - p_t[:, 1:] + margin).sum(dim=1).mean()
