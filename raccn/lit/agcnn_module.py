"""AG-CNN training: the global branch, then the local branch, then the fusion branch (Guan et al.
2018, §3.4).

The module receives its network (``net``, a ``raccn.models.AGCNN``) and holds the procedure; manual
optimisation with one optimiser per stage (``raccn.lit.staged_training``), stages from
``raccn.lit.phase_schedule.StageSchedule``, the paper's three in order:

- ``global`` (``global_length``): the global branch (trunk + classifier) on the whole image, with
  the cross-entropy of its logits; nothing else runs.
- ``local`` (``local_length``): the global branch fixed (eval mode, no gradients) crops each image
  on its thresholded heat map; the local branch trained on the crops with its cross-entropy.
- ``fusion`` (the rest of training): both branches fixed; the fusion classifier trained on their
  concatenated pooled features with its cross-entropy.

The paper's losses are binary cross-entropies (multi-label chest X-rays); single-label data take
the softmax cross-entropy here. Each stage's optimiser is built by the one ``optimizer`` factory
over that stage's parameters (a fresh optimiser per stage, as the paper fine-tunes each branch
anew) and has its own ``LambdaLR``, stepped every training step: with ``lr_decay="cosine"`` the
learning rate decays to zero over its own stage. A checkpoint holds all three optimisers and
schedulers; the stage is a function of the global step.

Metrics: ``train/loss_{global,local,fusion}``, ``train/stage`` (0, 1, 2);
``{val,test}/acc_global``, ``{val,test}/acc_local``, ``{val,test}/acc_fusion`` (each branch's
top-1 accuracy, fractions in [0, 1], whatever the stage), and, when batches carry the object's true
box, ``{val,test}/crop_iou`` (IoU of the local branch's crop with it, in image pixels).
"""

from __future__ import annotations

from dataclasses import replace

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.cli import OptimizerCallable
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from raccn.lit.phase_schedule import StageSchedule
from raccn.lit.shared_on_copy import shared_on_copy
from raccn.lit.staged_training import StagedTraining, cosine_factor, eval_mode
from raccn.models.agcnn import AGCNN, BRANCHES, AGCNNOutput
from raccn.ops.boxes import box_iou_pairs

STAGES = BRANCHES  # ("global", "local", "fusion"): stage k trains branch k


def _sgd(params):
    return torch.optim.SGD(params, lr=1e-3, momentum=0.9)


class AGCNNLitModule(StagedTraining, pl.LightningModule):
    """Args:
        net: the network (``raccn.models.AGCNN``).
        stage_unit: ``"steps"`` or ``"epochs"``: unit of ``global_length`` and ``local_length``.
        global_length, local_length: length of the global and of the local stage (>= 0; 0 skips
            the stage); the fusion stage lasts to the end of training.
        optimizer: optimiser factory, applied to each stage's parameters.
        lr_decay: ``None`` (constant learning rates) or ``"cosine"``: within each stage the
            learning rate follows ``0.5 (1 + cos(pi t / T))`` of its value, t the steps into the
            stage and T its length in steps (the fusion stage's: to ``trainer.estimated_stepping_batches``).
    """

    automatic_optimization = False
    ddp_reason = "AG-CNN's stages train disjoint parameter sets (one branch each)"

    def __init__(
        self,
        net: AGCNN,
        stage_unit: str = "steps",
        global_length: int = 1000,
        local_length: int = 1000,
        optimizer: OptimizerCallable = _sgd,
        lr_decay: str | None = None,
    ) -> None:
        super().__init__()
        if lr_decay not in (None, "cosine"):
            raise ValueError(f"lr_decay must be null or 'cosine', got {lr_decay!r}")
        self.schedule = StageSchedule(STAGES, (global_length, local_length), stage_unit)
        # hyper-parameters: the net only as a config (LightningCLI's, marked "_instantiator"); a
        # network built in Python: ``load_from_checkpoint(path, net=...)``
        self.save_hyperparameters(ignore=["net", "optimizer"])
        if "_instantiator" in self.hparams:
            self.save_hyperparameters(ignore=["optimizer"])
        self.net, self.optimizer = net, shared_on_copy(optimizer)  # (EMA's copies under DDP)
        acc = lambda: MulticlassAccuracy(net.num_classes, average="micro")
        self.metrics = nn.ModuleDict({
            split: nn.ModuleDict({f"acc_{b}": acc() for b in BRANCHES} | {"crop_iou": MeanMetric()})
            for split in ("val", "test")
        })

    # -- optimisation ----------------------------------------------------------------------
    def configure_optimizers(self):
        optimizers = [self.optimizer([p for m in self.net.branches(s) for p in m.parameters()]) for s in STAGES]
        total = self.trainer.estimated_stepping_batches if self.hparams.lr_decay is not None else float("inf")

        def decay(index: int):
            def factor(step: int) -> float:
                if self.hparams.lr_decay is None:
                    return 1.0
                start, length = self.schedule.start(index), self.schedule.length(index, total)
                return cosine_factor(step - start, length)
            return factor

        return optimizers, [LambdaLR(o, decay(i)) for i, o in enumerate(optimizers)]

    def on_train_start(self) -> None:
        if self.schedule.unit == "epochs":  # the training set is loaded now
            self.schedule = replace(self.schedule, steps_per_epoch=self.trainer.num_training_batches)

    def training_step(self, batch, batch_idx: int) -> None:
        images, target = batch[0], batch[1]
        stage = self.schedule.at(self.global_step).name
        index = STAGES.index(stage)
        optimizer = self.optimizers()[index]
        # Toggled before the forward: the other stages' parameters have requires_grad=False while
        # the graph is built (no backward through a fixed branch); their modules in eval mode.
        fixed = [m for s in STAGES if s != stage for m in self.net.branches(s)]
        with self.toggled_optimizer(optimizer), eval_mode(*fixed):
            loss = F.cross_entropy(self.stage_logits(stage, images), target)
            self._step(optimizer, loss)
        self.log(f"train/loss_{stage}", loss, prog_bar=True)
        self.log("train/stage", float(index))
        self._step_schedulers()

    def stage_logits(self, stage: str, images: Tensor) -> Tensor:
        """The logits (Tensor[B, K]) the stage ``stage`` trains on."""
        if stage == "global":
            return self.net.global_branch(images).logits
        out = self.net(images)
        return out.local_logits if stage == "local" else out.fused_logits

    # -- evaluation ------------------------------------------------------------------------
    def _evaluate(self, batch, split: str) -> AGCNNOutput:
        images, target = batch[0], batch[1]
        out = self.net(images)
        metrics = self.metrics[split]
        for branch, logits in zip(BRANCHES, (out.global_logits, out.local_logits, out.fused_logits)):
            metrics[f"acc_{branch}"].update(logits, target)
        if len(batch) > 2:  # the object's true box (x0, y0, x1, y1) in image pixels
            metrics["crop_iou"].update(box_iou_pairs(out.boxes, batch[2].to(out.boxes)))
        return out

    def predict_step(self, batch, batch_idx: int) -> dict[str, Tensor]:
        """``pred`` (Tensor[B] int64, the fusion branch's prediction), ``prob`` (Tensor[B], its
        softmax probability) and ``crop_box`` (Tensor[B, 4], the local branch's crop (x0, y0, x1,
        y1) in image pixels)."""
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        out = self.net(images)
        p, pred = out.fused_logits.softmax(-1).max(1)
        return {"pred": pred, "prob": p, "crop_box": out.boxes}
