"""Factories that copies of a Lightning module share instead of copying.

The optimiser and scheduler callables LightningCLI injects are ``functools.partial`` objects whose
arguments reach jsonargparse's instantiator, the CLI and through it the trainer; a deep copy of the
module (``EMAWeightAveraging`` copies it to hold the average) copied all of that, and under DDP it
fails on the launcher's process handles (``cannot pickle '_thread.lock'``). A factory holds no
state of the run, so a copy may share it: :class:`SharedOnCopy` wraps one and returns itself from
``__deepcopy__``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["SharedOnCopy", "shared_on_copy"]


class SharedOnCopy:
    """Calls ``fn``; ``copy.deepcopy`` returns the same wrapper (the factory is shared)."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __deepcopy__(self, memo: dict) -> SharedOnCopy:
        return self

    def __repr__(self) -> str:
        return f"SharedOnCopy({self.fn!r})"


def shared_on_copy(fn: Callable[..., Any] | None) -> SharedOnCopy | None:
    """``fn`` wrapped in :class:`SharedOnCopy` (``None`` stays ``None``)."""
    return None if fn is None or isinstance(fn, SharedOnCopy) else SharedOnCopy(fn) if callable(fn) else fn
