"""raccn.runtime: process-level settings."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

import pytest
import torch

from raccn import runtime


def test_nvml_check_is_dropped_only_when_nvml_cannot_load(monkeypatch):
    monkeypatch.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    with_nvml_check = torch.cuda.is_available()

    def no_library(name):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(runtime.ctypes, "CDLL", no_library)
    assert runtime.skip_futile_nvml_probe() is True
    assert "PYTORCH_NVML_BASED_CUDA_CHECK" not in runtime.os.environ
    assert torch.cuda.is_available() == with_nvml_check  # the same answer without the probe
    assert runtime.skip_futile_nvml_probe() is False  # nothing left to drop

    monkeypatch.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    monkeypatch.setattr(runtime.ctypes, "CDLL", lambda name: object())  # a machine with a GPU driver
    assert runtime.skip_futile_nvml_probe() is False
    assert runtime.os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] == "1"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_tune_cpu_allocator_applies_on_linux():
    assert runtime.tune_cpu_allocator() is True


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _mapped_bytes_while_holding(nbytes: int) -> int:
    """Bytes glibc holds in mmap'ed blocks while a tensor of ``nbytes`` is alive."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    block = torch.empty(nbytes // 4, dtype=torch.float32)
    mapped = libc.mallinfo2().hblkhd
    del block
    return mapped


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_tune_cpu_allocator_serves_blocks_above_the_mmap_cap_from_the_heap():
    # 64 MB is above glibc's 32 MB cap on the mmap threshold: by default it is mapped (and
    # faulted in anew at every allocation); tuned, it comes from the heap and is reused
    big = 64 << 20
    try:
        assert runtime.tune_cpu_allocator(mmap_max=65536) is True  # glibc's default count
        assert _mapped_bytes_while_holding(big) >= big
        assert runtime.tune_cpu_allocator() is True
        assert _mapped_bytes_while_holding(big) < big
    finally:
        runtime.tune_cpu_allocator()
