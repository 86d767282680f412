"""Wall-clock time of a run as a metric, for accuracy-versus-time curves."""

from __future__ import annotations

import time

import pytorch_lightning as pl


class WallClock(pl.Callback):
    """Log ``time/elapsed_s``: seconds since ``fit`` started, at the end of every validation
    epoch (next to ``val/*`` in ``metrics.csv``), and ``time/epoch_s``, the duration of the last
    training epoch. Sanity-check validation is not logged."""

    def __init__(self) -> None:
        self._start: float | None = None
        self._epoch_start: float | None = None
        self._epoch_s: float | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._epoch_start is not None:
            self._epoch_s = time.perf_counter() - self._epoch_start

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self._start is None or trainer.state.fn != "fit":
            return
        pl_module.log("time/elapsed_s", time.perf_counter() - self._start)
        if self._epoch_s is not None:
            pl_module.log("time/epoch_s", self._epoch_s)
