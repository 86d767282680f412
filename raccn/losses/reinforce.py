"""REINFORCE with a learned baseline, shared by the RAM and DRAM hybrid losses.

    reinforce = - mean_b Σ_t log π(l_t) · (R - b_t).detach()
    baseline  = mean_{b,t} (b_t - R)²
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def reinforce_terms(log_pi: Tensor, baselines: Tensor, reward: Tensor) -> tuple[Tensor, Tensor]:
    """The policy-gradient surrogate and the baseline regression loss.

    Args:
        log_pi (Tensor[B, T]): log-probabilities of the sampled actions (T may be 0).
        baselines (Tensor[B, T]): baseline predictions b_t for those actions.
        reward (Tensor[B]): the episode's reward R (no gradient needed).

    Returns:
        (Tensor, Tensor): scalars ``reinforce`` (before any weight) and ``baseline`` (MSE; 0 when
        T = 0).
    """
    advantage = (reward[:, None] - baselines).detach()  # (B, T)
    reinforce = -(log_pi * advantage).sum(dim=1).mean()
    if not baselines.numel():
        return reinforce, reinforce.new_zeros(())
    return reinforce, F.mse_loss(baselines, reward[:, None].expand_as(baselines))
