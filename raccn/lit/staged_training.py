"""What the procedures that train one part of the network at a time share (RA-CNN's alternating
phases, AG-CNN's three stages): manual optimisation with one optimiser per part, per-step learning
rate schedules, networks frozen in eval mode, and per-epoch metrics.

A mixin (like ``GlimpseTraining``), so that each LightningModule keeps its own signature (read by
LightningCLI), its own schedule and its own metrics. It expects ``self.metrics``, a
``ModuleDict`` of ``ModuleDict``\\ s of metrics per split (``"val"``, ``"test"``), and the class
attribute ``ddp_reason`` (why DDP needs ``find_unused_parameters``), and ``_evaluate(batch,
split)``, which updates that split's metrics for a batch.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torchmetrics import MeanMetric

__all__ = ["StagedTraining", "cosine_factor", "eval_mode"]


def cosine_factor(step: int, total: float) -> float:
    """``0.5 (1 + cos(pi min(step / total, 1)))``: 1 at step 0, 0 from step ``total`` on; 1 when
    ``total`` is not a finite positive number of steps (nothing to decay over)."""
    if not math.isfinite(total) or total <= 0:
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * min(max(step, 0) / total, 1.0)))


@contextmanager
def eval_mode(*modules: nn.Module) -> Iterator[None]:
    """``modules`` in eval mode within the block, then back in the mode each was in: a part that
    a step does not train keeps its batch-norm statistics too."""
    modes = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(modules, modes):
            m.train(mode)


class StagedTraining:
    """Mixin of ``RACNNLitModule`` and ``AGCNNLitModule`` (module docstring)."""

    ddp_reason = "each phase trains its own parameters only"

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """A module rebuilt by ``load_from_checkpoint`` (not through LightningCLI) keeps the
        network's configuration among its hyper-parameters, so its own checkpoints load alike."""
        saved = checkpoint.get("hyper_parameters", {})
        if "net" not in self.hparams and "net" in saved:
            self.hparams.update({k: saved[k] for k in ("_class_path", "net", "_instantiator") if k in saved})

    def on_fit_start(self) -> None:
        model = self.trainer.strategy.model
        if isinstance(model, DistributedDataParallel) and not model.find_unused_parameters:
            raise ValueError(
                f"{self.ddp_reason}, which DDP accepts only with find_unused_parameters=True: use "
                "--trainer.strategy ddp_find_unused_parameters_true"
            )

    def _step(self, optimizer, loss: Tensor | None) -> None:
        """Backward of ``loss`` and a step of ``optimizer``; without a loss, a step over no
        gradients, which moves nothing (it still counts as the global step)."""
        optimizer.zero_grad()
        if loss is not None:
            self.manual_backward(loss)
        optimizer.step()

    def _step_schedulers(self) -> None:
        """Every scheduler counts every training step, whichever optimiser stepped."""
        with warnings.catch_warnings():  # also before their optimiser's first step: on purpose
            warnings.filterwarnings("ignore", r"Detected call of `lr_scheduler\.step\(\)` before")
            schedulers = self.lr_schedulers()
            for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
                scheduler.step()

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")  # the table is printed by raccn.callbacks.EvalReportWriter

    def _log_epoch(self, split: str) -> dict[str, float]:
        """Compute, log (``<split>/<name>``) and reset the split's metrics; a mean of nothing
        (e.g. IoU without true boxes) is left out."""
        values = {}
        for name, metric in self.metrics[split].items():
            if isinstance(metric, MeanMetric) and metric.update_count == 0:
                continue
            values[f"{split}/{name}"] = metric.compute()
            metric.reset()
        self.log_dict(values, prog_bar=split == "val")
        return {k: float(v) for k, v in values.items()}
