"""raccn.runtime: process-level settings."""

from __future__ import annotations

import subprocess
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


_MAPPED_BYTES = """
import ctypes, ctypes.util, sys
import torch
from raccn import runtime

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "tuned":
    assert runtime.tune_cpu_allocator() is True
block = torch.empty(64 << 18, dtype=torch.float32)  # 64 MB
print(libc.mallinfo2().hblkhd)  # bytes in mmap'ed blocks while it is alive
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
@pytest.mark.parametrize("allocator", ["default", "tuned"])
def test_tune_cpu_allocator_serves_blocks_above_the_mmap_cap_from_the_heap(allocator):
    # 64 MB is above glibc's 32 MB cap on the mmap threshold: by default such a block is mapped
    # (and faulted in anew at every allocation); tuned, it comes from the heap and is reused.
    # A fresh process each: in this one, earlier tests leave free heap memory behind.
    out = subprocess.run([sys.executable, "-c", _MAPPED_BYTES, allocator], capture_output=True,
                         text=True, check=True).stdout
    mapped = int(out.split()[-1])
    if allocator == "default":
        assert mapped >= 64 << 20
    else:
        assert mapped < 64 << 20
