"""Base of the callbacks that show where a model looks: pictures + a table, as PNG and in W&B.

For a fixed set of images (the first ``num_images`` of the validation loader, and of the test
loader), a subclass renders one picture per image and a table (rows of plain values). At the end
of every ``every_n_epochs``-th validation epoch (after its last batch, with the weights validation
used, e.g. an EMA's; not during the sanity check) and at the end of testing, this base

- writes the pictures as PNG files into ``<run dir>/<dirname>/<tag>/`` (``tag`` = ``epoch003``
  or ``test``) with a contact sheet ``grid.png`` and the table as ``table.csv``, whatever the
  logger (the run dir is the first logger's ``log_dir``, else ``trainer.default_root_dir``);
- logs them to every ``WandbLogger`` of the trainer: ``<split>/<key>`` as a list of
  ``wandb.Image`` with captions and ``<split>/<key>_table`` as a ``wandb.Table``.

Rendering runs without gradients, in eval mode, and in a forked RNG with a fixed seed: the
pictures of successive epochs are comparable and training's random stream is not disturbed.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.rank_zero import rank_zero_info
from PIL import Image
from pytorch_lightning.loggers import WandbLogger
from torch import Tensor

from raccn.callbacks.run_dir import run_dir
from raccn.viz import grid
from raccn.write_errors import explain_write_errors

__all__ = ["AttentionPictureCallback", "Rendered"]


class Rendered:
    """What a subclass's :meth:`AttentionPictureCallback.render` returns.

    Attributes:
        pictures: one PIL image per input image.
        captions: one caption per picture.
        columns: names of the table's columns.
        rows: the table's rows (lists of str / int / float / None, one value per column).
    """

    def __init__(self, pictures: list[Image.Image], captions: list[str], columns: list[str],
                 rows: list[list[Any]]) -> None:
        if len(pictures) != len(captions):
            raise ValueError("one caption per picture")
        self.pictures, self.captions, self.columns, self.rows = pictures, captions, columns, rows


class AttentionPictureCallback(pl.Callback):
    """Args:
        num_images: K, how many fixed images to draw (>= 1; paper-style figures use 8).
        dirname: sub-folder of the run directory for the PNG files.
        key: name of the W&B image list (``val/<key>``, ``test/<key>``) and table
            (``val/<key>_table``).
        every_n_epochs: draw after every n-th validation epoch (>= 1); 0 = only at test time.
        upscale: integer magnification of the pictures.
        seed: seed of the forked RNG used while rendering (stochastic policies).
    """

    def __init__(self, num_images: int = 8, dirname: str = "attention", key: str = "attention",
                 every_n_epochs: int = 1, upscale: int = 4, seed: int = 0) -> None:
        if num_images < 1:
            raise ValueError(f"num_images must be >= 1, got {num_images!r}")
        if every_n_epochs < 0:
            raise ValueError(f"every_n_epochs must be >= 0 (0: only at test time), got {every_n_epochs!r}")
        if upscale < 1:
            raise ValueError(f"upscale must be an integer >= 1, got {upscale!r}")
        self.num_images, self.dirname, self.key = num_images, dirname, key
        self.every_n_epochs, self.upscale, self.seed = every_n_epochs, upscale, seed
        self._fixed: dict[str, list[list[Tensor]]] = {"val": [], "test": []}
        self._val_collected = False  # the first validation epoch has run: the val images are fixed
        self._val_drawn: int | None = None  # epoch whose validation pictures are written
        self.written: list[str] = []  #: files written by the last call

    # -- the subclass's part ---------------------------------------------------------------
    def render(self, pl_module: pl.LightningModule, images: Tensor, targets: Tensor,
               extras: list[Tensor], to_display: Callable[[Tensor], Tensor]) -> Rendered:
        """Draw the fixed images.

        Args:
            images (Tensor[K, C, H, W]): as the model takes them.
            targets (Tensor[K]): class labels.
            extras: the batches' further tensors (e.g. true boxes Tensor[K, 4]), possibly empty.
            to_display: maps model inputs (Tensor[..., C, h, w], e.g. ``images`` or crops of
                them) to [0, 1] for drawing, undoing the data's normalisation.
        """
        raise NotImplementedError

    # -- collection of the fixed images ----------------------------------------------------
    def _collect(self, split: str, batch: Any) -> None:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            return
        if split == "val" and self._val_collected:  # (a validation share smaller than num_images)
            return
        store = self._fixed[split]
        need = self.num_images - sum(len(part[0]) for part in store)
        if need > 0:
            store.append([t[:need].detach().cpu() for t in batch])

    def _fixed_batch(self, split: str) -> list[Tensor] | None:
        store = self._fixed[split]
        if not store:
            return None
        return [torch.cat(parts) for parts in zip(*store)]

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if trainer.sanity_checking or dataloader_idx != 0:
            return
        self._collect("val", batch)
        # Drawn after the loader's last batch, while the weights validation used are still in
        # place: a weight-averaging callback (EMA) swaps the raw weights back in its
        # on_validation_epoch_end, which may run before this callback's.
        if self._val_due(trainer) and batch_idx + 1 == trainer.num_val_batches[0]:
            self._emit_val(trainer, pl_module)

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self._fixed["test"] = []

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if dataloader_idx == 0:
            self._collect("test", batch)

    # -- output ----------------------------------------------------------------------------
    @staticmethod
    def display_fn(trainer: pl.Trainer) -> Callable[[Tensor], Tensor]:
        """The map of model inputs (Tensor[..., C, h, w]) to [0, 1] for drawing: undoes the
        data module's normalisation when it declares one (``pixel_mean``/``pixel_std``, one
        value per channel), else clamps."""
        dm = getattr(trainer, "datamodule", None)
        mean, std = getattr(dm, "pixel_mean", None), getattr(dm, "pixel_std", None)
        if mean is None or std is None:
            return lambda x: x.detach().cpu().clamp(0, 1)

        def to_display(x: Tensor) -> Tensor:
            m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
            s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
            return (x * s + m).clamp(0, 1).detach().cpu()

        return to_display

    def _val_due(self, trainer) -> bool:
        return self.every_n_epochs > 0 and (trainer.current_epoch + 1) % self.every_n_epochs == 0

    def _emit_val(self, trainer, pl_module) -> None:
        self._emit(trainer, pl_module, "val", f"epoch{trainer.current_epoch:03d}")
        self._val_drawn = trainer.current_epoch

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        # a loader without a length (num_val_batches inf) is drawn here instead
        if self._val_due(trainer) and self._val_drawn != trainer.current_epoch:
            self._emit_val(trainer, pl_module)
        self._val_collected = True  # the same images in every later epoch, however few they were

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._emit(trainer, pl_module, "test", "test")

    def _emit(self, trainer: pl.Trainer, pl_module: pl.LightningModule, split: str, tag: str) -> None:
        batch = self._fixed_batch(split)
        if batch is None or not trainer.is_global_zero:
            return
        images, targets, extras = batch[0].to(pl_module.device), batch[1].to(pl_module.device), batch[2:]
        was_training = pl_module.training
        pl_module.eval()
        try:
            with torch.no_grad(), torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                out = self.render(pl_module, images, targets, [e.to(pl_module.device) for e in extras],
                                  self.display_fn(trainer))
        finally:
            pl_module.train(was_training)
        folder = os.path.join(run_dir(trainer), self.dirname, tag)
        self.written = []
        with explain_write_errors("attention picture folder", folder):
            os.makedirs(folder, exist_ok=True)
        for i, pic in enumerate(out.pictures):
            path = os.path.join(folder, f"{split}_{i:02d}.png")
            with explain_write_errors("attention picture", path):
                pic.save(path)
            self.written.append(path)
        sheet = os.path.join(folder, "grid.png")
        with explain_write_errors("attention picture", sheet):
            grid(out.pictures).save(sheet)
        table = os.path.join(folder, "table.csv")
        with explain_write_errors("attention table", table), open(table, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(out.columns)
            writer.writerows(out.rows)
        self.written += [sheet, table]
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                step = trainer.global_step
                logger.log_image(f"{split}/{self.key}", list(out.pictures), step=step, caption=list(out.captions))
                logger.log_table(f"{split}/{self.key}_table", columns=list(out.columns), data=out.rows, step=step)
        if split == "test":
            rank_zero_info(f"Attention pictures written to {folder}")

    def state_dict(self) -> dict[str, Any]:
        return {}
