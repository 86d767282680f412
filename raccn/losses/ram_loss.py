"""Hybrid loss of the Recurrent Attention Model (Mnih et al. 2014, §3.2).

    L = CE(logits_T, y)                                   (classification, supervised)
      - w · mean_b Σ_t log π(l_t) · (R - b_t).detach()    (REINFORCE with a baseline)
      + mean_{b,t} (b_t - R)²                             (baseline regression)

with the reward R = 1 if the final prediction is right, else 0.
"""

from __future__ import annotations

from typing import NamedTuple

import torch.nn.functional as F
from torch import Tensor

from raccn.losses.reinforce import reinforce_terms


class RAMLoss(NamedTuple):
    loss: Tensor  #: scalar, the total to back-propagate
    ce: Tensor  #: scalar cross-entropy of the final logits
    reinforce: Tensor  #: scalar REINFORCE surrogate (before the weight)
    baseline: Tensor  #: scalar baseline MSE
    reward: Tensor  #: Tensor[B] reward R in {0, 1}


def ram_loss(
    logits: Tensor, target: Tensor, log_pi: Tensor, baselines: Tensor, reinforce_weight: float = 1.0
) -> RAMLoss:
    """
    Args:
        logits (Tensor[B, K]): final-step logits.
        target (Tensor[B]): class indices in [0, K).
        log_pi (Tensor[B, T-1]): log-probabilities of the sampled locations.
        baselines (Tensor[B, T-1]): baseline predictions for those steps.
        reinforce_weight: weight w of the REINFORCE term.

    Returns:
        RAMLoss with the total and its parts.
    """
    ce = F.cross_entropy(logits, target)
    reward = (logits.detach().argmax(dim=1) == target).to(logits.dtype)  # (B,)
    reinforce, baseline = reinforce_terms(log_pi, baselines, reward)
    return RAMLoss(ce + reinforce_weight * reinforce + baseline, ce, reinforce, baseline, reward)
