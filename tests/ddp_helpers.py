"""A callback for the DDP tests (importable by a ``train.py`` subprocess: ``class_path:
ddp_helpers.RankRecord`` with tests/ on ``PYTHONPATH``)."""

from __future__ import annotations

import copy
import os

import torch
from pytorch_lightning.callbacks import Callback

from raccn.callbacks import EvalReportWriter
from raccn.callbacks.attention_pictures import AttentionPictureCallback


class RankRecord(Callback):
    """Saves, per process, ``<folder>/rank<r>.pt`` at the end of ``fit``: the global step and
    the optimisers' states at the start of training (after a checkpoint was restored), the
    weights at the end of training (after every callback's ``on_train_end``), the indices of the
    training images it read in its last epoch, the files its picture and report callbacks wrote
    (their ``written`` lists), per training step ``(global step, the phase the module's schedule
    gives, the logged train/phase)`` (modules with a ``schedule``: RA-CNN), and of the last
    validation: the indices of its share of the validation set, the global CPU generator's state
    before each batch (what RAM's sampled glimpses drew from), the weights it used and the
    metrics logged; ``<folder>/rank<r>_test.pt`` at the end of ``test``: the written lists
    again."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.seen: list[int] = []
        self.size = 0
        self.phases: list[tuple[int, str, float]] = []
        self._phase: tuple[int, str] | None = None
        self.val: dict = {}
        self.start: dict = {}

    def on_train_start(self, trainer, pl_module) -> None:  # after a checkpoint has been restored
        self.start = {"global_step": trainer.global_step,
                      "optimizers": [copy.deepcopy(opt.state_dict()) for opt in trainer.optimizers]}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0:  # this process's share of the epoch, in its order
            self.seen = list(iter(trainer.train_dataloader.sampler))
            self.size = len(trainer.train_dataloader.dataset)
        schedule = getattr(pl_module, "schedule", None)
        self._phase = None if schedule is None else (trainer.global_step, schedule.at(trainer.global_step).name)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._phase is not None:
            self.phases.append((*self._phase, float(trainer.callback_metrics["train/phase"])))

    def on_validation_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            loader = trainer.val_dataloaders
            self.val = {"indices": list(iter(loader.sampler)), "size": len(loader.dataset), "rng": []}

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        if not trainer.sanity_checking:
            self.val["rng"].append(torch.get_rng_state())

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not trainer.sanity_checking and batch_idx == 0:  # the weights validation used
            self.val["weights"] = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.val["logged"] = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}

    def teardown(self, trainer, pl_module, stage: str) -> None:
        written = {type(cb).__name__: list(cb.written) for cb in trainer.callbacks
                   if isinstance(cb, (AttentionPictureCallback, EvalReportWriter))}
        os.makedirs(self.folder, exist_ok=True)
        if stage == "test":  # test_after_fit: what the test's pictures and report wrote
            torch.save({"written": written}, os.path.join(self.folder, f"rank{trainer.global_rank}_test.pt"))
            return
        if stage != "fit":
            return
        weights = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}  # after every on_train_end
        torch.save({"weights": weights, "seen": self.seen, "size": self.size, "written": written,
                    "world_size": trainer.world_size, "global_step": trainer.global_step,
                    "phases": self.phases, "val": self.val, "start": self.start},
                   os.path.join(self.folder, f"rank{trainer.global_rank}.pt"))
