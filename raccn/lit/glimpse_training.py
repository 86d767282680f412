"""What the training procedures of the glimpse models (RAM, DRAM) share: the checks of the
injected network against the data, the ``compile`` seam of the training loss, logging only at
Lightning's logging steps, and the optimiser with the location policy's own learning rate.

A mixin, so that each LightningModule keeps its own signature (read by LightningCLI) and its
own metrics; it expects ``self.net`` (with ``glimpse_net.patch_size``, ``in_channels`` and
``locator``), ``self.hparams.compile`` / ``policy_lr_factor``, ``self.optimizer_factory``,
``self.scheduler_factory`` and a method ``training_loss(*batch_tensors)``.
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import Callable
from typing import NamedTuple

import torch
from lightning_fabric.utilities.rank_zero import rank_zero_warn
from torch import Tensor


def check_settings(reinforce_weight: float, mc_samples: int, policy_lr_factor: float) -> None:
    """``ValueError`` naming the first setting out of range."""
    if not isinstance(mc_samples, int) or mc_samples < 1:
        raise ValueError(f"mc_samples must be an integer >= 1, got {mc_samples!r}")
    if reinforce_weight < 0:
        raise ValueError(f"reinforce_weight must be >= 0, got {reinforce_weight!r}")
    if not policy_lr_factor > 0:
        raise ValueError(
            f"policy_lr_factor must be > 0 (it multiplies the optimiser's lr for the "
            f"location policy; 1 = same lr), got {policy_lr_factor!r}"
        )


def missing_cxx_compiler() -> str | None:
    """Why torch.compile's default backend (inductor) cannot build CPU kernels here, or ``None``:
    none of the C++ compilers it would use (``torch._inductor.config.cpp.cxx``: ``$CXX``, else
    ``g++``) is on ``PATH``."""
    from torch._inductor import config

    cxx = config.cpp.cxx if isinstance(config.cpp.cxx, (list, tuple)) else (config.cpp.cxx,)
    names = [c for c in cxx if c]
    if not names or any(shutil.which(c) for c in names):
        return None  # (None alone: inductor's own search, e.g. a conda install of g++)
    return f"no C++ compiler found: {', '.join(names)} not found (set CXX to one)"


@functools.cache
def compiled(training_loss: Callable) -> Callable:
    """``training_loss`` (an unbound method) through ``torch.compile``, made at its first use
    (making it imports the compiler, about a second) and shared by every module of the class,
    which it takes as its first argument (so copies and pickles of a module carry no compiled
    function)."""
    return torch.compile(training_loss)


class GlimpseTraining:
    """Mixin of ``RAMLitModule`` and ``DRAMLitModule`` (module docstring)."""

    _compile_failed = False  # compile=True: set when torch.compile fails, then eager

    def forward(self, images: Tensor, deterministic: bool = False):
        """The network's rollout (``deterministic``: the policy's mean locations)."""
        return self.net(images, deterministic)

    def predict_proba(self, images: Tensor) -> tuple[Tensor, NamedTuple]:
        """Softmax averaged over M = ``mc_samples`` rollouts (one batched forward).

        Args:
            images (Tensor[B, C, H, W]).

        Returns:
            (probs Tensor[B, T, K] for RAM's T glimpses or Tensor[B, S, K] for DRAM's S label
            slots, the network's output of the B*M rollouts, rollout-major).
        """
        M, B = self.hparams.mc_samples, images.shape[0]
        out = self.net(images.repeat(M, 1, 1, 1) if M > 1 else images)
        probs = out.logits.softmax(-1).view(M, B, *out.logits.shape[1:]).mean(0)
        return probs, out

    def setup(self, stage: str) -> None:
        """Fail before training when the network does not fit the data: a patch larger than the
        images, another channel count, (DRAM) another number of label slots."""
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        size = getattr(dm, "image_size", None)
        patch_size = getattr(getattr(self.net, "glimpse_net", None), "patch_size", None)  # None: no glimpses
        if size is not None and patch_size is not None and patch_size > min(size):
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
        slots, length = getattr(self.net, "max_digits", None), getattr(dm, "max_length", None)
        if slots is not None and length is not None and slots != length:
            raise ValueError(
                f"the model reads {slots} label slots but the data's targets have {length}: set "
                f"model.init_args.net.init_args.max_digits: {length} (or data.init_args.max_length: {slots})"
            )

    def compiled_training_loss(self, *batch):
        """``training_loss`` through ``torch.compile`` (``compile=True``); eager, with a warning,
        once compiling has failed (no C++ compiler, an unsupported op, ...). On CPU a missing C++
        compiler is found before compiling: inductor would trace and lower the whole loss first,
        tens of seconds, only to fail at building its first kernel."""
        if not self._compile_failed and self.device.type == "cpu" and (why := missing_cxx_compiler()):
            rank_zero_warn(f"model.compile: torch.compile failed ({why}); training continues eagerly. "
                           "Install a C++ compiler (gcc or clang) or set model.init_args.compile: false "
                           "to silence this.")
            self._compile_failed = True
        if not self._compile_failed:
            try:
                return compiled(type(self).training_loss)(self, *batch)
            except Exception as err:  # noqa: BLE001 -- whatever the compiler raises
                rank_zero_warn(
                    f"model.compile: torch.compile failed ({type(err).__name__}: {str(err).splitlines()[0][:300]}); "
                    f"training continues eagerly. Install a C++ compiler (gcc or clang) or set "
                    f"model.init_args.compile: false to silence this."
                )
                self._compile_failed = True
        return self.training_loss(*batch)

    def _logs_this_step(self) -> bool:
        """True at the steps where Lightning writes step metrics to the loggers: every
        ``trainer.log_every_n_steps`` optimizer steps, at the last one, and in a fast dev run.
        Step metrics logged at other steps are never written, and logging at every step costs
        Lightning more than 10 % of a 28x28 RAM step in bookkeeping (docs/RESULTS.md), so the
        training step logs only then. Read from the trainer's public state."""
        trainer = self.trainer
        if trainer.fast_dev_run:
            return True
        n = trainer.log_every_n_steps
        return n > 0 and ((trainer.global_step + 1) % n == 0 or trainer.should_stop)

    def policy_modules(self) -> tuple:
        """The parts of the net trained by the REINFORCE term alone, which ``policy_lr_factor``
        slows down: here the location network ``net.locator``."""
        return (self.net.locator,)

    def configure_optimizers(self):
        """Two parameter groups: everything, then ``policy_modules()`` at the optimiser's lr
        times ``policy_lr_factor``; the scheduler (if any) steps once per epoch."""
        policy = [p for module in self.policy_modules() for p in module.parameters()]
        ids = {id(p) for p in policy}
        rest = [p for p in self.parameters() if id(p) not in ids]
        optimizer = self.optimizer_factory([{"params": rest}, {"params": policy}])
        optimizer.param_groups[1]["lr"] *= self.hparams.policy_lr_factor
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer), "interval": "epoch"}}
