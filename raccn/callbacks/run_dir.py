"""Where a run's files go."""

from __future__ import annotations

import pytorch_lightning as pl


def run_dir(trainer: pl.Trainer) -> str:
    """The run folder: the first logger's ``log_dir`` (e.g. ``runs/<name>/version_N``), else
    ``trainer.default_root_dir``."""
    return trainer.log_dir or trainer.default_root_dir
