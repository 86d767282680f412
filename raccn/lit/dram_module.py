"""Training procedure of the Deep Recurrent Attention Model (Ba, Mnih, Kavukcuoglu, ICLR 2015):
the hybrid supervised + REINFORCE loss over label sequences (``raccn.losses.dram_loss``).

Holds the loss settings, optimiser and metrics; the math lives in ``raccn.models.dram``.
Batches are ``(images Tensor[B, C, H, W], targets Tensor[B, S] int64, lengths Tensor[B])``,
targets being the labels then EOS = ``net.num_classes`` (``raccn.datamodules.label_sequences``).

Metrics (public names; accuracies are fractions in [0, 1], errors percentages; definitions in
``raccn.lit.sequence_accuracy``): ``train/loss``, ``train/reward`` (mean reward of the batch's
rollouts), ``val/seq_acc``, ``val/seq_error``, ``val/digit_acc``, ``test/seq_acc``,
``test/seq_error``, ``test/digit_acc`` (true digits read right in their slot, the end not
counted), ``test/len_acc`` (predicted length right) and ``test/seq_acc_len{n}`` (whole-sequence
accuracy among the test numbers of n digits, for each n in 1..S that the test set has).
Prediction is the argmax label of every slot of the softmax averaged over ``mc_samples`` rollouts.
"""

from __future__ import annotations

from typing import Literal

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.rank_zero import rank_zero_info
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor

from raccn.lit.glimpse_training import GlimpseTraining, check_settings
from raccn.lit.sequence_accuracy import SequenceAccuracy, sequence_probability
from raccn.lit.shared_on_copy import shared_on_copy
from raccn.losses import DRAMLoss, dram_loss
from raccn.losses.dram_loss import REWARDS
from raccn.models import DeepRecurrentAttentionModel, SequenceCNN


class DRAMLitModule(GlimpseTraining, pl.LightningModule):
    """DRAM training: the network is injected, this module holds the training settings (the
    checks against the data, ``compile``, logging steps and optimiser: ``GlimpseTraining``, as
    ``RAMLitModule``).

    Args:
        net: the model (LightningCLI: ``model.init_args.net: {class_path: raccn.models.DRAM,
            init_args: {...}}``; ``num_classes`` is linked from the data, ``max_digits`` must
            equal the data's ``max_length``). ``raccn.models.SequenceCNN``, the plain CNN
            baseline, trains here too: its output has no glimpses (T = 0), so the hybrid loss is
            its cross-entropy alone and the scores, report and predictions are DRAM's (leave
            ``mc_samples: 1``: nothing is sampled).
        reward: ``sequence`` (1 if the whole sequence is read right, else 0; the paper's) or
            ``per_label`` (the fraction of the sequence read right up to its first error), see
            ``raccn.losses.dram_loss``.
        reinforce_weight: weight of the REINFORCE term in the hybrid loss.
        mc_samples: M, rollouts whose softmax is averaged at validation, test and prediction
            (paper: Monte Carlo averaging).
        policy_lr_factor: the learning rate of what the REINFORCE term alone trains (the
            emission network, the location LSTM r^(2) and the context network, see
            ``policy_modules``) is the optimiser's times this factor (> 0). At a shared lr the
            noisy policy gradient of the first steps, when hardly any sequence is right, drives
            every glimpse to the image border within a hundred steps, where the classifier learns
            nothing; a factor of about 0.05 keeps the glimpses inside while the classifier learns.
        compile: the training step's forward and loss through ``torch.compile`` (see
            ``RAMLitModule``); validation, test and prediction stay eager.
        optimizer: optimiser factory (LightningCLI ``class_path``/``init_args``).
        scheduler: optional LR scheduler factory, stepped once per epoch.

    Saved hyper-parameters: as ``RAMLitModule`` (a net given as a config is saved with them;
    one built in Python must be passed again to ``load_from_checkpoint``).
    """

    reads_sequences = True  #: predictions are label sequences (read by PredictionWriter)

    def __init__(
        self,
        net: DeepRecurrentAttentionModel | SequenceCNN,
        reward: Literal["sequence", "per_label"] = "sequence",
        reinforce_weight: float = 1.0,
        mc_samples: int = 1,
        policy_lr_factor: float = 1.0,
        compile: bool = False,
        optimizer: OptimizerCallable = torch.optim.Adam,
        scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        check_settings(reinforce_weight, mc_samples, policy_lr_factor)
        if reward not in REWARDS:
            raise ValueError(f"reward must be one of {REWARDS} (model.init_args.reward), got {reward!r}")
        # hyper-parameters: the net only as a config (LightningCLI's, marked "_instantiator")
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])
        if "_instantiator" in self.hparams:
            self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.net = net
        self.optimizer_factory, self.scheduler_factory = shared_on_copy(optimizer), shared_on_copy(scheduler)
        self.val_scores = SequenceAccuracy(net.max_digits, net.eos_index)
        self.test_scores = SequenceAccuracy(net.max_digits, net.eos_index)

    def policy_modules(self) -> tuple:
        """The emission network, the location LSTM r^(2) and the context network: with
        ``policy_grad_to_core`` false (the default) the REINFORCE term alone trains them. Empty
        for a net without a policy (``SequenceCNN``)."""
        if not hasattr(self.net, "locator"):
            return ()
        return (self.net.locator, self.net.location_core, self.net.context_net)

    # -- steps -----------------------------------------------------------------------------
    def training_loss(self, images: Tensor, targets: Tensor) -> DRAMLoss:
        """Forward pass and hybrid loss of one training batch (what ``compile`` compiles).

        Args:
            images (Tensor[B, C, H, W]), targets (Tensor[B, S]) labels then EOS.
        """
        return dram_loss(self.net(images), targets, self.hparams.reinforce_weight, self.hparams.reward)

    def training_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> Tensor:
        images, targets = batch[0], batch[1]
        if self.hparams.compile:
            parts = self.compiled_training_loss(images, targets)
        else:
            parts = self.training_loss(images, targets)
        if self._logs_this_step():
            self.log_dict({"train/loss": parts.loss, "train/reward": parts.reward.mean()}, prog_bar=True)
            self.log_dict({"train/ce": parts.ce, "train/reinforce": parts.reinforce,
                           "train/baseline_mse": parts.baseline})
        return parts.loss

    def validation_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> None:
        probs, _ = self.predict_proba(batch[0])
        self.val_scores.update(probs.argmax(-1), batch[1])

    def on_validation_epoch_end(self) -> None:
        scores = self.val_scores.compute()
        self.val_scores.reset()
        acc = scores["seq_acc"].float()
        self.log_dict({"val/seq_acc": acc, "val/seq_error": 100.0 * (1.0 - acc)}, prog_bar=True)
        self.log("val/digit_acc", scores["digit_acc"].float())

    def test_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> None:
        probs, _ = self.predict_proba(batch[0])
        self.test_scores.update(probs.argmax(-1), batch[1])

    def on_test_epoch_end(self) -> None:
        scores = self.test_scores.compute()
        self.test_scores.reset()
        acc = scores["seq_acc"].float()
        logs = {"test/seq_acc": acc, "test/seq_error": 100.0 * (1.0 - acc),
                "test/digit_acc": scores["digit_acc"].float(), "test/len_acc": scores["len_acc"].float()}
        for n, (value, count) in enumerate(zip(scores["seq_acc_by_length"], scores["count_by_length"]), 1):
            if count > 0:  # lengths the test set has
                logs[f"test/seq_acc_len{n}"] = value.float()
        self.log_dict(logs)
        rank_zero_info(f"DRAM test whole-sequence accuracy: {100.0 * float(acc):.2f} % "
                       f"(error {100.0 * (1.0 - float(acc)):.2f} %)")

    def predict_step(self, batch, batch_idx: int) -> dict[str, Tensor]:
        """``sequence`` (Tensor[B, S], argmax labels then EOS), ``prob`` (Tensor[B], the
        probability of that number: ``raccn.lit.sequence_accuracy.sequence_probability``) and
        ``locations`` (Tensor[B, T, 2], the first rollout's glimpses; absent for a net without
        glimpses)."""
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        probs, out = self.predict_proba(images)
        sequence, p = sequence_probability(probs, self.net.eos_index)
        if not out.locations.shape[1]:
            return {"sequence": sequence, "prob": p}
        return {"sequence": sequence, "prob": p, "locations": out.locations[: images.shape[0]]}
