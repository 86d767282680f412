"""Where a run's files go."""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger


def run_dir(trainer: pl.Trainer) -> str:
    """The run folder: the first logger's ``log_dir`` (e.g. ``runs/<name>/version_N``; for other
    loggers their ``save_dir``), else ``trainer.default_root_dir`` — ``Trainer.log_dir``'s rule,
    read on the calling process alone. ``Trainer.log_dir`` broadcasts the answer from rank 0, a
    collective that the rank-0-only writers (pictures, reports, predictions) would enter alone
    under DDP while the other ranks sync their metrics: a deadlock."""
    logger = trainer.loggers[0] if trainer.loggers else None
    if logger is None:
        return trainer.default_root_dir
    folder = logger.log_dir if isinstance(logger, (CSVLogger, TensorBoardLogger)) else logger.save_dir
    return folder or trainer.default_root_dir
