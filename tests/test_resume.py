"""Exact resume (issue 21): a run stopped after N steps and resumed with ``fit --ckpt_path`` ends
with the same weights, bit for bit (CPU, deterministic), and logs the same metrics after the resume
point as the run that never stopped. Stopping points: mid-epoch (``every_n_train_steps``
checkpoints, as SIGTERM leaves), at an epoch's last batch before its validation, and after
validation (``last.ckpt``), and by SIGTERM or Ctrl-C sent to a real ``train.py`` process;
RAM with its REINFORCE sampling and an EMA of the weights; DRAM with its sampling, random
crops and Monte Carlo validation; RA-CNN in the middle of a pre-training phase and of a ranking
phase.

The checkpoints are all written by one uninterrupted run (writing one changes nothing in it) and
each is resumed in a fresh CLI run. Tiny configs: 4 batches an epoch, small canvases."""

import csv
import glob
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from raccn.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _trainer(tmp_path, every_n_steps):
    """The trainer section: CSV logs of every step, a checkpoint every ``every_n_steps`` steps and
    one after every validation, all kept."""
    return {
        "max_epochs": 2, "limit_train_batches": 4, "limit_val_batches": 1, "log_every_n_steps": 1,
        "deterministic": True, "enable_progress_bar": False, "enable_model_summary": False,
        "logger": [{"class_path": "pytorch_lightning.loggers.CSVLogger", "init_args": {"save_dir": str(tmp_path)}}],
        "callbacks": [
            {"class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
             "init_args": {"filename": "step{step}", "every_n_train_steps": every_n_steps, "save_top_k": -1,
                           "monitor": None}},  # (else merged from the config's first ModelCheckpoint)
            {"class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
             "init_args": {"filename": "val{epoch}", "save_top_k": -1, "monitor": None}},
        ],
    }


RAM = {
    "seed_everything": 7,
    "data": {"init_args": {"batch_size": 8, "upscale": 2, "canvas_size": 24, "num_distractors": 2,
                           "distractor_size": 4}},
    "model": {"init_args": {"net": {"init_args": {"patch_size": 6, "glimpses": 3}}}},
}
RACNN = {  # steps: 0 warmup, 1-2 pretrain, 3-4 cls, 5-7 rank, 8.. cls
    "seed_everything": 7,
    "data": {"init_args": {"batch_size": 4, "train_size": 16, "val_size": 4, "test_size": 4}},
    "model": {"init_args": {
        "net": {"init_args": {"input_sizes": [32, 32], "apn_hidden": 16}},
        "apn_pretrain_steps": 2, "cls_length": 2, "rank_length": 3,
        "extras": {"warmup_steps": 1, "warmup_boxes": "random", "box_jitter": 0.05,
                   "pretrain_target": "centroid", "pretrain_features": "stride8"},
    }},
}


def _dram(tmp_path):
    """A tiny DRAM on 40 embedded house numbers (rendered into ``tmp_path`` once)."""
    return {
        "seed_everything": 7,
        "data": {"init_args": {"data_dir": str(tmp_path / "house_numbers"), "batch_size": 8, "train_size": 40,
                               "test_size": 8, "val_split": 0.2}},
        "model": {"init_args": {"mc_samples": 2, "net": {"init_args": {
            "patch_size": 8, "conv_channels": [4, 4, 4], "glimpse_dim": 16, "hidden_size": 16,
            "context_size": 8, "context_channels": [4, 4, 4]}}}},
    }


def _fit(tmp_path, name, config, overrides, ckpt=None, test_after_fit=False):
    """``train.py fit`` through the CLI in this process; returns the final weights and the run's
    logged metrics ``{(step, name): value}``."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(overrides))
    args = ["fit", "--config", os.path.join(ROOT, "configs", config), "--config", str(path),
            "--test_after_fit", str(test_after_fit).lower(), "--trainer.default_root_dir", str(tmp_path / name),
            "--trainer.logger.init_args.name", name]
    if ckpt is not None:
        args += ["--ckpt_path", ckpt]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the train.py subprocesses (OMP_NUM_THREADS=1): the same rounding
    try:
        cli = main(args)
    finally:
        torch.set_num_threads(threads)
    state = {k: v.clone() for k, v in cli.trainer.lightning_module.state_dict().items()}
    rows = {}
    with open(os.path.join(cli.trainer.logger.log_dir, "metrics.csv")) as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                if key not in ("step", "epoch") and value != "":
                    rows[int(row["step"]), key] = float(value)
    return state, rows


def _checkpoint(tmp_path, name, pattern):
    (found,) = glob.glob(str(tmp_path / name / "**" / pattern), recursive=True)
    return found


def _assert_resumes_exactly(tmp_path, config, overrides, stops):
    straight, logged = _fit(tmp_path, "straight", config, overrides)
    for i, pattern in enumerate(stops):
        ckpt = _checkpoint(tmp_path, "straight", pattern)
        step = torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"]
        resumed, resumed_logged = _fit(tmp_path, f"resumed{i}", config, overrides, ckpt)
        for key, value in straight.items():
            assert torch.equal(resumed[key], value), f"{pattern}: {key} differs by {(resumed[key] - value).abs().max()}"
        after = {k: v for k, v in logged.items() if k[0] >= step}
        assert {k: after.get(k) for k in resumed_logged} == resumed_logged, pattern
        # Lightning writes a step metric again at later steps of its epoch; a resumed run has none
        # from before the resume to repeat (RA-CNN's losses of the other phases): only those lack
        missing = {k: v for k, v in after.items() if k not in resumed_logged}
        assert all(_stale(logged, k, v) for k, v in missing.items()), (pattern, missing)
        assert any(name.startswith("train/") for _, name in resumed_logged), pattern  # training went on


def _stale(logged, key, value):
    """Whether ``logged[key]`` repeats the same metric's value at an earlier step."""
    step, name = key
    return any(n == name and s < step and v == value for (s, n), v in logged.items())


def test_ram_resumes_exactly(tmp_path):
    """REINFORCE sampling, canvases drawn on the fly, the shuffle and an EMA of the weights:
    stopped mid-epoch 0 (step 3), at epoch 0's last batch before its validation (step 4, the
    validation samples glimpses too), after it (val epoch 0) and mid-epoch 1 (step 6)."""
    overrides = {**RAM, "trainer": _trainer(tmp_path, 2)}
    overrides["trainer"]["callbacks"].append({"class_path": "pytorch_lightning.callbacks.EMAWeightAveraging"})
    overrides["trainer"]["callbacks"][0]["init_args"]["every_n_train_steps"] = 1
    _assert_resumes_exactly(tmp_path, "ram_quickstart.yaml", overrides,
                            ["step*step=3.ckpt", "step*step=4.ckpt", "val*epoch=0.ckpt", "step*step=6.ckpt"])


def test_dram_resumes_exactly(tmp_path):
    """The location policy's sampling, the random 32-px crops of the training numbers and the
    validation's 2 Monte Carlo rollouts: stopped mid-epoch 0 (step 2), at its last batch before
    validation (step 4) and after it (val epoch 0)."""
    overrides = {**_dram(tmp_path), "trainer": _trainer(tmp_path, 2)}
    _assert_resumes_exactly(tmp_path, "dram_quickstart.yaml", overrides,
                            ["step*step=2.ckpt", "step*step=4.ckpt", "val*epoch=0.ckpt"])


def test_racnn_resumes_exactly_in_pretrain_and_in_rank(tmp_path):
    """Two optimisers, their LambdaLR schedules (cosine), random warm-up boxes and jittered crops:
    stopped after step 2 (the pre-training phase's second step is next) and after step 6 (the
    ranking phase's second of three steps is next, mid-epoch 1)."""
    overrides = {**RACNN, "trainer": _trainer(tmp_path, 2)}
    _assert_resumes_exactly(tmp_path, "racnn_quickstart.yaml", overrides, ["step*step=2.ckpt", "step*step=6.ckpt"])


@pytest.mark.parametrize("stop", [3, 4])
def test_resuming_without_the_random_streams_is_not_exact(tmp_path, stop):
    """The control: the same RAM resume with the random streams left out of the checkpoint (as
    Lightning alone saves it) does not end at the same weights."""
    overrides = {**RAM, "trainer": _trainer(tmp_path, stop)}
    straight, _ = _fit(tmp_path, "straight", "ram_quickstart.yaml", overrides)
    ckpt = _checkpoint(tmp_path, "straight", f"step*step={stop}.ckpt")
    full = torch.load(ckpt, map_location="cpu", weights_only=False)
    full["callbacks"] = {k: v for k, v in full["callbacks"].items() if "ResumeState" not in k}
    torch.save(full, ckpt)
    resumed, _ = _fit(tmp_path, "resumed", "ram_quickstart.yaml", overrides, ckpt)
    assert max((resumed[k] - v).abs().max() for k, v in straight.items()) > 1e-4


def _train_subprocess(tmp_path, name, config, overrides):
    """``python train.py fit`` in a new process (tests/ importable for ``fault_helpers``)."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(overrides))
    env = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "tests")]))
    args = [sys.executable, os.path.join(ROOT, "train.py"), "fit", "--config", os.path.join(ROOT, "configs", config),
            "--config", str(path), "--test_after_fit", "false", "--trainer.default_root_dir", str(tmp_path / name),
            "--trainer.logger.init_args.name", name]
    log = tmp_path / f"{name}.log"
    with open(log, "w") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(args, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT), log


@pytest.mark.parametrize("sig,status", [(signal.SIGTERM, 128 + signal.SIGTERM), (signal.SIGINT, 1)],
                         ids=["SIGTERM", "SIGINT"])
def test_a_signal_leaves_a_checkpoint_that_resumes_exactly(tmp_path, sig, status):
    """A real ``train.py fit`` gets SIGTERM (pre-emption) or Ctrl-C mid-run: it stops after the
    step under way, writes ``interrupted.ckpt`` beside its checkpoints and exits with the
    signal's status; resumed from it, the run ends where the uninterrupted run ends, bit for bit."""
    overrides = {**RAM, "trainer": _trainer(tmp_path, 1)}
    straight, _ = _fit(tmp_path, "straight", "ram_quickstart.yaml", overrides)
    slow = {**overrides, "trainer": {**overrides["trainer"], "callbacks": [
        *overrides["trainer"]["callbacks"], {"class_path": "fault_helpers.Pause", "init_args": {"seconds": 0.3}}]}}
    proc, log = _train_subprocess(tmp_path, "stopped", "ram_quickstart.yaml", slow)
    deadline = time.monotonic() + 300
    while not glob.glob(str(tmp_path / "stopped" / "**" / "stepstep=2.ckpt"), recursive=True):
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.05)
    proc.send_signal(sig)
    assert proc.wait(timeout=120) == status, log.read_text()[-3000:]
    ckpt = _checkpoint(tmp_path, "stopped", "interrupted.ckpt")
    assert "saved " + ckpt in log.read_text()
    step = torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"]
    assert 2 <= step < 8, "the signal should land mid-run"
    at_step = torch.load(_checkpoint(tmp_path, "stopped", f"stepstep={step}.ckpt"), map_location="cpu",
                         weights_only=False)["state_dict"]
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    assert all(torch.equal(saved[k], v) for k, v in at_step.items())  # the step that finished is in it
    resumed, logged = _fit(tmp_path, "resumed", "ram_quickstart.yaml", overrides, ckpt)
    for key, value in straight.items():
        assert torch.equal(resumed[key], value), key
    assert min(s for s, _ in logged) == step  # it went on from there


def test_the_training_loader_draws_from_its_own_stream_and_resumes_mid_epoch():
    """``ResumableDataLoader``: iterating it leaves the global generator as it was (the model's
    draws do not move the data's), and started from an epoch's saved start with ``skip=k`` it
    yields that epoch's batches from the (k+1)-th on, the same canvases as the first time."""
    from raccn.datamodules import ClutteredDigitsDataModule

    dm = ClutteredDigitsDataModule(batch_size=16, num_workers=0, upscale=2, canvas_size=24,
                                   num_distractors=2, distractor_size=4)
    dm.setup("fit")
    loader = dm.train_dataloader()
    torch.manual_seed(0)
    it = iter(loader)
    first = next(it)
    start = loader.position()["epoch_start"]
    outside = torch.get_rng_state()
    rest = []
    for _ in range(3):
        torch.rand(5)  # the model draws between batches...
        rest.append(next(it))
    after = torch.get_rng_state()
    torch.set_rng_state(outside)
    for _ in range(3):
        torch.rand(5)
    assert torch.equal(after, torch.get_rng_state())  # ...and only the model's moved the global stream
    assert loader.position()["fetched"] == 4
    again = dm.train_dataloader()
    again.resume_from(start, skip=1)
    for want, got in zip(rest, iter(again)):
        assert torch.equal(want[0], got[0]) and torch.equal(want[1], got[1])
    assert not torch.equal(first[0][: len(rest[0][0])], rest[0][0])


def test_sigterm_during_validation_resumes_exactly(tmp_path):
    """SIGTERM in the middle of epoch 0's validation (which samples glimpses from the model's
    random stream): the checkpoint holds the training stream validation would have returned to,
    and the resumed run (which runs that validation again) ends at the straight run's weights."""
    overrides = {**RAM, "trainer": {**_trainer(tmp_path, 100), "limit_val_batches": 2}}
    straight, _ = _fit(tmp_path, "straight", "ram_quickstart.yaml", overrides)
    stopped = {**overrides, "trainer": {**overrides["trainer"], "callbacks": [
        *overrides["trainer"]["callbacks"], {"class_path": "fault_helpers.SigtermInValidation"}]}}
    with pytest.raises(SystemExit) as exit_:
        _fit(tmp_path, "stopped", "ram_quickstart.yaml", stopped)
    assert exit_.value.code == 128 + signal.SIGTERM
    ckpt = _checkpoint(tmp_path, "stopped", "interrupted.ckpt")
    assert torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"] == 4  # epoch 0 trained
    resumed, _ = _fit(tmp_path, "resumed", "ram_quickstart.yaml", overrides, ckpt)
    for key, value in straight.items():
        assert torch.equal(resumed[key], value), key


def test_a_second_ctrl_c_stops_at_once_without_a_checkpoint(tmp_path):
    """The first Ctrl-C asks for a stop after the current step; a second one, before that, stops
    at once (status 1) and writes no checkpoint (the state in the middle of a step is none to
    resume from)."""
    overrides = {**RAM, "trainer": _trainer(tmp_path, 1)}
    # a long pause: on a loaded machine the two signals must still land inside the same step
    overrides["trainer"]["callbacks"].append({"class_path": "fault_helpers.Pause", "init_args": {"seconds": 5.0}})
    proc, log = _train_subprocess(tmp_path, "stopped", "ram_quickstart.yaml", overrides)
    deadline = time.monotonic() + 300
    while not glob.glob(str(tmp_path / "stopped" / "**" / "stepstep=1.ckpt"), recursive=True):
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.05)
    # step 1's checkpoint is written after its pause (Lightning runs checkpoint callbacks last),
    # just before the stop check that ends it: wait into step 2's 5-s pause
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)  # during step 2's pause: the stop would come at its end...
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)  # ...but this one comes first
    assert proc.wait(timeout=120) == 1, log.read_text()[-3000:]
    assert "press Ctrl-C again to stop at once" in log.read_text()
    assert not glob.glob(str(tmp_path / "stopped" / "**" / "interrupted.ckpt"), recursive=True)
