"""raccn.runtime: process-level settings."""

from __future__ import annotations

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
