"""Callbacks that inject faults into a training run, for the fault tests (importable by a
``train.py`` subprocess: ``class_path: fault_helpers.<name>`` with tests/ on ``PYTHONPATH``)."""

from __future__ import annotations

import os
import signal
import time

from pytorch_lightning.callbacks import Callback


class Pause(Callback):
    """Sleeps ``seconds`` after every training step, so that a signal lands mid-run."""

    def __init__(self, seconds: float = 0.2) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, *args) -> None:
        time.sleep(self.seconds)


class PoisonBatches(Callback):
    """Fills the images of the batches of global steps ``steps`` with NaN: a non-finite loss and
    gradients (and, through batch norm, non-finite running statistics)."""

    def __init__(self, steps: list[int]) -> None:
        self.steps = set(steps)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step in self.steps:
            batch[0].fill_(float("nan"))


class PoisonGradients(Callback):
    """Sets one gradient entry to +inf after the backward of global steps ``steps`` (the loss stays
    finite)."""

    def __init__(self, steps: list[int]) -> None:
        self.steps = set(steps)

    def on_after_backward(self, trainer, pl_module) -> None:
        if trainer.global_step in self.steps:
            next(p for p in pl_module.parameters() if p.grad is not None).grad.view(-1)[0] = float("inf")


class SigtermInValidation(Callback):
    """Sends SIGTERM to this process at the first validation batch of epoch ``epoch`` (Lightning
    stops after that batch, in the middle of validation)."""

    def __init__(self, epoch: int = 0) -> None:
        self.epoch = epoch

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        if not trainer.sanity_checking and trainer.current_epoch == self.epoch and batch_idx == 0:
            os.kill(os.getpid(), signal.SIGTERM)
