"""Checkpoint writes that a kill cannot half-do: a temporary file in the target's folder, then a rename.

Lightning's ``TorchCheckpointIO`` serialises the checkpoint in memory and writes it through an
fsspec transaction, whose local file goes first to the system's temporary folder (``/tmp``) and
is then moved into place with ``shutil.move``: a rename, atomic, when both folders are on one
file system, but a copy into the target otherwise (a ``/tmp`` in memory or on a local disk,
the runs on a network or scratch volume: a kill during the copy truncates ``last.ckpt``), and a
killed write leaves its whole checkpoint behind in ``/tmp``. :class:`AtomicCheckpointIO` writes
a local checkpoint to ``.<name>.partial`` beside the target (fixed per target, so a killed
write's leftover is overwritten by the next one), flushes it to the disk (``fsync``) and renames
it over the target (``os.replace``, atomic on POSIX and Windows), then syncs the folder: the
target is always either the previous checkpoint or the new one, whole. Other file systems
(``s3://`` ...) keep Lightning's path. The CLI installs it in every trainer that names no other
``CheckpointIO`` plugin; in Python: ``Trainer(plugins=[AtomicCheckpointIO()])``.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from fsspec.implementations.local import LocalFileSystem
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning_fabric.utilities.cloud_io import get_filesystem
from lightning_fabric.utilities.types import _PATH

from raccn.write_errors import explain_write_errors


def atomic_torch_save(obj: Any, path: _PATH) -> None:
    """``torch.save(obj, path)``, atomically (module docstring); ``path`` is a local file. A
    failed write (disk full, read-only folder) leaves the previous file and raises
    :class:`~raccn.write_errors.RunWriteError` naming the file and the fix."""
    path = os.path.abspath(os.fspath(path))
    with explain_write_errors("checkpoint", path):
        _atomic_torch_save(obj, path)


def _atomic_torch_save(obj: Any, path: str) -> None:
    folder, name = os.path.split(path)
    os.makedirs(folder, exist_ok=True)
    partial = os.path.join(folder, f".{name}.partial")
    try:
        with open(partial, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
    except BaseException:
        if os.path.exists(partial):
            os.remove(partial)
        raise
    if hasattr(os, "O_DIRECTORY"):  # the rename itself reaches the disk (POSIX)
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO`` with atomic local writes (module docstring)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if storage_options is not None or not isinstance(get_filesystem(path), LocalFileSystem):
            return super().save_checkpoint(checkpoint, path, storage_options)
        atomic_torch_save(checkpoint, path)
