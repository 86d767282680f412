"""Training procedure of the Recurrent Attention Model (hybrid supervised + REINFORCE loss).

Holds the losses, optimiser and metrics; the math lives in ``raccn.models.ram``.
Metrics (public names): ``train/loss``, ``train/reward``, ``val/acc``, ``val/error`` (%),
``test/acc``, ``test/error`` (%), ``test/acc_glimpse{t}`` for t = 1..T. Accuracies are
fractions in [0, 1]; errors are percentages.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.rank_zero import rank_zero_info, rank_zero_warn
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from raccn.losses import RAMLoss, ram_loss
from raccn.models import RAMOutput, RecurrentAttentionModel
from raccn.ops.glimpse import GlimpseSource


class RAMLitModule(pl.LightningModule):
    """RAM training: the network is injected, this module holds the training settings.

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
            eager. The glimpse planes are made eagerly and passed in, so the forward and the
            loss are one graph. The compiled step draws the glimpse locations from inductor's
            random number generator, so a seeded run is reproducible but differs from an eager
            one. If compiling fails, training warns and continues eagerly.
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
        if not isinstance(mc_samples, int) or mc_samples < 1:
            raise ValueError(f"mc_samples must be an integer >= 1, got {mc_samples!r}")
        if reinforce_weight < 0:
            raise ValueError(f"reinforce_weight must be >= 0, got {reinforce_weight!r}")
        if not policy_lr_factor > 0:
            raise ValueError(
                f"policy_lr_factor must be > 0 (it multiplies the optimiser's lr for the "
                f"location policy; 1 = same lr), got {policy_lr_factor!r}"
            )
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])
        if "_instantiator" in self.hparams:  # LightningCLI's config (its marker key): net's too
            self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.net = net
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.val_acc = MulticlassAccuracy(net.num_classes, average="micro")
        self.test_acc = nn.ModuleList(
            MulticlassAccuracy(net.num_classes, average="micro") for _ in range(net.glimpses)
        )

    # -- checks before anything runs -------------------------------------------------------
    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        size = getattr(dm, "image_size", None)
        patch_size = self.net.glimpse_net.patch_size
        if size is not None and patch_size > min(size):
            H, W = size
            raise ValueError(
                f"model.init_args.net.init_args.patch_size={patch_size} is larger than the data's "
                f"{H}x{W} images: choose patch_size <= {min(H, W)} (paper: 8 for 28x28, 12 for 60x60)"
            )
        channels = getattr(dm, "num_channels", None)
        if channels is not None and channels != self.net.in_channels:
            raise ValueError(
                f"the model takes {self.net.in_channels} channel(s) but the data has {channels}: "
                f"set model.init_args.net.init_args.in_channels: {channels}"
            )

    # -- steps -----------------------------------------------------------------------------
    def forward(self, images: Tensor, deterministic: bool = False) -> RAMOutput:
        return self.net(images, deterministic)

    def predict_proba(self, images: Tensor) -> tuple[Tensor, RAMOutput]:
        """Softmax averaged over M rollouts, per step.

        Args:
            images (Tensor[B, C, H, W]).

        Returns:
            (probs Tensor[B, T, K], the RAMOutput of the B*M rollouts, rollout-major).
        """
        M, B = self.hparams.mc_samples, images.shape[0]
        out = self.net(images.repeat(M, 1, 1, 1) if M > 1 else images)
        probs = out.logits.softmax(-1).view(M, B, *out.logits.shape[1:]).mean(0)
        return probs, out

    def training_loss(self, images: Tensor, target: Tensor, source: GlimpseSource | None = None) -> RAMLoss:
        """Forward pass and hybrid loss of one training batch (what ``compile`` compiles).

        Args:
            images (Tensor[B, C, H, W]), target (Tensor[B]) class indices.
            source (GlimpseSource, optional): the glimpse planes of ``images``
                (``self.net.glimpse_net.prepare(images)``); made by the forward when None.
        """
        out = self.net(images, source=source, logits_grad="last")  # the loss reads the last step only
        return ram_loss(out.logits[:, -1], target, out.log_pi, out.baselines, self.hparams.reinforce_weight)

    def _compiled_training_loss(self, images: Tensor, target: Tensor) -> RAMLoss:
        """``training_loss`` through ``torch.compile``, compiled at the first call; eager (with
        a warning) if compiling fails."""
        fn = self.__dict__.get("_compiled_loss")
        if fn is None:
            fn = self.__dict__["_compiled_loss"] = torch.compile(self.training_loss)
        if fn == self.training_loss:  # compiling failed before: eager
            return fn(images, target)
        # The glimpse planes are made eagerly and passed in, so the forward and the loss compile
        # into one graph (made inside, they would break it: raccn.ops.prepare_glimpses).
        source = self.net.glimpse_net.prepare(images)
        try:
            return fn(images, target, source)
        except Exception as err:  # noqa: BLE001 -- a missing C++ compiler, an unsupported op, ...
            rank_zero_warn(
                f"model.compile: torch.compile failed ({type(err).__name__}: {str(err).splitlines()[0][:300]}); "
                f"training continues eagerly. Install a C++ compiler (gcc or clang) or set "
                f"model.init_args.compile: false to silence this."
            )
            self.__dict__["_compiled_loss"] = self.training_loss
            return self.training_loss(images, target)

    def __getstate__(self) -> dict:
        # A compiled function is not copied or pickled (EMA copies, checkpoints, spawn): a copy
        # compiles its own at its first training step.
        state = super().__getstate__()
        state.pop("_compiled_loss", None)
        return state

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, target = batch
        if self.hparams.compile:
            parts = self._compiled_training_loss(images, target)
        else:
            parts = self.training_loss(images, target)
        loss = parts.loss
        if self._logs_this_step():
            self.log_dict({"train/loss": loss, "train/reward": parts.reward.mean()}, prog_bar=True)
            self.log_dict({"train/ce": parts.ce, "train/reinforce": parts.reinforce, "train/baseline_mse": parts.baseline})
        return loss

    def _logs_this_step(self) -> bool:
        """True at the steps where Lightning writes step metrics to the loggers (every
        ``trainer.log_every_n_steps``). Step metrics logged at other steps are never written,
        and each ``self.log`` costs Lightning about a millisecond of bookkeeping, 15 % of a
        28x28 RAM step (docs/RESULTS.md), so the training step logs only then."""
        connector = getattr(self._trainer, "_logger_connector", None)
        return True if connector is None else bool(connector.should_update_logs)

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

    def configure_optimizers(self):
        policy = list(self.net.locator.parameters())
        ids = {id(p) for p in policy}
        rest = [p for p in self.parameters() if id(p) not in ids]
        optimizer = self.optimizer_factory([{"params": rest}, {"params": policy}])
        optimizer.param_groups[1]["lr"] *= self.hparams.policy_lr_factor
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer), "interval": "epoch"}}
