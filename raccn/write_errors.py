"""Errors of the run's own writes (checkpoints, attention pictures, reports, predictions) that say
which file failed and what to do.

A full disk or a read-only run folder surfaces as a bare ``OSError`` deep inside ``torch.save`` or
PIL; :func:`explain_write_errors` re-raises it as a :class:`RunWriteError` (an ``OSError`` with the
same ``errno``) naming the file, the cause and the fix, and saying that the checkpoints already
written are intact (they are: checkpoints are replaced atomically, see
:mod:`raccn.atomic_checkpoint_io`), so training stops with nothing lost but the steps since the
last checkpoint.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["RunWriteError", "explain_write_errors"]

FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
READ_ONLY = {errno.EROFS, errno.EACCES, errno.EPERM}


class RunWriteError(OSError):
    """A write of the run's files failed; the message names the file and the fix."""


def _advice(code: int | None) -> str:
    move = ("or write the run elsewhere with --trainer.default_root_dir <folder> (and the loggers' "
            "save_dir)")
    if code in FULL:
        return f"The disk is full (or over quota): free space, {move}."
    if code in READ_ONLY:
        return f"The folder is read-only or not writable by this user: make it writable, {move}."
    return f"Check the disk and the folder's permissions, {move}."


@contextmanager
def explain_write_errors(what: str, path: str | os.PathLike) -> Iterator[None]:
    """Run the block; an ``OSError`` from it becomes a :class:`RunWriteError` (same ``errno``)
    saying that writing ``what`` (e.g. "checkpoint") to ``path`` failed, why, and what to do."""
    try:
        yield
    except RunWriteError:
        raise
    except OSError as e:
        raise RunWriteError(
            e.errno,
            f"cannot write the {what} {os.fspath(path)}: {e.strerror or e}. {_advice(e.errno)} "
            "Checkpoints already written are intact: resume from the last one with "
            "`train.py fit --ckpt_path <run folder>/checkpoints/last.ckpt`.",
        ) from e
