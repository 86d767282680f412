"""A resumable checkpoint when training is stopped by SIGTERM (pre-emption, ``kill``) or Ctrl-C.

Lightning's own parts do the work: on SIGTERM its signal handler lets the current training step
finish and then raises ``SIGTERMException``, and every exception leaving ``fit`` reaches the
callbacks' ``on_exception``, where this callback writes the checkpoint, as Lightning's
``OnExceptionCheckpoint`` does. It is not one: with an ``OnExceptionCheckpoint`` among the
callbacks, Lightning turns every ``fit`` without ``ckpt_path`` into ``ckpt_path="last"``, which
resumes, unasked, from whatever ``last.ckpt`` a reused checkpoint folder holds. Ctrl-C (SIGINT) is made to behave alike: the first one asks training to stop after
the current step (a ``KeyboardInterrupt`` raised at ``on_train_batch_end``, which Lightning
handles as an interrupt; under DDP every rank stops at the step where any rank saw it, as
Lightning does for SIGTERM); a second one stops at once, without a checkpoint. Stopping only at
step boundaries is what makes the checkpoint consistent: a ``KeyboardInterrupt`` in the middle
of an optimiser step would save weights half updated.

Unlike ``OnExceptionCheckpoint``, nothing is written for other exceptions (a bug, a non-finite
loss stop), whose state at the moment of failure is no state to resume from.

The file, ``interrupted.ckpt``, goes beside ``last.ckpt`` (the first ``ModelCheckpoint``'s
folder; ``dirpath`` to choose another) and holds everything a resume needs (weights, optimisers,
schedulers, loops, callbacks, the random streams of ``ResumeState``):

    python train.py fit --config <the same config> --ckpt_path <run>/checkpoints/interrupted.ckpt
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

import pytorch_lightning as pl
from lightning_fabric.utilities.rank_zero import rank_zero_info
from pytorch_lightning.callbacks import Checkpoint, ModelCheckpoint
from pytorch_lightning.utilities.exceptions import SIGTERMException


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C, raised at the end of a training step (``InterruptCheckpoint``)."""


class InterruptCheckpoint(Checkpoint):
    """Writes ``<dirpath>/<filename>.ckpt`` when training stops on SIGTERM or Ctrl-C (module
    docstring). The CLI adds it to every run (``--interrupt_checkpoint.dirpath``, ``.filename``).

    Args:
        dirpath: folder of the checkpoint; None: the first ``ModelCheckpoint``'s folder (where
            ``last.ckpt`` is), else ``trainer.default_root_dir``.
        filename: its name without ``.ckpt``.
    """

    FILE_EXTENSION = ".ckpt"

    def __init__(self, dirpath: str | None = None, filename: str = "interrupted") -> None:
        if not filename:
            raise ValueError("interrupt_checkpoint.filename must not be empty (e.g. 'interrupted')")
        self.dirpath, self.filename = dirpath, filename
        self._trainer: pl.Trainer | None = None
        self._stop_requested = False
        self._previous_sigint: Any = None

    @property
    def ckpt_path(self) -> str | None:
        """Where the checkpoint goes (None before the trainer is set up and without ``dirpath``)."""
        dirpath = self.dirpath
        if dirpath is None and self._trainer is not None:
            folders = [cb.dirpath for cb in self._trainer.checkpoint_callbacks
                       if isinstance(cb, ModelCheckpoint) and cb.dirpath]
            dirpath = folders[0] if folders else self._trainer.default_root_dir
        return None if dirpath is None else os.path.join(dirpath, self.filename + self.FILE_EXTENSION)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer = trainer

    # -- Ctrl-C: stop after the current step ------------------------------------------------
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stop_requested = False
        if threading.current_thread() is threading.main_thread():  # signal handlers live there
            self._previous_sigint = signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        self._stop_requested = True
        signal.signal(signal.SIGINT, self._second_sigint())  # a second Ctrl-C stops at once
        print("\nCtrl-C: training stops after the current step and saves a resumable checkpoint; "
              "press Ctrl-C again to stop at once without one.", file=sys.stderr, flush=True)

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        stop = self._stop_requested
        if trainer.world_size > 1:  # every rank stops at the same step if any was interrupted
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if stop:
            self._stop_requested = False
            raise TrainingInterrupted

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore_sigint()

    def _second_sigint(self) -> Any:
        """The handler of a second Ctrl-C: the one before training, or Python's
        ``KeyboardInterrupt`` where that was none (SIGINT ignored, as in a shell's background job,
        or left to the system), so that a second SIGINT always stops at once."""
        previous = self._previous_sigint
        return previous if callable(previous) else signal.default_int_handler

    def _restore_sigint(self) -> None:
        if self._previous_sigint is not None and threading.current_thread() is threading.main_thread():
            if signal.getsignal(signal.SIGINT) in (self._on_sigint, self._second_sigint()):
                signal.signal(signal.SIGINT, self._previous_sigint)
            self._previous_sigint = None

    # -- the checkpoint -----------------------------------------------------------------------
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore_sigint()
        if trainer.state.fn != "fit" or not isinstance(exception, (SIGTERMException, TrainingInterrupted)):
            return
        path = self.ckpt_path
        trainer.save_checkpoint(path)
        why = "SIGTERM" if isinstance(exception, SIGTERMException) else "Ctrl-C"
        rank_zero_info(
            f"{why}: training stopped after global step {trainer.global_step} (epoch {trainer.current_epoch}); "
            f"saved {path}. Resume with: python train.py fit <the same options> --ckpt_path {path}"
        )

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """After a run that ended normally: remove this run's own stale ``interrupted.ckpt``
        (Lightning's behaviour), never the one it resumed from."""
        path = self.ckpt_path
        if path is not None and os.path.abspath(path) != os.path.abspath(str(trainer.ckpt_path or "")):
            trainer.strategy.remove_checkpoint(path)
