"""Process-level CPU settings for fast training on small tensors.

glibc returns large freed blocks to the kernel by default, so each new activation tensor of a
few hundred KB is page-faulted in again; on small virtual machines that can cost more than the
arithmetic (measured: 3-10x slower glimpse op, see docs/RESULTS.md). ``tune_cpu_allocator``
keeps such blocks in the process. It is called by ``train.py`` and the benchmarks, never on
import. Allocators such as jemalloc/tcmalloc (``LD_PRELOAD``) give the same effect.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def tune_cpu_allocator(mmap_threshold: int = 32 << 20, trim_threshold: int = 1 << 30) -> bool:
    """Raise glibc's mmap and trim thresholds. Returns True when applied (Linux/glibc only)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(
        mallopt(_M_TRIM_THRESHOLD, trim_threshold)
    )
