"""Process-level CPU settings for fast training on small tensors.

glibc returns large freed blocks to the kernel by default, so each new activation tensor of a
few hundred KB is page-faulted in again; on small virtual machines that can cost more than the
arithmetic (measured: 3-10x slower glimpse op, see docs/RESULTS.md). ``tune_cpu_allocator``
keeps such blocks in the process, and also the blocks above glibc's 32 MB cap on the mmap
threshold (a VGG-19 layer at 448 px holds 100 MB), which are otherwise mapped and faulted in
anew at every step (measured: an RA-CNN VGG-19 step 1.04-1.09x its trunks' cost with them
mapped, 1.00x without). It is called by ``train.py`` and the benchmarks, never on
import. Allocators such as jemalloc/tcmalloc (``LD_PRELOAD``) give the same effect.

``skip_futile_nvml_probe`` removes a failing GPU-library probe from every optimizer step on
machines without a GPU driver (called by ``train.py`` and the RAM benchmarks, after Lightning is
imported).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4


def tune_cpu_allocator(
    mmap_threshold: int = 32 << 20, trim_threshold: int = 1 << 30, mmap_max: int | None = 0
) -> bool:
    """Keep freed memory in the process instead of returning it to the kernel (glibc ``mallopt``).

    Args:
        mmap_threshold: blocks below this size come from the heap (glibc caps it at 32 MB).
        trim_threshold: free memory at the top of the heap kept before trimming.
        mmap_max: how many blocks glibc may ``mmap`` at once; 0 (default) serves every block,
            the largest included, from the heap, so a training step reuses its activations'
            memory instead of mapping and faulting it in again; None leaves the setting as it is.

    Returns True when applied (Linux/glibc only).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    settings = [(_M_MMAP_THRESHOLD, mmap_threshold), (_M_TRIM_THRESHOLD, trim_threshold)]
    if mmap_max is not None:
        settings.append((_M_MMAP_MAX, mmap_max))
    applied = [bool(mallopt(option, value)) for option, value in settings]  # every one, then check
    return all(applied)


_NVML_CHECK = "PYTORCH_NVML_BASED_CUDA_CHECK"


def skip_futile_nvml_probe() -> bool:
    """Drop ``PYTORCH_NVML_BASED_CUDA_CHECK`` when the NVIDIA management library cannot be loaded.

    Importing Lightning sets that variable, so that ``torch.cuda.is_available()`` asks NVML
    instead of initialising CUDA (which would spoil forked workers). Every optimizer step asks
    (``Optimizer._accelerator_graph_capture_health_check``), and without a GPU driver the NVML
    path tries to ``dlopen`` ``libnvidia-ml.so.1`` each time, fails and falls back to
    ``torch._C._cuda_getDeviceCount()``: ~0.1 ms per step (1 % of a RAM step; docs/RESULTS.md).
    Without the library that fallback is the whole answer, so dropping the variable gives the
    same answer with no ``dlopen``. Nothing changes where NVML loads (a machine with a GPU
    driver). Returns True when the variable was dropped.
    """
    if os.environ.get(_NVML_CHECK) != "1":
        return False
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        del os.environ[_NVML_CHECK]
        return True
    return False
