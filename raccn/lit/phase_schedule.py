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
``StageSchedule`` does the same for stages that follow each other once (AG-CNN's three).
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


@dataclass(frozen=True)
class StageSchedule:
    """Stages that follow each other once, each training its own part (AG-CNN's global, local and
    fusion branches, Guan et al. 2018): stage k lasts ``lengths[k]`` ``unit``\\ s, the last stage
    lasts to the end of training; a stage of length 0 never occurs. As ``PhaseSchedule``, a pure
    function of the global step (a resumed run continues the stage it was in).

    Args:
        names: the stages, in order (at least one).
        lengths: the length of each stage but the last (one fewer than ``names``), >= 0.
        unit: ``"steps"`` or ``"epochs"`` (stages then end at epoch ends).
        steps_per_epoch: the training steps of one epoch; needed with ``unit="epochs"``.
    """

    names: tuple[str, ...]
    lengths: tuple[int, ...]
    unit: str = "steps"
    steps_per_epoch: int | None = None

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ValueError(f"stage unit must be 'steps' or 'epochs', got {self.unit!r}")
        if not self.names or len(self.lengths) != len(self.names) - 1:
            raise ValueError(f"need a length for every stage but the last ({list(self.names)[:-1]}), "
                             f"got {list(self.lengths)}")
        for name, n in zip(self.names, self.lengths):
            if not isinstance(n, int) or n < 0:
                raise ValueError(f"the {name} stage's length must be an integer >= 0, got {n!r}")

    def start(self, index: int) -> int:
        """The first global step of stage ``index`` (0-based)."""
        n = 1
        if self.unit == "epochs" and sum(self.lengths[:index]) > 0:
            n = self.steps_per_epoch
            if n is None or not (n >= 1 and math.isfinite(n)):
                raise ValueError(
                    f"stages in epochs need a finite number of training steps per epoch, got {n!r} "
                    "(a training set without a length?): count them in steps"
                )
        return sum(self.lengths[:index]) * n

    def at(self, step: int) -> Phase:
        """The stage of global step ``step`` (0-based) and the steps since it began."""
        index = len(self.names) - 1
        while index > 0 and step < self.start(index):
            index -= 1
        return Phase(self.names[index], step - self.start(index))

    def length(self, index: int, total_steps: float) -> float:
        """Stage ``index``'s length in steps in a run of ``total_steps`` (the last: the rest)."""
        end = self.start(index + 1) if index + 1 < len(self.names) else total_steps
        return max(end - self.start(index), 0)
