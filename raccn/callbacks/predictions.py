"""Predictions on the user's images (or the test split): a CSV, one attention picture per image,
one printed line per image.

    python train.py predict --config configs/ram_quickstart.yaml --ckpt_path <ckpt> \\
        --data.init_args.predict_paths '[img1.jpg, img2.png]'

The pictures follow what the module's ``predict_step`` returns (a dict of batched tensors with
``pred`` Tensor[B] int64 and ``prob`` Tensor[B], plus):

- ``locations`` (Tensor[B, T, 2], RAM): the glimpse path, ``raccn.viz.draw_glimpse_path`` with
  the module's ``patch_size``, ``scales``, ``scale_factor``;
- ``boxes`` (Tensor[B, N-1, 3], RA-CNN) and optionally ``crops`` (list of Tensor[B, C, S, S]):
  the zoom chain, ``raccn.viz.draw_zoom_chain``;
- neither: the image with its caption.

A module that reads label sequences (DRAM: ``reads_sequences = True``, ``predict_step`` returning
``sequence`` Tensor[B, S] labels then EOS and ``prob`` Tensor[B], the probability of the number
read) gets the CSV columns ``path, number, probability, picture`` (``number``: the labels up to
the first EOS as text, e.g. ``1234``) and its glimpses drawn in one colour per label slot.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.rank_zero import rank_zero_info
from PIL import Image
from pytorch_lightning.callbacks import BasePredictionWriter
from torch import Tensor

from raccn.callbacks.attention_pictures import AttentionPictureCallback
from raccn.callbacks.run_dir import run_dir
from raccn.lit.sequence_accuracy import label_strings
from raccn.viz import draw_glimpse_path, draw_zoom_chain, slot_colours
from raccn.write_errors import explain_write_errors

__all__ = ["PredictionWriter"]

COLUMNS = ["path", "class_index", "class_name", "probability", "picture"]
SEQUENCE_COLUMNS = ["path", "number", "probability", "picture"]


def safe_stem(path: str) -> str:
    """The file name of ``path`` without extension, characters other than letters, digits,
    ``.``, ``-``, ``_`` replaced by ``_`` (for the picture's file name)."""
    return re.sub(r"[^\w.-]+", "_", Path(path).stem) or "image"


class PredictionWriter(BasePredictionWriter):
    """Write ``<run dir>/<dirname>/predictions.csv`` and one PNG per predicted image.

    The run dir is the first logger's ``log_dir`` (e.g. ``runs/<name>/version_N``), else
    ``trainer.default_root_dir``. CSV columns: ``path`` (the file as given in the data module's
    ``predict_paths``, or ``test[i]`` for item i of the test split), ``class_index`` (0-based),
    ``class_name`` (the data module's ``class_names``, e.g. CUB's species; digits: "0".."9"),
    ``probability`` (the module's probability of that class, in [0, 1]: fused softmax for RA-CNN,
    last-step softmax averaged over ``mc_samples`` rollouts for RAM) and ``picture`` (the PNG's
    file name). Each image's line is also printed. The pictures' captions give the class and its
    probability; inputs normalised by the data module (``pixel_mean``/``pixel_std``) are
    un-normalised for display.

    ``crops`` are removed from each batch's prediction once drawn, so that predicting a whole test
    split does not keep every amplified crop in memory (``trainer.predict`` still returns the rest).
    ``raccn.cli`` adds one to every run (options ``--predictions.*``). Single-process only.

    Args:
        dirname: sub-folder of the run dir.
        pictures: write the PNG files (False: only the CSV and the printed lines).
        upscale: integer magnification of the pictures; ``None``: the smallest that makes the
            image at least 160 pixels high.
    """

    def __init__(self, dirname: str = "predictions", pictures: bool = True,
                 upscale: int | None = None) -> None:
        super().__init__(write_interval="batch")
        if upscale is not None and upscale < 1:
            raise ValueError(f"upscale must be an integer >= 1 or null (automatic), got {upscale!r}")
        self.dirname, self.pictures, self.upscale = dirname, pictures, upscale
        self.folder: str | None = None  #: where the last run wrote
        self.rows: list[list[Any]] = []  #: the CSV rows of the last run
        self._seen = 0  # images written so far in this run

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.folder = os.path.join(run_dir(trainer), self.dirname)
        self.rows, self._seen = [], 0
        if trainer.is_global_zero:
            with explain_write_errors("predictions", self.csv_path):
                os.makedirs(self.folder, exist_ok=True)
                with open(self.csv_path, "w", newline="") as fh:
                    csv.writer(fh).writerow(SEQUENCE_COLUMNS if _reads_sequences(pl_module) else COLUMNS)

    @property
    def csv_path(self) -> str:
        if self.folder is None:
            raise RuntimeError("PredictionWriter has not run yet: call trainer.predict(...) first.")
        return os.path.join(self.folder, "predictions.csv")

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx,
                           dataloader_idx) -> None:
        if not trainer.is_global_zero:
            return
        sequences = _reads_sequences(pl_module)
        needed = {"sequence", "prob"} if sequences else {"pred", "prob"}
        if not isinstance(prediction, dict) or not needed <= prediction.keys():
            raise TypeError(
                f"PredictionWriter needs predict_step to return a dict with {sorted(needed)} "
                f"(Tensor[B]); {type(pl_module).__name__} returned {type(prediction).__name__}."
            )
        images = batch[0] if isinstance(batch, (tuple, list)) else batch  # (B, C, H, W)
        dm = trainer.datamodule
        paths = getattr(dm, "predict_paths", None)
        if paths is not None:  # batches (images, indices into predict_paths)
            ids = batch[1].tolist()
            names = [paths[i] for i in ids]
            files = [f"{i:04d}_{safe_stem(paths[i])}.png" for i in ids]
        else:  # the test split: positions from the sampler (in order), else counted here
            ids = list(batch_indices or range(self._seen, self._seen + len(images)))
            names = [f"test[{i}]" for i in ids]
            files = [f"test_{i:05d}.png" for i in ids]
        self._seen += len(images)
        if sequences:
            self._write_sequences(trainer, pl_module, prediction, images, names, files)
            return
        class_names = getattr(dm, "class_names", None)
        preds, probs = prediction["pred"].tolist(), prediction["prob"].tolist()
        labels = [class_names[k] if class_names else str(k) for k in preds]
        if self.pictures:
            captions = [(f"class {k}" if label == str(k) else f"{label} (class {k})") + f", p = {p:.2f}"
                        for label, k, p in zip(labels, preds, probs)]
            pictures = self.draw(trainer, pl_module, images, prediction, captions)
            for picture, file in zip(pictures, files):
                self._save(picture, file)
        prediction.pop("crops", None)
        if not self.pictures:
            files = [""] * len(names)
        rows = [list(row) for row in zip(names, preds, labels, probs, files)]
        with explain_write_errors("predictions", self.csv_path), open(self.csv_path, "a", newline="") as fh:
            csv.writer(fh).writerows(rows)
        self.rows += rows
        for n, k, label, p, f in rows:
            where = f" -> {os.path.join(self.folder, f)}" if f else ""
            rank_zero_info(f"{n}: {label} (class {k}), p = {p:.4f}{where}")

    def _save(self, picture: Image.Image, file: str) -> None:
        path = os.path.join(self.folder, file)
        with explain_write_errors("prediction picture", path):
            picture.save(path)

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            rank_zero_info(f"{len(self.rows)} prediction(s) written to {self.csv_path}")

    def _write_sequences(self, trainer, pl_module, prediction: dict[str, Any], images: Tensor,
                         names: list[str], files: list[str]) -> None:
        """The rows, pictures and lines of a batch of numbers read (module docstring)."""
        numbers = label_strings(prediction["sequence"], pl_module.net.eos_index)
        probs = prediction["prob"].tolist()
        if self.pictures:
            captions = [f"read {n or '-'}, p = {p:.2f}" for n, p in zip(numbers, probs)]
            for picture, file in zip(self.draw(trainer, pl_module, images, prediction, captions), files):
                self._save(picture, file)
        else:
            files = [""] * len(names)
        rows = [list(row) for row in zip(names, numbers, probs, files)]
        with explain_write_errors("predictions", self.csv_path), open(self.csv_path, "a", newline="") as fh:
            csv.writer(fh).writerows(rows)
        self.rows += rows
        for n, number, p, f in rows:
            where = f" -> {os.path.join(self.folder, f)}" if f else ""
            rank_zero_info(f"{n}: {number or '(nothing)'}, p = {p:.4f}{where}")

    # -- helpers ---------------------------------------------------------------------------
    def draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule, images: Tensor,
             prediction: dict[str, Any], captions: list[str]) -> list[Image.Image]:
        """One picture per image of the batch (see the module docstring).

        Args:
            images (Tensor[B, C, H, W]): the model's inputs.
            prediction: ``predict_step``'s output for the batch.
            captions: one per image.
        """
        to_display = AttentionPictureCallback.display_fn(trainer)
        display = to_display(images)  # (B, C, H, W) in [0, 1]
        upscale = self.upscale or max(1, -(-160 // images.shape[-2]))
        if "locations" in prediction:
            sensor, T = pl_module.net.glimpse_net, prediction["locations"].shape[1]
            per_slot = getattr(pl_module.net, "glimpses_per_digit", None)  # DRAM: colour by slot
            colours = slot_colours(T, per_slot) if per_slot else None
            return [draw_glimpse_path(display[i], prediction["locations"][i], sensor.patch_size,
                                      sensor.scales, sensor.scale_factor, upscale, caption=c,
                                      colours=colours)
                    for i, c in enumerate(captions)]
        boxes = prediction.get("boxes")
        if boxes is None:  # no attention to show: the image and its caption
            boxes = torch.empty(len(images), 0, 3)
        crops = [to_display(c) for c in prediction.get("crops", [])]  # each (B, C, S, S)
        return [draw_zoom_chain(display[i], boxes[i], [c[i] for c in crops], upscale, caption=cap)
                for i, cap in enumerate(captions)]


def _reads_sequences(pl_module: pl.LightningModule) -> bool:
    """The module's predictions are label sequences (DRAM), not classes."""
    return bool(getattr(pl_module, "reads_sequences", False))
