"""Under DDP, every process evaluates with rank 0's buffers (batch-norm statistics) and ends
training with them.

DDP broadcasts the module's buffers from rank 0 at the start of every training forward, after
which each process's forward updates its batch-norm running statistics from its own share of the
batch. Evaluation runs without gradients, where DDP broadcasts nothing: each process then scored
its share of the validation set with its own statistics, not rank 0's, which the checkpoint holds
(the synchronised metric was no evaluation of the saved weights), and training ended with other
buffers in each process. ``SyncBatchNorm`` (``--trainer.sync_batchnorm true``) keeps them equal on
GPUs, but PyTorch has no CPU version of it. :class:`BufferSync` broadcasts rank 0's buffers before
the first batch of every validation (after a weight-averaging callback has swapped its average
in, whatever the order of the callbacks), when testing and predicting start, and when training
ends (after such a callback has copied its average in).
Training itself is unchanged: its next forward takes rank 0's buffers anyway.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch.distributed as dist
from pytorch_lightning.callbacks import Callback


def broadcast_buffers(module: pl.LightningModule) -> None:
    """Overwrite every process's buffers of ``module`` with rank 0's (in place); nothing without
    an initialised process group of more than one process."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return
    for buffer in module.buffers():
        dist.broadcast(buffer, src=0)


class BufferSync(Callback):
    """See the module docstring. The CLI adds it to every run, after the config's callbacks;
    with a ``Trainer`` built in Python, pass it in ``callbacks`` for DDP runs of models with batch
    norm, after any weight-averaging callback."""

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        if batch_idx == 0 and dataloader_idx == 0:
            broadcast_buffers(pl_module)

    def on_test_start(self, trainer, pl_module) -> None:
        broadcast_buffers(pl_module)

    def on_predict_start(self, trainer, pl_module) -> None:  # (a process may have no batch to predict)
        broadcast_buffers(pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        broadcast_buffers(pl_module)
