"""RA-CNN training: APN pre-training, then alternating optimisation (Fu et al. 2017, §3.4).

The module receives its network (``net``, a ``raccn.models.RACNN``) and holds the procedure;
manual optimisation with two optimisers (``raccn.lit.staged_training``), phases from
``raccn.lit.phase_schedule``:

- ``pretrain`` (``apn_pretrain_steps``): each APN regresses the square of side
  ``apn_pretrain_side`` x input centred on the peak of its trunk's channel-summed last conv
  response (``raccn.losses.apn_pretrain``); trunks frozen.
- ``cls``: APNs frozen, boxes detached; trunks, classifiers and fusion trained with the sum of
  the per-scale cross-entropies plus the fused one (``cls_optimizer``).
- ``rank``: trunks, classifiers and fusion frozen; the APNs trained with the pairwise ranking
  loss (``apn_optimizer``, learning rates x ``rank_lr_factor``) through the net's cropper: the
  zoom's boxcar mask (and its sampling grid with the net's ``grid_grad``), or with
  ``cropper="stn"`` the spatial transformer's sampling grid (``raccn.ops.stn_zoom``).

``cls`` and ``rank`` alternate, ``cls_length`` / ``rank_length`` steps or epochs each
(``phase_unit``). Learning rates follow one ``LambdaLR`` per optimiser, stepped every training
step: the ranking phases' factor and the optional cosine decay. A checkpoint holds both
optimisers and both schedulers; the phase is a function of the global step.

``extras`` (``RecipeExtras``) groups what the embedded proxy's recipe adds to the paper's (trunks
trained from scratch on CPU): a classification warm-up, re-anchoring phases, jittered crops and
other pre-training targets. Its defaults add nothing.

Metrics: ``train/loss_cls``, ``train/loss_rank``, ``train/loss_pretrain``, ``train/phase``
(0 pretrain and reanchor, 1 cls and warmup, 2 rank); ``{val,test}/acc_scale{s}``,
``{val,test}/acc_fused``, ``{val,test}/acc_scale1+2[+3...]`` (softmax average of scales 1..s),
``{val,test}/ranked_scale{s}`` (fraction of images whose true-class probability at scale s beats
scale s-1's by the margin: the ranking loss's hinge met), and, when batches carry the object's true box, ``{val,test}/apn_iou_scale{s}`` (IoU of the box
that makes scale s's input, in image pixels). Accuracies are fractions in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, replace

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.cli import OptimizerCallable
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from raccn.lit.phase_schedule import PhaseSchedule
from raccn.lit.recipe_extras import NO_EXTRAS, RecipeExtras
from raccn.lit.shared_on_copy import shared_on_copy
from raccn.lit.staged_training import StagedTraining, cosine_factor, eval_mode
from raccn.losses import ranking_loss
from raccn.losses.apn_pretrain import pretrain_squares
from raccn.losses.ranking import check_margin
from raccn.models.apn import square_from_unit
from raccn.models.racnn import RACNN, RACNNOutput
from raccn.ops.boxes import box_iou_pairs, compose_squares, square_to_xyxy

CROPS = ("apn", "centre", "random", "heuristic")
LOGGED_PHASE = {"pretrain": 0, "reanchor": 0, "warmup": 1, "cls": 1, "rank": 2}  # train/phase


def _sgd(params):
    return torch.optim.SGD(params, lr=1e-3, momentum=0.9)


def _adam(params):
    return torch.optim.Adam(params, lr=1e-4)


class RACNNLitModule(StagedTraining, pl.LightningModule):
    """Args:
        net: the network (``raccn.models.RACNN``); the module reads its classes and scales.
        margin: ranking-loss margin (paper: 0.05), >= 0.
        apn_pretrain_steps: steps of APN pre-training before the alternation (0: none).
        apn_pretrain_side: side of the pre-training square, fraction of the input (paper: 0.5).
        phase_unit: ``"steps"`` or ``"epochs"``: unit of ``cls_length`` and ``rank_length``.
        cls_length, rank_length: length of each classification / ranking phase (>= 1).
        rank_lr_factor: the APN optimiser's learning rates are multiplied by this in ranking
            phases (pre-training uses them as given), in [0, 1]; 0: the ranking phases compute
            and log the ranking loss but never move the APNs (no gradient, optimiser state
            untouched).
        cls_optimizer: optimiser factory for trunks, classifiers and fusion.
        apn_optimizer: optimiser factory for the APNs.
        lr_decay: ``None`` (constant learning rates) or ``"cosine"``: every learning rate follows
            ``0.5 (1 + cos(pi t / T))`` of its value, t the global step and T the run's total
            steps (``trainer.estimated_stepping_batches``).
        extras: ``RecipeExtras``, additions to the paper's recipe.
        crop: what crops the finer scales, in training and evaluation: ``"apn"`` (the APNs'
            boxes: RA-CNN) or, as ablations that take the APNs out, squares of side
            ``apn_pretrain_side`` at the input's ``"centre"``, at a uniformly ``"random"`` place,
            or on the pre-training target of the current trunk (``"heuristic"``: the same
            saliency heuristic the APNs pre-train on, applied directly). The warm-up's random
            boxes (``extras.warmup_boxes``) apply whatever this is.
    """

    automatic_optimization = False
    ddp_reason = ("RA-CNN's phases train disjoint parameter sets (no APN gradients in a classification "
                  "step, no trunk gradients in an APN step)")

    def __init__(
        self,
        net: RACNN,
        margin: float = 0.05,
        apn_pretrain_steps: int = 0,
        apn_pretrain_side: float = 0.5,
        phase_unit: str = "steps",
        cls_length: int = 100,
        rank_length: int = 100,
        rank_lr_factor: float = 1.0,
        cls_optimizer: OptimizerCallable = _sgd,
        apn_optimizer: OptimizerCallable = _adam,
        lr_decay: str | None = None,
        extras: RecipeExtras = NO_EXTRAS,
        crop: str = "apn",
    ) -> None:
        super().__init__()
        check_margin(margin)
        if not 0.0 < apn_pretrain_side <= 1.0:
            raise ValueError(f"apn_pretrain_side must be in (0, 1] (paper: 0.5), got {apn_pretrain_side!r}")
        if not 0.0 <= rank_lr_factor <= 1.0:
            raise ValueError(f"rank_lr_factor must be in [0, 1] (0: ranking never moves the APNs), got "
                             f"{rank_lr_factor!r}")
        if lr_decay not in (None, "cosine"):
            raise ValueError(f"lr_decay must be null or 'cosine', got {lr_decay!r}")
        if crop not in CROPS:
            raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")
        if isinstance(extras, Mapping):  # from a checkpoint's hyper-parameters
            extras = RecipeExtras(**extras)
        self.schedule = PhaseSchedule(cls_length, rank_length, phase_unit, apn_pretrain_steps,
                                      extras.warmup_steps, extras.reanchor_steps)
        # LightningCLI gives the configuration as the hyper-parameters, ``net`` as its class_path
        # and init_args, so that ``load_from_checkpoint(path)`` rebuilds the network. A network
        # built in Python is no hyper-parameter: ``load_from_checkpoint(path, net=...)``.
        self.save_hyperparameters(ignore=["net", "cls_optimizer", "apn_optimizer"])
        if "_instantiator" in self.hparams:
            self.save_hyperparameters(ignore=["cls_optimizer", "apn_optimizer"])
        self.hparams["extras"] = asdict(extras)  # plain values in checkpoints
        self.net, self.extras = net, extras
        self.cls_optimizer, self.apn_optimizer = shared_on_copy(cls_optimizer), shared_on_copy(apn_optimizer)
        n = net.num_scales
        self.combos = [f"scale{'+'.join(str(i + 1) for i in range(s + 1))}" for s in range(1, n)]
        acc = lambda: MulticlassAccuracy(net.num_classes, average="micro")
        self.metrics = nn.ModuleDict({
            split: nn.ModuleDict(
                {f"acc_scale{s + 1}": acc() for s in range(n)}
                | {"acc_fused": acc()}
                | {f"acc_{c}": acc() for c in self.combos}
                | {f"apn_iou_scale{s + 1}": MeanMetric() for s in range(1, n)}
                | {f"ranked_scale{s + 1}": MeanMetric() for s in range(1, n)}
            )
            for split in ("val", "test")
        })

    # -- optimisation ----------------------------------------------------------------------
    def configure_optimizers(self):
        net = self.net
        cls_params = [*net.trunks.parameters(), *net.classifiers.parameters()]
        if net.fuse is not None:
            cls_params += list(net.fuse.parameters())
        optimizers = [self.cls_optimizer(cls_params), self.apn_optimizer(net.apns.parameters())]
        hp = self.hparams
        total = self.trainer.estimated_stepping_batches if hp.lr_decay is not None else math.inf  # T

        def decay(step: int) -> float:
            return cosine_factor(step, total)

        def apn(step: int) -> float:
            return (hp.rank_lr_factor if self.schedule.at(step).name == "rank" else 1.0) * decay(step)

        return optimizers, [LambdaLR(optimizers[0], decay), LambdaLR(optimizers[1], apn)]

    def on_train_start(self) -> None:
        if self.schedule.unit == "epochs":  # the training set is loaded now
            self.schedule = replace(self.schedule, steps_per_epoch=self.trainer.num_training_batches)

    @contextmanager
    def _frozen(self) -> Iterator[None]:
        """Trunks and classifiers in eval mode within the block (then back in the mode they were
        in), so that phases which do not train them (APN pre-training, ranking) leave batch-norm
        statistics untouched too."""
        with eval_mode(self.net.trunks, self.net.classifiers):
            yield

    def _frozen_forward(self, images: Tensor, targets_only: bool) -> RACNNOutput:
        """The forward of the APN phases; pre-training and re-anchoring (``targets_only``)
        regress boxes on targets and stop after the last APN."""
        with self._frozen():
            return self.net(images, detach_boxes=targets_only, boxes_only=targets_only)

    def pretrain_targets(self, out: RACNNOutput, target: Tensor | None = None) -> list[Tensor]:
        """Per APN, its pre-training square (Tensor[B, 3], pixels of its input): see
        ``apn_pretrain_side`` and ``extras``; ``target`` (Tensor[B]), the true classes, for
        ``"cam"``."""
        ex, targets = self.extras, []
        for s in range(len(out.boxes)):
            if ex.pretrain_target == "cam":
                weight = self.net.classifiers[s].weight.detach()[target]  # (B, C)
                f = torch.einsum("bc,bchw->bhw", weight, out.features[s].detach()).clamp(min=0)
            elif ex.pretrain_features in (None, "last"):  # the map the APN read
                f = out.features[s].detach().sum(1)  # (B, h, w)
            else:  # a map the forward did not keep: run the trunk that far again
                with torch.no_grad(), self._frozen():
                    f = self.net.trunk_map(s, out.inputs[s].detach(), ex.pretrain_features).sum(1)
            if ex.pretrain_target == "centroid":
                f = f - f.amin(dim=(1, 2), keepdim=True)
            centre = "peak" if ex.pretrain_target == "peak" else "centroid"
            targets.append(pretrain_squares(f, out.inputs[s].shape[-1], self.hparams.apn_pretrain_side,
                                            centre, ex.pretrain_power))
        return targets

    def _ablation_crops(self, images: Tensor):
        """The ``crop_boxes`` of ``RACNN.forward`` for ``crop`` other than ``"apn"`` (else
        None); each scale's squares are drawn once per batch, so they can be scored."""
        mode, side = self.hparams.crop, self.hparams.apn_pretrain_side
        if mode == "apn":
            return None
        if mode == "heuristic":
            with torch.no_grad(), self._frozen():
                targets = self.pretrain_targets(self.net(images, boxes_only=True))
            return lambda s, box, L: targets[s]
        drawn: dict[int, Tensor] = {}

        def crops(s: int, box: Tensor, L: int) -> Tensor:
            if s not in drawn:
                u = torch.full_like(box, 0.5) if mode == "centre" else torch.rand_like(box)
                tl = torch.full_like(box[:, 2:], 0.5 * side * L)
                drawn[s] = torch.cat([tl + (L - 2 * tl) * u[:, :2], tl], 1)
            return drawn[s]
        return crops

    def _training_crops(self, phase: str, images: Tensor):
        """The ``crop_boxes`` of ``RACNN.forward`` for a classification step (or None)."""
        ex, f = self.extras, self.net.min_side_fraction
        if self.hparams.crop != "apn" and not (phase == "warmup" and ex.warmup_boxes == "random"):
            return self._ablation_crops(images)
        if phase == "warmup" and ex.warmup_boxes == "random":
            def crops(s: int, box: Tensor, L: int) -> Tensor:
                return square_from_unit(torch.rand_like(box), L, f)  # uniform over the APN's range
            return crops
        if ex.box_jitter > 0:
            def crops(s: int, box: Tensor, L: int) -> Tensor:
                noise = torch.randn_like(box) * ex.box_jitter * L
                tl = (box[:, 2] + noise[:, 2]).clamp(0.5 * f * L, 0.5 * L)
                centre = (box[:, :2] + noise[:, :2]).clamp(tl[:, None], (L - tl)[:, None])
                return torch.cat([centre, tl[:, None]], 1)
            return crops
        return None

    def training_step(self, batch, batch_idx: int) -> None:
        phase = self.schedule.at(self.global_step).name
        opt_cls, opt_apn = self.optimizers()
        # Toggled before the forward: the parameters the phase does not train have
        # requires_grad=False while the graph is built, so the backward computes no gradients for
        # them (APN phases: no weight gradients of the trunks, no backward through scale 1's).
        optimizer = opt_cls if phase in ("warmup", "cls") else opt_apn
        with self.toggled_optimizer(optimizer):
            self._phase_step(batch, phase, optimizer)
        self._step_schedulers()

    def _phase_step(self, batch, phase: str, optimizer) -> None:
        """Forward, loss and step of ``phase``; ``optimizer`` is the phase's (toggled)."""
        images, target = batch[0], batch[1]
        if phase in ("pretrain", "reanchor"):
            out = self._frozen_forward(images, targets_only=True)
            loss = sum(
                F.mse_loss(box / x.shape[-1], t / x.shape[-1])
                for box, t, x in zip(out.boxes, self.pretrain_targets(out, target), out.inputs)
            )
            self._step(optimizer, loss)
            self.log("train/loss_pretrain", loss, prog_bar=True)
        elif phase in ("warmup", "cls"):
            out = self.net(images, detach_boxes=True, crop_boxes=self._training_crops(phase, images))
            loss = sum(F.cross_entropy(z, target) for z in out.logits) + F.cross_entropy(out.fused_logits, target)
            self._step(optimizer, loss)
            self.log("train/loss_cls", loss, prog_bar=True)
        else:
            out = self._frozen_forward(images, targets_only=False)
            loss = ranking_loss(out.logits, target, self.hparams.margin)
            self._step(optimizer, loss if self.hparams.rank_lr_factor > 0 else None)
            self.log("train/loss_rank", loss, prog_bar=True)
        self.log("train/phase", float(LOGGED_PHASE[phase]))

    # -- evaluation ------------------------------------------------------------------------
    def image_boxes(self, out: RACNNOutput) -> list[Tensor]:
        """Boxes that make scales 2..N's inputs, in pixels of the images given to the model
        (Tensor[B, 3] each; scale 1's input pixels times ``out.view_scale``)."""
        boxes, outer = [], None
        for s, box in enumerate(out.boxes):
            outer = box * out.view_scale if outer is None else compose_squares(outer, box, out.inputs[s].shape[-1])
            boxes.append(outer)
        return boxes

    def _evaluation_forward(self, images: Tensor) -> RACNNOutput:
        """The forward of evaluation and prediction; with ``crop`` other than ``"apn"``, the
        output's ``boxes`` are the squares that cropped (so IoU and pictures show them)."""
        crops = self._ablation_crops(images)
        out = self.net(images, crop_boxes=crops)
        if crops is None:
            return out
        return out._replace(boxes=[crops(s, b, x.shape[-1]) for s, (b, x) in enumerate(zip(out.boxes, out.inputs))])

    def _evaluate(self, batch, split: str) -> None:
        images, target = batch[0], batch[1]
        out = self._evaluation_forward(images)
        metrics = self.metrics[split]
        probs = [z.softmax(-1) for z in out.logits]
        p_true = [p.gather(1, target[:, None])[:, 0] for p in probs]  # (B,) per scale
        for s, p in enumerate(probs):
            metrics[f"acc_scale{s + 1}"].update(p, target)
            if s > 0:  # the ranking loss's hinge met: p_t(s) >= p_t(s-1) + margin
                metrics[f"ranked_scale{s + 1}"].update((p_true[s] >= p_true[s - 1] + self.hparams.margin).float())
        metrics["acc_fused"].update(out.fused_logits, target)
        for s, name in enumerate(self.combos, start=2):
            metrics[f"acc_{name}"].update(torch.stack(probs[:s]).mean(0), target)
        if len(batch) > 2:  # the object's true box (x0, y0, x1, y1) in image pixels
            for s, box in enumerate(self.image_boxes(out), start=2):
                metrics[f"apn_iou_scale{s}"].update(box_iou_pairs(square_to_xyxy(box), batch[2].to(box)))

    def predict_step(self, batch, batch_idx: int) -> dict[str, Tensor | list[Tensor]]:
        """``pred`` (Tensor[B] int64, fused prediction), ``prob`` (Tensor[B], its fused softmax
        probability), ``boxes`` (Tensor[B, N-1, 3], see ``image_boxes``) and ``crops`` (the
        amplified inputs of scales 2..N, list of Tensor[B, C, S_s, S_s])."""
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        out = self._evaluation_forward(images)
        p, pred = out.fused_logits.softmax(-1).max(1)
        return {"pred": pred, "prob": p, "boxes": torch.stack(self.image_boxes(out), 1),
                "crops": list(out.inputs[1:])}
