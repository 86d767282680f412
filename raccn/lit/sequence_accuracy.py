"""Scores of label sequences read by DRAM (Ba et al., ICLR 2015): whole-sequence, per-length,
digit and length accuracy, accumulated over an epoch.

Sequences are ``S`` slots of labels in ``0..eos-1`` followed by ``eos`` (the layout of
``raccn.losses.dram_loss``); a sequence's length ``L`` is the number of labels before its first
``eos`` (``S`` if there is none), for the targets and for the argmax predictions alike.

- ``seq_acc``: the fraction of sequences read wholly right: every label and the end (the
  predicted ``eos`` at slot ``L`` when ``L < S``); what the loss's whole-sequence reward scores
  and the paper's "sequence error" is 1 minus;
- ``seq_acc_len{n}``: ``seq_acc`` among the sequences of true length ``n``;
- ``digit_acc``: the fraction of true labels (the ``L`` slots before the end; the end itself not
  counted), over all sequences pooled, predicted right in their slot;
- ``len_acc``: the fraction of sequences whose predicted length equals the true one.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from raccn.losses.dram_loss import sequence_mask

__all__ = ["SequenceAccuracy", "label_strings", "sequence_lengths", "sequence_probability", "sequence_right"]


def sequence_lengths(labels: Tensor, eos: int) -> Tensor:
    """Tensor[B, S] labels -> Tensor[B] int64, the labels before the first ``eos``."""
    return (labels != eos).long().cumprod(dim=1).sum(dim=1)


def sequence_right(pred: Tensor, targets: Tensor, eos: int) -> Tensor:
    """Tensor[B] bool: ``pred`` (Tensor[B, S]) reads ``targets`` (Tensor[B, S]) wholly right,
    every slot up to and including the first ``eos`` of the targets."""
    return ((pred == targets) | ~sequence_mask(targets, eos)).all(dim=1)


def sequence_probability(probs: Tensor, eos: int) -> tuple[Tensor, Tensor]:
    """The argmax sequence and its probability.

    Args:
        probs (Tensor[B, S, K]): label probabilities per slot (K = eos + 1).
        eos: the end label.

    Returns:
        (Tensor[B, S] int64 labels, Tensor[B] probability of the sequence read): the product
        of the chosen labels' probabilities over the slots up to and including the first
        predicted ``eos`` (the slots that decide the number read; the slots are treated as
        independent).
    """
    p, pred = probs.max(dim=-1)  # (B, S)
    counted = sequence_mask(pred, eos)
    return pred, torch.where(counted, p, torch.ones_like(p)).prod(dim=1)


def label_strings(labels: Tensor, eos: int) -> list[str]:
    """Tensor[B, S] labels -> the sequences as text, each up to its first ``eos``: digits are
    written as they are (``"1234"``); labels of 10 and more in brackets (``"1[12]"``)."""
    lengths = sequence_lengths(labels, eos).tolist()
    return ["".join(str(k) if k < 10 else f"[{k}]" for k in row[:n])
            for row, n in zip(labels.tolist(), lengths)]


class SequenceAccuracy(Metric):
    """The module docstring's scores, accumulated over batches (sums, so they add up over
    processes).

    Args:
        max_length: ``S``, slots per sequence.
        eos: the end label.
    """

    full_state_update = False

    def __init__(self, max_length: int, eos: int) -> None:
        super().__init__()
        self.max_length, self.eos = max_length, eos
        zeros = torch.zeros(max_length, dtype=torch.long)
        self.add_state("right_by_length", default=zeros.clone(), dist_reduce_fx="sum")  # (S,)
        self.add_state("count_by_length", default=zeros.clone(), dist_reduce_fx="sum")  # (S,)
        self.add_state("digits_right", default=torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("digits", default=torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("length_right", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, pred: Tensor, targets: Tensor) -> None:
        """pred, targets (Tensor[B, S] int64): argmax labels and true labels, ``eos``-padded."""
        if pred.shape != targets.shape or pred.shape[1] != self.max_length:
            raise ValueError(f"pred and targets must both be Tensor[B, {self.max_length}], got "
                             f"{tuple(pred.shape)} and {tuple(targets.shape)}")
        L = sequence_lengths(targets, self.eos)  # (B,)
        right = sequence_right(pred, targets, self.eos)
        slot = torch.arange(self.max_length, device=pred.device)
        is_label = slot < L[:, None]  # (B, S)
        index = (L - 1).clamp(min=0)  # an empty target (L = 0) counts as length 1
        self.count_by_length += torch.bincount(index, minlength=self.max_length)[: self.max_length]
        self.right_by_length += torch.bincount(index, weights=right.double(),
                                               minlength=self.max_length)[: self.max_length].long()
        self.digits_right += ((pred == targets) & is_label).sum()
        self.digits += is_label.sum()
        self.length_right += (sequence_lengths(pred, self.eos) == L).sum()

    def compute(self) -> dict[str, Tensor]:
        """``seq_acc``, ``digit_acc``, ``len_acc`` (scalars) and ``seq_acc_by_length``,
        ``count_by_length`` (Tensor[S], length n at index n - 1; NaN where no sequence has
        that length)."""
        n = self.count_by_length.sum().clamp(min=1)
        by_length = self.right_by_length.double() / self.count_by_length.double()
        return {
            "seq_acc": self.right_by_length.sum().double() / n,
            "digit_acc": self.digits_right.double() / self.digits.clamp(min=1),
            "len_acc": self.length_right.double() / n,
            "seq_acc_by_length": by_length,
            "count_by_length": self.count_by_length,
        }
