"""RA-CNN training: APN pre-training, then alternating optimisation (Fu et al. 2017, §3.4).

Phases (manual optimisation, two optimisers):

- ``warmup`` (optional, ``warmup_cls_steps``): classification steps as in ``cls`` before APN
  pre-training, for trunks trained from scratch (whose first feature peaks mean nothing).
- ``pretrain`` (optional, ``apn_pretrain_steps``): each APN regresses the square centred on the
  peak (or centroid) of its trunk's channel-summed last conv response, of side
  ``apn_pretrain_side`` x input.
- ``cls``: APNs frozen, boxes detached; trunks, classifiers and fusion trained with the sum of
  the per-scale cross-entropies plus the fused one (optimiser ``cls_optimizer``).
- ``reanchor`` (optional, ``reanchor_steps``): after every ``cls`` phase, a few pre-training
  steps that move the APNs back onto the current trunks' responses (which the ``cls`` phase
  changed under the frozen APNs) before ranking.
- ``rank``: trunks, classifiers and fusion frozen; APNs trained with the pairwise ranking loss
  (optimiser ``apn_optimizer``, learning rates x ``rank_lr_factor``); gradients reach the APNs
  through the zoom's boxcar mask (and its sampling grid with ``grid_grad``).

``cls`` and ``rank`` alternate, ``cls_length`` / ``rank_length`` steps or epochs each
(``phase_unit``). The phase and its progress are saved in checkpoints (with both optimisers'
states), so a resumed run continues the same phase.

Metrics: ``train/loss_cls``, ``train/loss_rank``, ``train/loss_pretrain``, ``train/phase``
(0 pretrain, 1 cls (and warmup), 2 rank); ``{val,test}/acc_scale{s}``, ``{val,test}/acc_fused``,
``{val,test}/acc_scale1+2[+3...]`` (softmax average of scales 1..s), and, when batches carry the
object's true box, ``{val,test}/apn_iou_scale{s}`` (IoU of the box that makes scale s's input,
in image pixels). Accuracies are fractions in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from lightning_fabric.utilities.rank_zero import rank_zero_info
from pytorch_lightning.cli import OptimizerCallable
from pytorch_lightning.strategies import DDPStrategy
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from raccn.losses import ranking_loss
from raccn.losses.ranking import check_margin
from raccn.models.apn import square_from_unit
from raccn.models.racnn import APN_FEATURES, RACNN, RACNNOutput
from raccn.ops.boxes import box_iou_pairs, compose_squares, square_to_xyxy

# index = the logged train/phase; "warmup" logs as "cls", "reanchor" as "pretrain"
PHASES = ("pretrain", "cls", "rank")


def _sgd(params):
    return torch.optim.SGD(params, lr=1e-3, momentum=0.9)


def _adam(params):
    return torch.optim.Adam(params, lr=1e-4)


class RACNNLitModule(pl.LightningModule):
    """Model arguments as in ``raccn.models.RACNN``, plus:

    Args:
        margin: ranking-loss margin (paper: 0.05), >= 0.
        phase_unit: ``"steps"`` or ``"epochs"``: unit of ``cls_length`` and ``rank_length``.
        cls_length, rank_length: length of each classification / ranking phase (>= 1).
        warmup_cls_steps: classification-only steps before APN pre-training (0: none).
        apn_pretrain_steps: steps of APN pre-training before alternation (0: none).
        apn_pretrain_side: side of the pre-training target square, fraction of the input (paper: 0.5).
        apn_pretrain_target: centre of that square: ``"peak"`` (paper: the arg-max of the
            channel-summed response of the map the APN reads) or ``"centroid"`` (the mean
            position of that map weighted by its squared excess over its minimum; sub-cell
            precise where the map is coarse, e.g. 3x3 for ResNet-18 at 96 px, where it raised
            the targets' IoU with the true box from 0.37 (peak) to 0.55, docs/RESULTS.md), or
            ``"cam"``: the same centroid of the class activation map of the true class (the
            classifier's weights on the features, positive part), which ignores responses to
            clutter that do not vote for the class.
        apn_pretrain_power: for ``"centroid"`` and ``"cam"``, the exponent p of the weights (the
            map's excess over its minimum, or the CAM, to the power p; > 0): larger p leans
            towards the peak.
        apn_pretrain_features: the map the ``"peak"``/``"centroid"`` targets are read from:
            ``None`` (the map the APN reads) or one of ``"last"``, ``"stride16"``, ``"stride8"``
            (see ``apn_features``; a finer map localises more precisely, docs/RESULTS.md).
        cls_optimizer: optimiser factory for trunks, classifiers and fusion.
        apn_optimizer: optimiser factory for the APNs.
        reanchor_steps: pre-training steps between every classification and ranking phase (0: none).
        rank_lr_factor: the APN optimiser's learning rates are multiplied by this in ranking
            phases (pre-training uses them as given), in (0, 1].
        warmup_boxes: boxes cropping the finer scales during warm-up: ``"apn"`` (the untrained
            APN's centred box) or ``"random"`` (uniformly random squares within the APN's bounds),
            so the finer scales learn to classify any crop that holds the object, and their
            confidence rewards boxes on it once ranking starts.
        cls_box_jitter: in classification phases, crop with the APN's box moved by Gaussian
            noise of this std (fraction of the scale's input side; side and centre), kept
            within the APN's bounds: the finer classifiers stay robust to the boxes' later moves
            (0: none).
        lr_decay: ``None`` (constant learning rates) or ``"cosine"``: every phase's learning
            rates follow ``0.5 (1 + cos(pi t / T))`` of their configured value, t the global
            step and T the run's total steps (``trainer.estimated_stepping_batches``), so that
            the classifiers settle on the final boxes instead of swinging between epochs.
    """

    automatic_optimization = False

    def __init__(
        self,
        num_classes: int = 200,
        backbone: str | list[str] = "vgg19",
        weights: str | None = None,
        num_scales: int = 3,
        input_sizes: list[int] = (448, 224, 224),
        shared_trunk: bool = False,
        apn_hidden: int = 512,
        apn_pool: int = 7,
        min_side_fraction: float = 1.0 / 3.0,
        k: float = 10.0,
        grid_grad: bool = False,
        fusion: str = "concat",
        apn_features: str = "last",
        channels_last: bool = False,
        margin: float = 0.05,
        phase_unit: str = "steps",
        cls_length: int = 100,
        rank_length: int = 100,
        warmup_cls_steps: int = 0,
        apn_pretrain_steps: int = 0,
        apn_pretrain_side: float = 0.5,
        apn_pretrain_target: str = "peak",
        apn_pretrain_power: float = 2.0,
        apn_pretrain_features: str | None = None,
        cls_optimizer: OptimizerCallable = _sgd,
        apn_optimizer: OptimizerCallable = _adam,
        rank_lr_factor: float = 1.0,
        reanchor_steps: int = 0,
        lr_decay: str | None = None,
        warmup_boxes: str = "apn",
        cls_box_jitter: float = 0.0,
    ) -> None:
        super().__init__()
        check_margin(margin)
        if phase_unit not in ("steps", "epochs"):
            raise ValueError(f"phase_unit must be 'steps' or 'epochs', got {phase_unit!r}")
        if cls_length < 1 or rank_length < 1:
            raise ValueError(f"cls_length and rank_length must be >= 1, got {cls_length}, {rank_length}")
        if apn_pretrain_steps < 0 or warmup_cls_steps < 0:
            raise ValueError(
                f"apn_pretrain_steps and warmup_cls_steps must be >= 0, got {apn_pretrain_steps!r}, "
                f"{warmup_cls_steps!r}"
            )
        if not 0.0 < apn_pretrain_side <= 1.0:
            raise ValueError(f"apn_pretrain_side must be in (0, 1] (paper: 0.5), got {apn_pretrain_side!r}")
        if reanchor_steps < 0:
            raise ValueError(f"reanchor_steps must be >= 0, got {reanchor_steps!r}")
        if not 0.0 < rank_lr_factor <= 1.0:
            raise ValueError(f"rank_lr_factor must be in (0, 1], got {rank_lr_factor!r}")
        if warmup_boxes not in ("apn", "random"):
            raise ValueError(f"warmup_boxes must be 'apn' or 'random', got {warmup_boxes!r}")
        if not 0.0 <= cls_box_jitter < 1.0:
            raise ValueError(f"cls_box_jitter must be in [0, 1), got {cls_box_jitter!r}")
        if lr_decay not in (None, "cosine"):
            raise ValueError(f"lr_decay must be null or 'cosine', got {lr_decay!r}")
        if apn_pretrain_target not in ("peak", "centroid", "cam"):
            raise ValueError(
                f"apn_pretrain_target must be 'peak', 'centroid' or 'cam', got {apn_pretrain_target!r}"
            )
        if not apn_pretrain_power > 0:
            raise ValueError(f"apn_pretrain_power must be > 0 (2: squared weights), got {apn_pretrain_power!r}")
        if apn_pretrain_features not in (None, *APN_FEATURES):
            raise ValueError(
                f"apn_pretrain_features must be null or one of {tuple(APN_FEATURES)}, got {apn_pretrain_features!r}"
            )
        self.save_hyperparameters(ignore=["cls_optimizer", "apn_optimizer"])
        self.net = RACNN(num_classes, backbone, weights, num_scales, list(input_sizes), shared_trunk,
                         apn_hidden, apn_pool, min_side_fraction, k, grid_grad, fusion, apn_features,
                         channels_last)
        self.cls_optimizer, self.apn_optimizer = cls_optimizer, apn_optimizer
        self.phase, self.phase_progress = "cls", 0
        if apn_pretrain_steps > 0:
            self.phase = "pretrain"
        if warmup_cls_steps > 0:
            self.phase = "warmup"
        self.combos = [f"scale{'+'.join(str(i + 1) for i in range(s + 1))}" for s in range(1, num_scales)]
        acc = lambda: MulticlassAccuracy(num_classes, average="micro")
        self.metrics = nn.ModuleDict({
            split: nn.ModuleDict(
                {f"acc_scale{s + 1}": acc() for s in range(num_scales)}
                | {"acc_fused": acc()}
                | {f"acc_{c}": acc() for c in self.combos}
                | {f"apn_iou_scale{s + 1}": MeanMetric() for s in range(1, num_scales)}
            )
            for split in ("val", "test")
        })

    # -- optimisation ----------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        """Under DDP, turn on ``find_unused_parameters``: each phase trains only its own
        parameters (the APNs get no gradient in a classification step, the trunks and
        classifiers none in a ranking step), which plain DDP rejects at the second step. Runs
        before the strategy wraps the model."""
        if stage != "fit" or not isinstance(self.trainer.strategy, DDPStrategy):
            return
        kwargs = self.trainer.strategy._ddp_kwargs  # what DDPStrategy passes to DistributedDataParallel
        if kwargs.get("find_unused_parameters") is False:
            raise ValueError(
                "RA-CNN's phases train disjoint parameter sets, so DDP needs find_unused_parameters=True: "
                "use --trainer.strategy ddp_find_unused_parameters_true (or 'ddp'), not "
                "find_unused_parameters=False"
            )
        if not kwargs.get("find_unused_parameters"):
            kwargs["find_unused_parameters"] = True
            rank_zero_info("RA-CNN under DDP: find_unused_parameters=True (each phase trains its own parameters)")

    def configure_optimizers(self):
        net = self.net
        cls_params = [*net.trunks.parameters(), *net.classifiers.parameters()]
        if net.fuse is not None:
            cls_params += list(net.fuse.parameters())
        return [self.cls_optimizer(cls_params), self.apn_optimizer(net.apns.parameters())]

    @contextmanager
    def _frozen(self) -> Iterator[None]:
        """Trunks, classifiers and fusion in eval mode within the block (then train mode again),
        so that phases which do not train them (APN pre-training, ranking) leave batch-norm
        statistics untouched too."""
        frozen = [self.net.trunks, self.net.classifiers]
        for m in frozen:
            m.eval()
        try:
            yield
        finally:
            for m in frozen:
                m.train()

    def _frozen_forward(self, images: Tensor) -> RACNNOutput:
        """The forward of the APN phases, under ``_frozen``; pre-training and re-anchoring
        regress boxes on targets and stop after the last APN (``boxes_only``)."""
        targets_only = self.phase in ("pretrain", "reanchor")
        with self._frozen():
            return self.net(images, detach_boxes=targets_only, boxes_only=targets_only)

    def lr_schedule_factor(self) -> float:
        """Multiplier of all learning rates at the current global step (``lr_decay``)."""
        if self.hparams.lr_decay is None or self._trainer is None:
            return 1.0
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total) or total <= 0:
            return 1.0
        t = min(self.global_step / total, 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * t))

    def _step(self, optimizer, loss: Tensor, lr_factor: float = 1.0) -> None:
        """Backward and step of ``optimizer`` (toggled by the caller before the forward)."""
        lr_factor = lr_factor * self.lr_schedule_factor()
        for group in optimizer.param_groups:
            group.setdefault("base_lr", group["lr"])
            group["lr"] = group["base_lr"] * lr_factor
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()

    def pretrain_targets(self, out: RACNNOutput, target: Tensor | None = None) -> list[Tensor]:
        """Per APN, the square (Tensor[B, 3]) centred on the peak (or centroid, see
        ``apn_pretrain_target``) of the channel-summed conv features of the map the APN reads
        (or ``apn_pretrain_features``; for ``"cam"``: of the class activation map of the true
        class ``target`` (Tensor[B])), of side ``apn_pretrain_side`` x the input side, moved
        inside the input."""
        hp = self.hparams
        targets = []
        for s, box in enumerate(out.boxes):
            if hp.apn_pretrain_target == "cam":
                weight = self.net.classifiers[s].weight.detach()[target]  # (B, C)
                f = torch.einsum("bc,bchw->bhw", weight, out.features[s].detach()).clamp(min=0)
            elif hp.apn_pretrain_features in (None, hp.apn_features):  # the map the APN read
                f = out.apn_features[s].detach().sum(1)  # (B, h, w)
            elif hp.apn_pretrain_features == "last":  # the map the classifier read
                f = out.features[s].detach().sum(1)
            else:  # a map the forward did not keep: run the trunk that far again
                with torch.no_grad(), self._frozen():
                    f = self.net.trunk_map(s, out.inputs[s].detach(), hp.apn_pretrain_features).sum(1)
            _, h, w = f.shape
            L = out.inputs[s].shape[-1]
            if hp.apn_pretrain_target == "peak":
                idx = f.flatten(1).argmax(1)
                cx = ((idx % w).to(box.dtype) + 0.5) * L / w
                cy = (torch.div(idx, w, rounding_mode="floor").to(box.dtype) + 0.5) * L / h
            else:
                weight = f if hp.apn_pretrain_target == "cam" else f - f.amin(dim=(1, 2), keepdim=True)
                weight = weight.pow(hp.apn_pretrain_power) + 1e-12  # all-zero maps (no evidence): the centre
                weight = weight / weight.sum(dim=(1, 2), keepdim=True)
                cols = (torch.arange(w, device=f.device, dtype=box.dtype) + 0.5) * L / w
                rows = (torch.arange(h, device=f.device, dtype=box.dtype) + 0.5) * L / h
                cx = (weight.sum(1) * cols).sum(1)
                cy = (weight.sum(2) * rows).sum(1)
            tl = torch.full_like(cx, 0.5 * self.hparams.apn_pretrain_side * L)
            targets.append(torch.stack([cx.clamp(tl, L - tl), cy.clamp(tl, L - tl), tl], dim=1))
        return targets

    def _training_crops(self, phase: str):
        """The ``crop_boxes`` of ``RACNN.forward`` for a classification step (or None)."""
        hp, f = self.hparams, self.hparams.min_side_fraction
        if phase == "warmup" and hp.warmup_boxes == "random":
            def crops(s: int, box: Tensor, L: int) -> Tensor:
                return square_from_unit(torch.rand_like(box), L, f)  # uniform over the APN's range
            return crops
        if hp.cls_box_jitter > 0:
            def crops(s: int, box: Tensor, L: int) -> Tensor:
                noise = torch.randn_like(box) * hp.cls_box_jitter * L
                tl = (box[:, 2] + noise[:, 2]).clamp(0.5 * f * L, 0.5 * L)
                centre = (box[:, :2] + noise[:, :2]).clamp(tl[:, None], (L - tl)[:, None])
                return torch.cat([centre, tl[:, None]], 1)
            return crops
        return None

    def training_step(self, batch, batch_idx: int) -> None:
        opt_cls, opt_apn = self.optimizers()
        # Toggled before the forward: the parameters the phase does not train have
        # requires_grad=False while the graph is built, so the backward computes no gradients for
        # them (APN phases: no weight gradients of the trunks, no backward through scale 1's).
        optimizer = opt_cls if self.phase in ("cls", "warmup") else opt_apn
        with self.toggled_optimizer(optimizer):
            self._phase_step(batch, optimizer)
        self._advance("steps")

    def _phase_step(self, batch, optimizer) -> None:
        """Forward, loss and step of the current phase; ``optimizer`` is the phase's (toggled)."""
        images, target = batch[0], batch[1]
        phase = self.phase
        if phase in ("pretrain", "reanchor"):
            out = self._frozen_forward(images)
            loss = sum(
                F.mse_loss(box / x.shape[-1], t / x.shape[-1])
                for box, t, x in zip(out.boxes, self.pretrain_targets(out, target), out.inputs)
            )
            self._step(optimizer, loss)
            self.log("train/loss_pretrain", loss, prog_bar=True)
        elif phase in ("cls", "warmup"):
            out = self.net(images, detach_boxes=True, crop_boxes=self._training_crops(phase))
            loss = sum(F.cross_entropy(z, target) for z in out.logits)
            loss = loss + F.cross_entropy(out.fused_logits, target)
            self._step(optimizer, loss)
            self.log("train/loss_cls", loss, prog_bar=True)
        else:
            out = self._frozen_forward(images)
            loss = ranking_loss(out.logits, target, self.hparams.margin)
            self._step(optimizer, loss, self.hparams.rank_lr_factor)
            self.log("train/loss_rank", loss, prog_bar=True)
        logged = {"warmup": "cls", "reanchor": "pretrain"}.get(phase, phase)
        self.log("train/phase", float(PHASES.index(logged)))

    def on_train_epoch_end(self) -> None:
        self._advance("epochs")

    def _advance(self, unit: str) -> None:
        hp = self.hparams
        if self.phase in ("warmup", "pretrain", "reanchor"):  # counted in steps
            if unit == "steps":
                self.phase_progress += 1
                if self.phase == "warmup" and self.phase_progress >= hp.warmup_cls_steps:
                    self.phase = "pretrain" if hp.apn_pretrain_steps > 0 else "cls"
                    self.phase_progress = 0
                elif self.phase == "pretrain" and self.phase_progress >= hp.apn_pretrain_steps:
                    self.phase, self.phase_progress = "cls", 0
                elif self.phase == "reanchor" and self.phase_progress >= hp.reanchor_steps:
                    self.phase, self.phase_progress = "rank", 0
            return
        if unit != hp.phase_unit:
            return
        self.phase_progress += 1
        if self.phase_progress >= (hp.cls_length if self.phase == "cls" else hp.rank_length):
            if self.phase == "cls":
                self.phase = "reanchor" if hp.reanchor_steps > 0 else "rank"
            else:
                self.phase = "cls"
            self.phase_progress = 0

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["racnn_phase"] = {"phase": self.phase, "progress": self.phase_progress}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("racnn_phase")
        if state is not None:
            self.phase, self.phase_progress = state["phase"], state["progress"]

    # -- evaluation ------------------------------------------------------------------------
    def image_boxes(self, out: RACNNOutput) -> list[Tensor]:
        """Boxes that make scales 2..N's inputs, in pixels of the images given to the model
        (Tensor[B, 3] each; scale 1's input pixels times ``out.view_scale``)."""
        boxes, outer = [], None
        for s, box in enumerate(out.boxes):
            outer = box * out.view_scale if outer is None else compose_squares(outer, box, out.inputs[s].shape[-1])
            boxes.append(outer)
        return boxes

    def _evaluate(self, batch, split: str) -> None:
        images, target = batch[0], batch[1]
        out = self.net(images)
        metrics = self.metrics[split]
        probs = [z.softmax(-1) for z in out.logits]
        for s, p in enumerate(probs):
            metrics[f"acc_scale{s + 1}"].update(p, target)
        metrics["acc_fused"].update(out.fused_logits, target)
        for s, name in enumerate(self.combos, start=2):
            metrics[f"acc_{name}"].update(torch.stack(probs[:s]).mean(0), target)
        if len(batch) > 2:  # the object's true box (x0, y0, x1, y1) in image pixels
            for s, box in enumerate(self.image_boxes(out), start=2):
                metrics[f"apn_iou_scale{s}"].update(box_iou_pairs(square_to_xyxy(box), batch[2].to(box)))

    def _log_epoch(self, split: str) -> dict[str, float]:
        values = {}
        for name, metric in self.metrics[split].items():
            if isinstance(metric, MeanMetric) and metric.update_count == 0:
                continue
            values[f"{split}/{name}"] = metric.compute()
            metric.reset()
        self.log_dict(values, prog_bar=split == "val")
        return {k: float(v) for k, v in values.items()}

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")  # the paper's table is printed by raccn.callbacks.EvalReportWriter

    def predict_step(self, batch, batch_idx: int) -> dict[str, Tensor | list[Tensor]]:
        """``pred`` (Tensor[B] int64, fused prediction), ``prob`` (Tensor[B], its fused softmax
        probability), ``boxes`` (Tensor[B, N-1, 3], see ``image_boxes``) and ``crops`` (the
        amplified inputs of scales 2..N, list of Tensor[B, C, S_s, S_s])."""
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        out = self.net(images)
        p, pred = out.fused_logits.softmax(-1).max(1)
        return {"pred": pred, "prob": p, "boxes": torch.stack(self.image_boxes(out), 1),
                "crops": list(out.inputs[1:])}
