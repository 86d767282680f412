"""Hybrid loss of DRAM (Ba, Mnih, Kavukcuoglu, ICLR 2015, §3-4) for label sequences.

Targets are S label slots padded with EOS (index K - 1) after the last label; slot s counts
(m_s = 1) if no EOS comes before it, so the first EOS is scored and anything after it is not.

    L = mean_b Σ_s m_s · CE(logits_s, y_s)                 (classification, supervised)
      - w · mean_b Σ_t log π(l_t) · (R - b_t).detach()     (REINFORCE with a baseline)
      + mean_{b,t} (b_t - R)²                              (baseline regression)

with one of two rewards (``reward``), both in [0, 1] and 1 exactly when every counted slot is
predicted right (argmax):

- ``"sequence"`` (default): R = 1 if the whole sequence is right, else 0;
- ``"per_label"``: R = (counted slots right before the first wrong one) / (counted slots), the
  fraction of the sequence read right from its start: partial credit for each label right up to
  the first error, one reward per sequence (not per step).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch.nn.functional as F
from torch import Tensor

from raccn.losses.reinforce import reinforce_terms
from raccn.models.dram import DRAMOutput


class DRAMLoss(NamedTuple):
    loss: Tensor  #: scalar, the total to back-propagate
    ce: Tensor  #: scalar cross-entropy, summed over the counted slots, mean over the batch
    reinforce: Tensor  #: scalar REINFORCE surrogate (before the weight)
    baseline: Tensor  #: scalar baseline MSE
    reward: Tensor  #: Tensor[B] reward R in [0, 1] (module docstring); 1: the whole sequence is right


def sequence_mask(targets: Tensor, eos: int) -> Tensor:
    """Slots up to and including the first EOS.

    Args:
        targets (Tensor[B, S]): labels, EOS-padded.
        eos: the EOS index.

    Returns:
        Tensor[B, S] bool: True where no EOS comes strictly before the slot.
    """
    is_eos = (targets == eos).long()
    return (is_eos.cumsum(dim=1) - is_eos) == 0


REWARDS = ("sequence", "per_label")


def sequence_reward(right: Tensor, mask: Tensor, reward: Literal["sequence", "per_label"] = "sequence"
                    ) -> Tensor:
    """The reward of each sequence from which of its slots are right.

    Args:
        right (Tensor[B, S] bool): slot predicted right (True for slots that do not count).
        mask (Tensor[B, S] bool): slots that count (``sequence_mask``).
        reward: ``"sequence"`` or ``"per_label"`` (module docstring).

    Returns:
        Tensor[B] float32 in [0, 1].
    """
    if reward not in REWARDS:
        raise ValueError(f"reward must be one of {REWARDS}, got {reward!r}")
    prefix = right.long().cumprod(dim=1)  # (B, S): 1 while every slot so far is right
    if reward == "sequence":
        return prefix[:, -1].float()
    return (prefix * mask).sum(dim=1).float() / mask.sum(dim=1).clamp(min=1).float()


def dram_loss(output: DRAMOutput, targets: Tensor, reinforce_weight: float = 1.0,
              reward: Literal["sequence", "per_label"] = "sequence") -> DRAMLoss:
    """
    Args:
        output: the model's DRAMOutput; uses ``logits`` (Tensor[B, S, K]), ``log_pi`` and
            ``baselines`` (Tensor[B, T]).
        targets (Tensor[B, S] int64): labels in [0, K - 1), then EOS = K - 1 after the last
            one (a sequence of S labels has no EOS). Slots after the first EOS are ignored and
            may hold any value (e.g. EOS or -100).
        reinforce_weight: weight w of the REINFORCE term.
        reward: ``"sequence"`` (whole sequence right) or ``"per_label"`` (fraction right up to
            the first error), see the module docstring.

    Returns:
        DRAMLoss with the total and its parts.
    """
    logits, log_pi, baselines = output.logits, output.log_pi, output.baselines
    B, S, K = logits.shape
    if targets.shape != (B, S):
        raise ValueError(
            f"targets must be Tensor[B, S] = {(B, S)} (one label per slot of the logits, padded "
            f"with EOS = {K - 1}), got {tuple(targets.shape)}"
        )
    mask = sequence_mask(targets, K - 1)  # (B, S)
    y = targets.masked_fill(~mask, 0)  # ignored slots get a valid dummy label
    ce_slots = F.cross_entropy(logits.reshape(B * S, K), y.reshape(B * S), reduction="none")
    ce = (ce_slots.view(B, S) * mask).sum(dim=1).mean()
    right = (logits.detach().argmax(dim=-1) == y) | ~mask  # (B, S)
    R = sequence_reward(right, mask, reward).to(logits.dtype)  # (B,)
    reinforce, baseline = reinforce_terms(log_pi, baselines, R)
    return DRAMLoss(ce + reinforce_weight * reinforce + baseline, ce, reinforce, baseline, R)
