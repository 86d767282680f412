"""Callback writing pictures of RAM glimpse trajectories for a few test images."""

from __future__ import annotations

import os
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.rank_zero import rank_zero_info
from torch import Tensor

from raccn.viz import draw_glimpse_path, grid


class GlimpseTrajectoryWriter(pl.Callback):
    """At the end of testing, draw where the model looked on the first ``num_images`` test
    images and write one PNG per image plus a contact sheet into ``<run dir>/<dirname>/``.

    The run directory is the logger's ``log_dir`` (or the trainer's ``default_root_dir``).

    Args:
        num_images: how many test images to draw (>= 1).
        dirname: sub-folder of the run directory.
        upscale: integer magnification of the pictures.
    """

    def __init__(self, num_images: int = 8, dirname: str = "glimpses", upscale: int = 4) -> None:
        if num_images < 1:
            raise ValueError(f"num_images must be >= 1, got {num_images!r}")
        self.num_images, self.dirname, self.upscale = num_images, dirname, upscale
        self._images: list[Tensor] = []
        self._targets: list[Tensor] = []
        self.written: list[str] = []

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._images, self._targets = [], []

    def on_test_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
        batch_idx: int, dataloader_idx: int = 0,
    ) -> None:
        have = sum(len(x) for x in self._images)
        if have < self.num_images:
            images, target = batch
            self._images.append(images[: self.num_images - have].detach())
            self._targets.append(target[: self.num_images - have].detach())

    @staticmethod
    def run_dir(trainer: pl.Trainer) -> str:
        return trainer.log_dir or trainer.default_root_dir

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._images or not trainer.is_global_zero:
            return
        images, targets = torch.cat(self._images), torch.cat(self._targets)
        with torch.no_grad():
            out = pl_module.net(images)
        hp = pl_module.hparams
        pictures = []
        preds = out.logits[:, -1].argmax(-1)
        folder = os.path.join(self.run_dir(trainer), self.dirname)
        os.makedirs(folder, exist_ok=True)
        self.written = []
        for i in range(images.shape[0]):
            pic = draw_glimpse_path(
                images[i], out.locations[i], hp.patch_size, hp.scales, hp.scale_factor,
                self.upscale, caption=f"pred {int(preds[i])} / true {int(targets[i])}",
            )
            path = os.path.join(folder, f"test_{i:02d}.png")
            pic.save(path)
            self.written.append(path)
            pictures.append(pic)
        sheet = os.path.join(folder, "test_grid.png")
        grid(pictures).save(sheet)
        self.written.append(sheet)
        rank_zero_info(f"Glimpse trajectories written to {folder}")

    def state_dict(self) -> dict[str, int | None]:
        return {}
