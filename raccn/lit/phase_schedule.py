"""RA-CNN's training phases as a pure function of the global step (Fu et al. 2017, §3.4).

The paper pre-trains the APNs, then alternates classification and ranking phases until
convergence. Phase by phase:

    warmup (warmup_steps) -> pretrain (pretrain_steps) -> [cls -> reanchor -> rank] -> [cls ...] ...

``warmup`` and ``reanchor`` are additions of ours (``RACNNLitModule``'s ``extras``); a phase of
length 0 never occurs. ``warmup``, ``pretrain`` and ``reanchor`` are counted in steps; ``cls``
and ``rank`` in ``unit``:

- ``"steps"``: each cycle is ``cls_length`` classification steps, ``reanchor_steps``
  re-anchoring steps, ``rank_length`` ranking steps.
- ``"epochs"``: phases end at epoch ends. The first classification phase starts after the
  pre-training steps and ends with the ``cls_length``-th epoch counting the one in which it
  started; each ranking phase lasts ``rank_length`` whole epochs, and its first
  ``reanchor_steps`` steps re-anchor.

Because the phase is a function of the step (and, in epochs, the constant number of steps per
epoch), a run resumed from a checkpoint continues the phase it was in: nothing is stored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

PHASES = ("warmup", "pretrain", "cls", "reanchor", "rank")
UNITS = ("steps", "epochs")


class Phase(NamedTuple):
    name: str  #: one of ``PHASES``
    step: int  #: steps since the phase began (0 at its first step)


@dataclass(frozen=True)
class PhaseSchedule:
    """Args:
        cls_length, rank_length: length of each classification / ranking phase in ``unit`` (>= 1).
        unit: ``"steps"`` or ``"epochs"``.
        pretrain_steps, warmup_steps, reanchor_steps: lengths in steps (>= 0; 0: no such phase).
        steps_per_epoch: the training steps of one epoch; needed with ``unit="epochs"`` (from the
            alternation's second step on).
    """

    cls_length: int
    rank_length: int
    unit: str = "steps"
    pretrain_steps: int = 0
    warmup_steps: int = 0
    reanchor_steps: int = 0
    steps_per_epoch: int | None = None

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ValueError(f"phase_unit must be 'steps' or 'epochs', got {self.unit!r}")
        if self.cls_length < 1 or self.rank_length < 1:
            raise ValueError(
                f"cls_length and rank_length must be >= 1, got {self.cls_length}, {self.rank_length}"
            )
        for name in ("pretrain_steps", "warmup_steps", "reanchor_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")

    def at(self, step: int) -> Phase:
        """The phase of global step ``step`` (0-based: the number of steps taken before it)."""
        if step < self.warmup_steps:
            return Phase("warmup", step)
        start = self.warmup_steps + self.pretrain_steps  # the first step of the alternation
        if step < start:
            return Phase("pretrain", step - self.warmup_steps)
        C, R, A = self.cls_length, self.rank_length, self.reanchor_steps
        if self.unit == "steps":
            t = (step - start) % (C + A + R)
            if t < C:
                return Phase("cls", t)
            return Phase("reanchor", t - C) if t < C + A else Phase("rank", t - C - A)
        if step == start:  # the alternation starts with classification, whatever the epochs
            return Phase("cls", 0)
        n = self.steps_per_epoch
        if n is None or not (n >= 1 and math.isfinite(n)):
            raise ValueError(
                f"phase_unit 'epochs' needs a finite number of training steps per epoch, got {n!r} "
                "(a training set without a length?): use phase_unit 'steps'"
            )
        first = start // n  # the epoch the alternation starts in counts as its first
        cycle, epoch = divmod(step // n - first, C + R)
        cycle_start = (first + cycle * (C + R)) * n
        if epoch < C:
            return Phase("cls", step - max(cycle_start, start))
        t = step - (cycle_start + C * n)  # steps into the ranking phase
        return Phase("reanchor", t) if t < A else Phase("rank", t - A)
