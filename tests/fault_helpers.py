"""Callbacks that inject faults into a training run, for the fault tests (importable by a
``train.py`` subprocess: ``class_path: fault_helpers.<name>`` with tests/ on ``PYTHONPATH``)."""

from __future__ import annotations

import time

from pytorch_lightning.callbacks import Callback


class Pause(Callback):
    """Sleeps ``seconds`` after every training step, so that a signal lands mid-run."""

    def __init__(self, seconds: float = 0.2) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, *args) -> None:
        time.sleep(self.seconds)
