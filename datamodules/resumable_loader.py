"""The training DataLoader, with its own random stream so that a resumed run reads the same batches.

A training epoch draws from torch's global CPU generator twice over: the data (the shuffle, the
canvases drawn on the fly, random crops) and the model (RAM's sampled glimpse locations,
RA-CNN's jittered boxes). Interleaved in one stream, the data's draws of the rest of an epoch
depend on every model draw before them, so no saved state could replay them after a resume.
:class:`ResumableDataLoader` gives the data its own stream: around building its iterator and
around every fetch it swaps the global CPU generator's state for the loader's and back
(two ``torch.set_rng_state`` calls, microseconds). The data sets and samplers keep drawing
from the global generator as before, unchanged.

Its position is ``(state at the start of the epoch, batches fetched)``: the callback
:class:`raccn.callbacks.ResumeState` saves it in the checkpoint and, on resuming, tells the loader
to start from it (:meth:`ResumableDataLoader.resume_from`); the loader then rebuilds the epoch's
shuffle from that state and fetches again the batches already trained on, which draws the same
canvases, and yields the next ones. Iterators start lazily (at their first ``next``), so one
that Lightning makes and drops before training draws nothing.

Exact with ``num_workers=0``. With worker processes the shuffle and the workers' seeds come from
the stream too, but persistent workers keep their generators from one epoch to the next, which a
resumed run's new workers cannot continue: the batches after a resume are then reproducible
but not those of the uninterrupted run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch
from torch import Tensor
from torch.utils.data import DataLoader

T = TypeVar("T")


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` (same arguments, so Lightning can re-create it, e.g. with a distributed
    sampler) whose iterations draw from their own stream; see the module docstring.

    The stream is seeded by one draw from the global generator at the first iteration of a
    fresh run (so ``seed_everything`` fixes it), or set by :meth:`resume_from`.
    """

    _rng: Tensor | None = None  #: the stream's state between fetches (ByteTensor of torch.get_rng_state)
    _epoch_start: Tensor | None = None  #: the stream's state when the current iteration began
    _fetched: int = 0  #: batches fetched in the current iteration
    _resume: tuple[Tensor, int] | None = None  #: set by resume_from, used by the next iteration

    def position(self) -> dict[str, Any]:
        """Where the current iteration is: ``{"epoch_start": state, "fetched": n}`` (the state is
        None before the first iteration), and ``"rng"``, the stream's current state."""
        return {"epoch_start": self._epoch_start, "fetched": self._fetched, "rng": self._rng}

    def resume_from(self, rng: Tensor, skip: int = 0) -> None:
        """Start the next iteration from stream state ``rng`` and fetch (and drop) its first
        ``skip`` batches: with ``rng`` an epoch's start and ``skip`` the batches trained on, the
        iteration continues that epoch exactly; with the stream's state after an epoch and
        ``skip=0``, it is the next epoch."""
        self._resume = (rng.clone(), int(skip))

    def __iter__(self) -> Iterator[Any]:
        return self._iterate()

    def _iterate(self) -> Iterator[Any]:
        resume, self._resume = self._resume, None
        if resume is not None:
            self._rng, skip = resume
        else:
            skip = 0
            if self._rng is None:
                seed = int(torch.randint(2**62, ()))  # one draw of the global stream
                self._rng = torch.Generator().manual_seed(seed).get_state()
        self._epoch_start, self._fetched = self._rng.clone(), 0
        inner = self._in_stream(super().__iter__)  # the shuffle and the workers' seeds
        while True:
            try:
                batch = self._in_stream(lambda: next(inner))
            except StopIteration:
                return
            self._fetched += 1
            if self._fetched > skip:
                yield batch

    def _in_stream(self, fn: Callable[[], T]) -> T:
        """``fn()`` with the global CPU generator in the loader's stream state."""
        outside = torch.get_rng_state()
        torch.set_rng_state(self._rng)
        try:
            return fn()
        finally:
            self._rng = torch.get_rng_state()
            torch.set_rng_state(outside)
