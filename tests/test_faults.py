"""Faults in training (issue 21): a checkpoint write killed or failing half-way never leaves a
corrupt checkpoint; a non-finite loss or gradient is skipped, counted and, repeated, stops
training with a clear error, the weights untouched."""

import errno
import glob
import itertools
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from PIL import Image
from test_resume import RACNN, RAM, _checkpoint, _fit, _trainer

import raccn.atomic_checkpoint_io as atomic_io
from raccn.atomic_checkpoint_io import AtomicCheckpointIO
from raccn.callbacks import NonFiniteLossError
from raccn.checkpoint_match import CheckpointMismatchError
from raccn.cli import main
from raccn.write_errors import RunWriteError

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


def _poisoned(overrides, tmp_path, poison, steps, max_consecutive):
    config = {**overrides, "trainer": _trainer(tmp_path, 1), "non_finite": {"max_consecutive": max_consecutive}}
    config["trainer"]["callbacks"].append({"class_path": f"fault_helpers.{poison}", "init_args": {"steps": steps}})
    return config


def _load(tmp_path, name, step):
    return torch.load(_checkpoint(tmp_path, name, f"stepstep={step}.ckpt"), map_location="cpu", weights_only=False)


@pytest.mark.parametrize("poison", ["PoisonBatches", "PoisonGradients"])
def test_ram_skips_non_finite_steps_and_counts_them(tmp_path, poison):
    """RAM (automatic optimisation): steps 2 and 3 get a NaN loss (NaN images) or an infinite
    gradient; both are skipped, so after step 3 the weights and Adam's state are those after
    step 1, training goes on to its end with finite weights, and ``train/skipped_steps`` is 2."""
    state, logged = _fit(tmp_path, "run", "ram_quickstart.yaml", _poisoned(RAM, tmp_path, poison, [2, 3], 3))
    before, after = _load(tmp_path, "run", 2), _load(tmp_path, "run", 4)
    assert all(torch.equal(before["state_dict"][k], v) for k, v in after["state_dict"].items())
    assert str(before["optimizer_states"]) == str(after["optimizer_states"])  # moments, step counts
    assert not all(torch.equal(after["state_dict"][k], v) for k, v in state.items())  # it trained on
    assert all(torch.isfinite(v).all() for v in state.values())
    skipped = {step: v for (step, name), v in logged.items() if name == "train/skipped_steps"}
    assert skipped[1] == 0 and skipped[2] == 1 and skipped[3] == 2 and skipped[max(skipped)] == 2


def test_racnn_stops_after_too_many_non_finite_steps_in_a_row(tmp_path):
    """RA-CNN (manual optimisation, batch-norm trunks): NaN images from step 3 on; steps 3 and 4
    (classification) and 5 (ranking) are skipped, their batch-norm statistics put back, and the
    third in a row stops training with an error that says what to do. The weights stay those after
    step 2, and no checkpoint is written for the error."""
    config = _poisoned(RACNN, tmp_path, "PoisonBatches", list(range(3, 8)), 3)
    with pytest.raises(NonFiniteLossError, match=r"3 training steps in a row \(global steps 3\.\.5\).*"
                                                 r"max_consecutive \(now 3\)"):
        _fit(tmp_path, "run", "racnn_quickstart.yaml", config)
    good, last = _load(tmp_path, "run", 3), _load(tmp_path, "run", 5)
    assert any("running_mean" in k for k in last["state_dict"])
    assert all(torch.equal(good["state_dict"][k], v) for k, v in last["state_dict"].items())
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values() if v.is_floating_point())
    assert not glob.glob(str(tmp_path / "run" / "**" / "stepstep=6.ckpt"), recursive=True)
    assert not glob.glob(str(tmp_path / "run" / "**" / "interrupted.ckpt"), recursive=True)


# ----------------------------------------------------------------------------- a checkpoint of another model
PUBLISHED_RAM = os.path.join(ROOT, "checkpoints", "ram_mnist.ckpt")  # RAM, 10 classes


def _run_with_ckpt(subcommand, config, ckpt, tmp_path):
    args = [subcommand, "--config", os.path.join(ROOT, "configs", config), "--ckpt_path", str(ckpt),
            "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path),
            "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "1",
            "--trainer.limit_test_batches", "1", "--trainer.limit_predict_batches", "1",
            "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false"]
    return main(args)


@pytest.mark.parametrize("subcommand", ["test", "predict", "fit"])
def test_a_checkpoint_of_another_model_class_is_refused_naming_both(subcommand, tmp_path):
    """A RAM checkpoint given to an RA-CNN config: an error naming the checkpoint, both classes
    and the fix, before any data is read (LightningCLI alone would swap in the checkpoint's model
    and fail later on the number of channels)."""
    with pytest.raises(CheckpointMismatchError) as info:
        _run_with_ckpt(subcommand, "racnn_quickstart.yaml", PUBLISHED_RAM, tmp_path)
    message = str(info.value)
    assert PUBLISHED_RAM in message and "RAMLitModule" in message and "RACNNLitModule" in message
    assert "Pass the config the checkpoint was trained with" in message
    assert not glob.glob(str(tmp_path / "**" / "*.csv"), recursive=True)  # nothing ran


def test_a_checkpoint_of_another_network_class_is_refused(tmp_path):
    ckpt = torch.load(PUBLISHED_RAM, map_location="cpu", weights_only=True)
    ckpt["hyper_parameters"]["net"]["class_path"] = "raccn.models.SomeOtherNetwork"
    torch.save(ckpt, tmp_path / "other_net.ckpt")
    with pytest.raises(CheckpointMismatchError, match=r"SomeOtherNetwork network \(model.init_args.net\), "
                                                      r"but the config asks for raccn.models.RecurrentAttentionModel"):
        _run_with_ckpt("test", "ram_quickstart.yaml", tmp_path / "other_net.ckpt", tmp_path)


@pytest.mark.parametrize("subcommand", ["test", "predict", "fit"])
def test_a_checkpoint_for_another_number_of_classes_is_refused_naming_both(subcommand, tmp_path):
    """The published RAM checkpoint rewritten as a 12-class one (hyper-parameters and classifier),
    given to the 10-class RAM quick start: an error naming the checkpoint, 12, 10 and the data
    module (Lightning alone fails on a state-dict shape, naming neither)."""
    ckpt = torch.load(PUBLISHED_RAM, map_location="cpu", weights_only=True)
    ckpt["hyper_parameters"]["net"]["init_args"]["num_classes"] = 12
    for key in ("net.classifier.fc.weight", "net.classifier.fc.bias"):
        ckpt["state_dict"][key] = torch.cat([ckpt["state_dict"][key], ckpt["state_dict"][key][:2]])
    path = tmp_path / "twelve.ckpt"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointMismatchError) as info:
        _run_with_ckpt(subcommand, "ram_quickstart.yaml", path, tmp_path)
    message = str(info.value)
    assert str(path) in message and "trained for 12 classes" in message
    assert "ClutteredDigitsDataModule" in message and "has 10" in message


def test_a_file_that_is_no_checkpoint_is_named(tmp_path):
    path = tmp_path / "notes.ckpt"
    path.write_text("not a checkpoint")
    with pytest.raises(ValueError, match=f"{path} is not a readable checkpoint"):
        _run_with_ckpt("test", "ram_quickstart.yaml", path, tmp_path)


# ----------------------------------------------------------------------------- disk full, read-only run folder
def _fail_after(real, n_ok, code):
    """``real`` for the first ``n_ok`` calls, then an ``OSError(code)`` (after writing some bytes
    when given a file, as a disk that fills up half-way)."""
    calls = []

    def writer(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) <= n_ok:
            return real(obj, f, *args, **kwargs)
        if hasattr(f, "write"):
            f.write(b"PK\x03\x04" + b"\0" * 512)
        raise OSError(code, os.strerror(code))

    return writer


ADVICE = {errno.ENOSPC: "The disk is full", errno.EROFS: "The folder is read-only"}


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_a_failed_checkpoint_write_stops_training_naming_it_and_keeps_the_last_good_one(tmp_path, monkeypatch, code):
    """RAM with a checkpoint every step; the fourth write fails (disk full, or the folder turned
    read-only): training stops with an error naming the checkpoint, the cause and the fix; the
    three checkpoints written before load and hold the weights of their steps (each differs from
    the next: training moved on), and nothing half-written is left."""
    monkeypatch.setattr(atomic_io.torch, "save", _fail_after(torch.save, 3, code))
    with pytest.raises(RunWriteError) as info:
        _fit(tmp_path, "run", "ram_quickstart.yaml", {**RAM, "trainer": _trainer(tmp_path, 1)})
    monkeypatch.undo()
    message = str(info.value)
    assert info.value.errno == code and ADVICE[code] in message and "--trainer.default_root_dir" in message
    assert re.search(r"cannot write the checkpoint \S+\.ckpt", message) and "intact" in message
    files = sorted(glob.glob(str(tmp_path / "run" / "**" / "*.ckpt"), recursive=True))
    steps = [torch.load(f, map_location="cpu", weights_only=False)["global_step"] for f in files]
    assert sorted(steps) == [1, 2, 3]
    states = [torch.load(_checkpoint(tmp_path, "run", f"stepstep={s}.ckpt"), map_location="cpu",
                         weights_only=False)["state_dict"] for s in (1, 2, 3)]
    for a, b in itertools.pairwise(states):
        assert all(torch.isfinite(v).all() for v in b.values() if v.is_floating_point())
        assert not all(torch.equal(a[k], b[k]) for k in a)
    assert not glob.glob(str(tmp_path / "run" / "**" / ".*.partial"), recursive=True)


def test_a_failed_attention_picture_stops_training_naming_it(tmp_path, monkeypatch):
    """The glimpse pictures of the first validation cannot be written (disk full): an error
    naming the picture and the fix; the step checkpoints written before it load."""
    trainer = _trainer(tmp_path, 1)
    trainer["callbacks"].append({"class_path": "raccn.callbacks.GlimpseTrajectoryWriter",
                                 "init_args": {"num_images": 2, "every_n_epochs": 1}})
    real = Image.Image.save

    def full(self, fp, *args, **kwargs):
        if str(fp).endswith(".png"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", full)
    with pytest.raises(RunWriteError, match=r"cannot write the attention picture \S+val_00\.png: "
                                            r"No space left on device\. The disk is full"):
        _fit(tmp_path, "run", "ram_quickstart.yaml", {**RAM, "trainer": trainer})
    ckpts = glob.glob(str(tmp_path / "run" / "**" / "stepstep=*.ckpt"), recursive=True)
    assert len(ckpts) == 4 and not glob.glob(str(tmp_path / "run" / "**" / "*.png"), recursive=True) and all(torch.load(f, weights_only=False)["state_dict"] for f in ckpts)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_a_failed_report_names_it(tmp_path, monkeypatch, code):
    """The test report cannot be written: the test's error names the report file and the fix."""
    from raccn.callbacks import eval_report

    def refuse(path, *args, **kwargs):
        raise OSError(code, os.strerror(code), path)

    monkeypatch.setattr(eval_report, "open", refuse, raising=False)
    config = {**RAM, "trainer": {**_trainer(tmp_path, 100), "max_epochs": 1, "limit_test_batches": 1}}
    with pytest.raises(RunWriteError, match=rf"cannot write the test report \S+test_report\.csv: .*"
                                            rf"{ADVICE[code]}"):
        _fit(tmp_path, "run", "ram_quickstart.yaml", config, test_after_fit=True)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root writes into read-only folders; the tests above inject the error")
def test_a_read_only_run_folder_keeps_the_checkpoint(tmp_path):
    path = tmp_path / "checkpoints" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"global_step": 1}, path)
    path.parent.chmod(0o555)
    try:
        with pytest.raises(RunWriteError, match="The folder is read-only"):
            AtomicCheckpointIO().save_checkpoint({"global_step": 2}, path)
    finally:
        path.parent.chmod(0o755)
    assert torch.load(path, weights_only=True)["global_step"] == 1
