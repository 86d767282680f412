"""Reader for the IDX format of the MNIST files (http://yann.lecun.com/exdb/mnist/), raw or
gzipped.

An IDX file is a 4-byte magic number ``0x00 0x00 <dtype code> <ndim>``, ``ndim`` big-endian
uint32 sizes, then the values in row-major order. MNIST uses dtype code ``0x08`` (uint8):
images are ``0x00000803`` (N, rows, cols), labels ``0x00000801`` (N,).
"""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

_UBYTE = 0x08


class IdxFormatError(ValueError):
    """An IDX file is corrupt, truncated or not the expected kind."""


def read_idx(path: str | Path, ndim: int) -> Tensor:
    """Read an unsigned-byte IDX file.

    Args:
        path: the file; read through ``gzip`` if its name ends in ``.gz``.
        ndim: the number of dimensions the file must have (3 for images, 1 for labels).

    Returns:
        Tensor[d_1, ..., d_ndim] uint8.

    Raises:
        IdxFormatError: bad magic number, wrong dtype or dimensionality, truncated data or
            trailing bytes, or a broken gzip stream; the message names the file.
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            data = path.read_bytes()
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
        raise IdxFormatError(
            f"{path}: cannot decompress/read ({e}); delete it and fetch it again."
        ) from e
    expected_magic = (_UBYTE << 8) | ndim
    if len(data) < 4:
        raise IdxFormatError(f"{path}: only {len(data)} bytes, not an IDX file; fetch it again.")
    magic = int.from_bytes(data[:4], "big")
    if magic != expected_magic:
        raise IdxFormatError(
            f"{path}: magic number 0x{magic:08x}, expected 0x{expected_magic:08x} (uint8 IDX "
            f"with {ndim} dimension(s)); the file is corrupt or not the one expected there."
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxFormatError(f"{path}: truncated header ({len(data)} bytes); fetch it again.")
    shape = [int.from_bytes(data[4 + 4 * k : 8 + 4 * k], "big") for k in range(ndim)]
    body = len(data) - header
    if body != math.prod(shape):
        raise IdxFormatError(
            f"{path}: header says shape {tuple(shape)} = {math.prod(shape)} bytes of data but "
            f"the file holds {body}; it is truncated or corrupt, fetch it again."
        )
    array = np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)
    return torch.from_numpy(array.copy())
