"""Label sequences for DRAM (Ba et al., ICLR 2015): the targets every multi-digit data module
yields, in the layout ``raccn.losses.dram_loss`` scores.

A number of ``L`` digits becomes ``S = max_length`` slots: its digits (0..9) from left to right
in slots ``0..L-1``, then the end-of-sequence class ``EOS = 10`` (= ``num_classes``, the
model's last logit) in slots ``L..S-1``; a number of ``S`` digits has no EOS. Batches are
``(images, targets, lengths)``: Tensor[B, C, H, W] float32 in [0, 1], Tensor[B, S] int64 and
Tensor[B] int64 (``L``, also derivable from the first EOS, carried for per-length scores).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from raccn.datamodules.base import SplitDataModule

NUM_DIGITS = 10
EOS = NUM_DIGITS  # the label after the last digit: index num_classes of the model's K = 11


def pad_sequences(digits: Tensor, lengths: Tensor, max_length: int) -> Tensor:
    """Targets of numbers given as digit rows.

    Args:
        digits (Tensor[B, N] int64): digit ``k`` of number ``b`` at ``[b, k]`` (0..9) for
            ``k < lengths[b]``; anything beyond is ignored. ``N <= max_length``.
        lengths (Tensor[B] int64): digits of each number, ``1..N``.
        max_length (int): ``S``, slots of the targets.

    Returns:
        Tensor[B, S] int64: the digits, then ``EOS`` in slots ``lengths[b]..S-1``.
    """
    B, N = digits.shape
    if N > max_length:
        raise ValueError(f"numbers of up to {N} digits do not fit max_length={max_length} slots.")
    slots = torch.arange(max_length, device=digits.device)  # (S,)
    padded = torch.full((B, max_length), EOS, dtype=torch.int64, device=digits.device)
    padded[:, :N] = digits
    return padded.masked_fill(slots >= lengths[:, None], EOS)


def sequence_strings(targets: Tensor) -> list[str]:
    """Numbers as text: Tensor[B, S] targets (digits, then EOS) -> ``["123", "7", ...]``, each
    read up to its first EOS (what the loss scores)."""
    out = []
    for row in targets.tolist():
        digits = row[: row.index(EOS)] if EOS in row else row
        out.append("".join(str(d) for d in digits))
    return out


class SequenceDataModule(SplitDataModule):
    """Base of the multi-digit data modules; batches ``(images, targets, lengths)`` as in the
    module docstring, ``targets`` with ``S = max_length`` slots.

    ``num_classes`` is 10 (the digits; the model adds EOS as class 10), ``max_length`` is the
    number of label slots (the model's ``max_digits``).

    Args:
        batch_size, num_workers, image_side, predict_paths: see ``SplitDataModule``.
        max_length (int): ``S``, label slots, ``>= 1``; longer numbers are left out by the
            subclass (counted) or never made.
    """

    def __init__(
        self,
        batch_size: int,
        num_workers: int,
        image_side: int,
        max_length: int,
        predict_paths: Sequence[str] | None = None,
    ) -> None:
        if not isinstance(max_length, int) or max_length < 1:
            raise ValueError(
                f"max_length={max_length!r} must be an int >= 1: the label slots of the model "
                "(SVHN: 5, as Goodfellow et al. and Ba et al.)."
            )
        super().__init__(batch_size, num_workers, image_side, predict_paths)
        self._max_length = max_length

    @property
    def num_classes(self) -> int:
        """Digit classes 0..9 (EOS is the model's extra class 10)."""
        return NUM_DIGITS

    @property
    def max_length(self) -> int:
        """``S``: label slots of the targets."""
        return self._max_length

    @property
    def eos_index(self) -> int:
        """The label that ends a number in the targets (10)."""
        return EOS
