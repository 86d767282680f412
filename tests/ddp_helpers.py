"""A callback for the DDP tests (importable by a ``train.py`` subprocess: ``class_path:
ddp_helpers.RankRecord`` with tests/ on ``PYTHONPATH``)."""

from __future__ import annotations

import os

import torch
from pytorch_lightning.callbacks import Callback

from raccn.callbacks import EvalReportWriter
from raccn.callbacks.attention_pictures import AttentionPictureCallback


class RankRecord(Callback):
    """Saves, per process, ``<folder>/rank<r>.pt`` at the end of ``fit``: the weights at the end
    of training, the indices of the training images it read, and the files its picture and report
    callbacks wrote (their ``written`` lists); ``<folder>/rank<r>_test.pt`` at the end of ``test``:
    those lists again."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.weights: dict[str, torch.Tensor] = {}
        self.seen: list[int] = []
        self.size = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        sampler = trainer.train_dataloader.sampler
        if batch_idx == 0:
            self.seen = list(iter(sampler))  # this process's share of the epoch, in its order
            self.size = len(sampler.dataset)

    def on_train_end(self, trainer, pl_module) -> None:
        self.weights = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}

    def teardown(self, trainer, pl_module, stage: str) -> None:
        written = {type(cb).__name__: list(cb.written) for cb in trainer.callbacks
                   if isinstance(cb, (AttentionPictureCallback, EvalReportWriter))}
        os.makedirs(self.folder, exist_ok=True)
        if stage == "test":  # test_after_fit: what the test's pictures and report wrote
            torch.save({"written": written}, os.path.join(self.folder, f"rank{trainer.global_rank}_test.pt"))
            return
        if stage != "fit":
            return
        torch.save({"weights": self.weights, "seen": self.seen, "size": self.size, "written": written,
                    "world_size": trainer.world_size, "global_step": trainer.global_step},
                   os.path.join(self.folder, f"rank{trainer.global_rank}.pt"))
