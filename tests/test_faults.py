"""Faults in training (issue 21): a checkpoint write killed or failing half-way never leaves a
corrupt checkpoint; a non-finite loss or gradient is skipped, counted and, repeated, stops
training with a clear error, the weights untouched."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import raccn.atomic_checkpoint_io as atomic_io
from raccn.atomic_checkpoint_io import AtomicCheckpointIO
from raccn.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_cli_writes_checkpoints_atomically(tmp_path):
    cli = main(["--config", os.path.join(ROOT, "configs", "ram_quickstart.yaml"),
                "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false"], run=False)
    assert type(cli.trainer.strategy.checkpoint_io) is AtomicCheckpointIO


def test_a_write_failing_half_way_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    """The writer raises after writing half the new checkpoint (disk full, an I/O error): the
    previous file is intact and loads, and nothing is left beside it."""
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    old = {"state_dict": {"w": torch.arange(1000.0)}, "global_step": 1}
    io.save_checkpoint(old, path)

    def half_then_fail(obj, f):
        f.write(b"PK\x03\x04" + b"\0" * 4096)  # the start of a zip file, then the failure
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic_io.torch, "save", half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(1000)}, "global_step": 2}, path)
    monkeypatch.undo()
    loaded = io.load_checkpoint(path)
    assert loaded["global_step"] == 1 and torch.equal(loaded["state_dict"]["w"], old["state_dict"]["w"])
    assert os.listdir(tmp_path) == ["last.ckpt"]


WRITER = """
import sys, torch
from raccn.atomic_checkpoint_io import AtomicCheckpointIO
step = int(sys.argv[2])
AtomicCheckpointIO().save_checkpoint({"global_step": step, "w": torch.full((int(sys.argv[3]),), float(step))}, sys.argv[1])
"""


def test_a_writer_killed_mid_write_leaves_the_previous_checkpoint(tmp_path):
    """A process SIGKILLed while it writes a 128 MB checkpoint over ``last.ckpt``: the old file
    still loads whole; the next write succeeds and takes the killed one's leftover away."""
    path, n = tmp_path / "last.ckpt", 32 * 2**20  # float32: 128 MB
    AtomicCheckpointIO().save_checkpoint({"global_step": 1, "w": torch.ones(1000)}, path)
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    partial = tmp_path / ".last.ckpt.partial"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), "2", str(n)], env=env)
    deadline = time.monotonic() + 120
    while not (partial.exists() and partial.stat().st_size > 2**20):  # mid-write
        assert proc.poll() is None and time.monotonic() < deadline, "the write ended before the kill"
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    loaded = torch.load(path, weights_only=True)
    assert loaded["global_step"] == 1 and torch.equal(loaded["w"], torch.ones(1000))
    assert partial.exists()  # the killed write's leftover, beside it
    AtomicCheckpointIO().save_checkpoint({"global_step": 3}, path)
    assert torch.load(path, weights_only=True)["global_step"] == 3
    assert sorted(os.listdir(tmp_path)) == ["last.ckpt"]
