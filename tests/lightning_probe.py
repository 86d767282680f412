"""A minimal LightningModule that records batch shapes: checks that a data module plugs into a
Trainer (CPU ``fast_dev_run``)."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import nn


class ShapeProbe(pl.LightningModule):
    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_features, num_classes))
        self.seen: list[tuple[int, ...]] = []

    def training_step(self, batch, batch_idx):
        x, y = batch[0], batch[1]
        self.seen.append(tuple(x.shape))
        return nn.functional.cross_entropy(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        self.seen.append(tuple(batch[0].shape))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit_one_batch(datamodule: pl.LightningDataModule, in_features: int, num_classes: int) -> list[tuple[int, ...]]:
    """Run one training and one validation batch; return the shapes of the images seen."""
    probe = ShapeProbe(in_features, num_classes)
    pl.Trainer(fast_dev_run=1, accelerator="cpu", logger=False, enable_progress_bar=False,
               enable_model_summary=False, enable_checkpointing=False).fit(probe, datamodule=datamodule)
    return probe.seen
