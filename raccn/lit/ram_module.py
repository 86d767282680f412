"""Training procedure of the Recurrent Attention Model (hybrid supervised + REINFORCE loss).

Holds the losses, optimiser and metrics; the math lives in ``raccn.models.ram``.
Metrics (public names): ``train/loss``, ``train/reward``, ``val/acc``, ``val/error`` (%),
``test/acc``, ``test/error`` (%), ``test/acc_glimpse{t}`` for t = 1..T. Accuracies are
fractions in [0, 1]; errors are percentages.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.rank_zero import rank_zero_info
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from raccn.lit.glimpse_training import GlimpseTraining, check_settings
from raccn.lit.shared_on_copy import shared_on_copy
from raccn.losses import RAMLoss, ram_loss
from raccn.models import RecurrentAttentionModel


class RAMLitModule(GlimpseTraining, pl.LightningModule):
    """RAM training: the network is injected, this module holds the training settings (the
    checks against the data, ``compile``, logging steps and optimiser: ``GlimpseTraining``).

    Args:
        net: the model (LightningCLI: ``model.init_args.net: {class_path:
            raccn.models.RecurrentAttentionModel, init_args: {...}}``; ``num_classes`` is linked
            from the data). The metrics' classes and glimpses are read from it.
        reinforce_weight: weight of the REINFORCE term in the hybrid loss.
        mc_samples: M, rollouts averaged (softmax) at validation/test time (paper: Monte Carlo).
        policy_lr_factor: the location policy's learning rate is the optimiser's times this
            factor (> 0). The policy learns from the noisy REINFORCE term alone; at a large
            shared lr its mean wanders to the image border early on, so a factor below 1 lets
            the rest train fast while the policy moves steadily (0.15 in
            ``configs/ram_mnist.yaml``; docs/RESULTS.md).
        compile: run the training step's forward and loss through ``torch.compile`` (inductor;
            on the CPU it needs a C++ compiler such as gcc). It costs 10-40 s once, at the
            first training step (and once more for a smaller last batch), then makes a step
            10-40 % faster on a 2-core CPU (docs/RESULTS.md); validation, test and prediction stay
            eager. The compiled step draws the glimpse locations from inductor's random number
            generator, so a seeded run is reproducible but differs from an eager one. If
            compiling fails, training warns and continues eagerly.
        optimizer: optimiser factory (LightningCLI ``class_path``/``init_args``).
        scheduler: optional LR scheduler factory, stepped once per epoch.

    Saved hyper-parameters: built by LightningCLI, the run's model config (``net`` as its
    class_path/init_args), from which ``load_from_checkpoint(path)`` and ``train.py test
    --ckpt_path`` rebuild the module. A net built in Python is an object, not a config: it is
    not saved with them (its weights are in the state_dict); pass it again,
    ``RAMLitModule.load_from_checkpoint(path, net=RecurrentAttentionModel(...))``.
    """

    def __init__(
        self,
        net: RecurrentAttentionModel,
        reinforce_weight: float = 1.0,
        mc_samples: int = 1,
        policy_lr_factor: float = 1.0,
        compile: bool = False,
        optimizer: OptimizerCallable = torch.optim.Adam,
        scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        check_settings(reinforce_weight, mc_samples, policy_lr_factor)
        # hyper-parameters (see the class docstring): the net only as a config, which LightningCLI
        # gives (marking it with its key "_instantiator"); an object built in Python is left out
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])
        if "_instantiator" in self.hparams:
            self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.net = net
        self.optimizer_factory, self.scheduler_factory = shared_on_copy(optimizer), shared_on_copy(scheduler)
        self.val_acc = MulticlassAccuracy(net.num_classes, average="micro")
        self.test_acc = nn.ModuleList(
            MulticlassAccuracy(net.num_classes, average="micro") for _ in range(net.glimpses)
        )

    # -- steps -----------------------------------------------------------------------------
    def training_loss(self, images: Tensor, target: Tensor) -> RAMLoss:
        """Forward pass and hybrid loss of one training batch (what ``compile`` compiles).

        Args:
            images (Tensor[B, C, H, W]), target (Tensor[B]) class indices.
        """
        out = self.net(images)
        return ram_loss(out.logits[:, -1], target, out.log_pi, out.baselines, self.hparams.reinforce_weight)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, target = batch
        if self.hparams.compile:
            parts = self.compiled_training_loss(images, target)
        else:
            parts = self.training_loss(images, target)
        loss = parts.loss
        if self._logs_this_step():
            self.log_dict({"train/loss": loss, "train/reward": parts.reward.mean()}, prog_bar=True)
            self.log_dict({"train/ce": parts.ce, "train/reinforce": parts.reinforce, "train/baseline_mse": parts.baseline})
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        images, target = batch
        probs, _ = self.predict_proba(images)
        self.val_acc.update(probs[:, -1], target)

    def on_validation_epoch_end(self) -> None:
        acc = self.val_acc.compute()
        self.val_acc.reset()
        self.log_dict({"val/acc": acc, "val/error": 100.0 * (1.0 - acc)}, prog_bar=True)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        images, target = batch
        probs, _ = self.predict_proba(images)
        for t, metric in enumerate(self.test_acc):
            metric.update(probs[:, t], target)

    def on_test_epoch_end(self) -> None:
        accs = [metric.compute() for metric in self.test_acc]
        for metric in self.test_acc:
            metric.reset()
        logs = {"test/acc": accs[-1], "test/error": 100.0 * (1.0 - accs[-1])}
        logs.update({f"test/acc_glimpse{t + 1}": acc for t, acc in enumerate(accs)})
        self.log_dict(logs)
        rank_zero_info(f"RAM test accuracy: {100.0 * float(accs[-1]):.2f} %")

    def predict_step(self, batch, batch_idx: int) -> dict[str, Tensor]:
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        probs, out = self.predict_proba(images)
        p, pred = probs[:, -1].max(dim=1)
        return {"pred": pred, "prob": p, "locations": out.locations[: images.shape[0]]}
