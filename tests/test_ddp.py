"""Several processes (issue 21): Lightning's DDP on CPU (gloo, 2 processes, ``train.py fit``
subprocesses, each process recording what it did with ``ddp_helpers.RankRecord``).

- RAM with an EMA of the weights (which failed under DDP before): the weights are identical
  across the processes and the training set is split between them, no image in both but the one
  the sampler repeats for an odd count; the test after fit draws its pictures and writes its
  report on rank 0 only (rank 0 alone used to enter ``Trainer.log_dir``'s broadcast there, and
  the run hung).
- RAM's logged ``val/acc`` is the accuracy over the whole validation split, equal to a
  one-process evaluation of the checkpoint's weights, not rank 0's share; W&B (offline) writes
  one run, from rank 0, and finishes it.
- RA-CNN across warm-up, APN pre-training, classification and ranking: every process in the same
  phase at every step, the weights identical at the end and during validation (batch-norm
  statistics included: ``raccn.callbacks.BufferSync``), pictures and report by rank 0 only.
- RA-CNN resumed on the same 2 processes: bit-identical to the run that never stopped (the
  distributed sampler's epoch: ``raccn.callbacks.ResumeState``); resumed on another number of
  processes, 2 -> 1 and 1 -> 2: what continues and what does not (the test's docstring).

One RAM run (W&B offline, 3 steps) serves the first three tests, one RA-CNN run (12 steps) the
others; the one-process resume runs in this process.
"""

import csv
import glob
import json
import os
import subprocess
import sys
from collections import Counter

import pytest
import torch
import yaml

from raccn.cli import main
from raccn.datamodules import ClutteredDigitsDataModule
from raccn.lit import RAMLitModule
from raccn.lit.phase_schedule import PhaseSchedule

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
sys.path.insert(0, TESTS)  # ddp_helpers (the in-process run's callback), wandb_records
from wandb_records import read_records


def _record(folder) -> str:
    return f'--trainer.callbacks+={{"class_path": "ddp_helpers.RankRecord", "init_args": {{"folder": "{folder}"}}}}'


def _fit_ddp(cwd, config, *overrides, env=None, timeout=240):
    """``train.py fit --config configs/<config> <overrides>`` on 2 CPU processes in ``cwd``;
    returns each process's ``RankRecord`` (``cwd/ranks``)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, TESTS]), "OMP_NUM_THREADS": "1",
           "WANDB_MODE": "disabled", **(env or {})}
    args = [sys.executable, os.path.join(ROOT, "train.py"), "fit", "--config", os.path.join(ROOT, "configs", config),
            *overrides, "--trainer.devices", "2", "--trainer.accelerator", "cpu",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            _record(cwd / "ranks")]
    out = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    return [torch.load(cwd / "ranks" / f"rank{r}.pt", weights_only=False) for r in (0, 1)]


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(v, b[k]) for k, v in a.items())


# -- RAM: one run for the weights and data, the validation metric, and W&B ------------------------
VAL, BATCH = 128, 32  # 2 processes x 2 batches x 32: Lightning's distributed sampler pads nothing


@pytest.fixture(scope="module")
def ram_ddp(tmp_path_factory):
    """RAM on 2 processes with an EMA of the weights and W&B offline: 3 training steps, a
    validation of all ``VAL`` images, then the test after fit (one batch a process); its folder
    and the processes' records."""
    cwd = tmp_path_factory.mktemp("ram_ddp")
    home = cwd / "wandb_home"  # wandb's settings, cache and staging: nothing outside the run folder
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONFIG_DIR": str(home / "config"),
           "WANDB_CACHE_DIR": str(home / "cache"), "WANDB_DATA_DIR": str(home / "data")}
    ranks = _fit_ddp(
        cwd, "ram_quickstart.yaml", "--trainer.strategy", "ddp",
        "--data.init_args.batch_size", str(BATCH), "--data.init_args.val_size", str(VAL),
        "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3", "--trainer.limit_test_batches", "1",
        "--trainer.log_every_n_steps", "1", "--test_after_fit", "true",
        ('--trainer.callbacks+={"class_path": "pytorch_lightning.callbacks.EMAWeightAveraging", '
         '"init_args": {"decay": 0.9}}'), env=env)
    return cwd, ranks


def test_ram_under_ddp_with_ema_same_weights_split_data(ram_ddp):
    cwd, ranks = ram_ddp
    assert [r["world_size"] for r in ranks] == [2, 2] and ranks[0]["global_step"] == ranks[1]["global_step"] == 3
    # the same weights in both processes (gradients all-reduced, the EMA updated alike)
    assert _same(ranks[0]["weights"], ranks[1]["weights"])
    # each process its own half of the (shuffled) training set: together every image, and in
    # both only the one Lightning's distributed sampler repeats to even out an odd count
    n = ranks[0]["size"]
    seen = [set(r["seen"]) for r in ranks]
    assert n % 2 == 1 and len(ranks[0]["seen"]) == len(ranks[1]["seen"]) == (n + 1) // 2
    assert seen[0] | seen[1] == set(range(n)) and len(seen[0] & seen[1]) == 1
    # the test after fit: pictures and report by rank 0 alone, and the run did not hang
    tested = [torch.load(cwd / "ranks" / f"rank{r}_test.pt", weights_only=False)["written"] for r in (0, 1)]
    assert tested[0]["GlimpseTrajectoryWriter"] and tested[0]["EvalReportWriter"]
    assert all(os.path.exists(cwd / f) for files in tested[0].values() for f in files)
    assert tested[1] == {"GlimpseTrajectoryWriter": [], "EvalReportWriter": []}


def test_ram_validation_accuracy_is_synchronised(ram_ddp):
    """The logged ``val/acc`` equals one process's evaluation of the checkpoint's weights on the
    same ``VAL`` images, exactly. RAM samples its glimpse locations in validation from the
    global generator, so another evaluation draws other locations and may differ in a few images;
    this one replays each batch of each process from the generator state that process had before
    it (recorded), the same images in the same batches, so every prediction is the one made under
    DDP. The two processes' shares score differently, so rank 0's own accuracy would not pass.
    (After 3 steps the model predicts nearly one class: the accuracies mostly count that class in
    each share, which is enough to tell the synchronised metric from rank 0's.)"""
    cwd, ranks = ram_ddp
    shards = [r["val"]["indices"] for r in ranks]
    assert ranks[0]["val"]["size"] == VAL and shards == [list(range(0, VAL, 2)), list(range(1, VAL, 2))]
    ckpt = cwd / "runs" / "ram_quickstart" / "version_0" / "checkpoints" / "last.ckpt"  # written after it
    module = RAMLitModule.load_from_checkpoint(ckpt, map_location="cpu").eval()
    assert all(_same(module.state_dict(), r["val"]["weights"]) for r in ranks)
    data = ClutteredDigitsDataModule.load_from_checkpoint(ckpt)
    data.setup("fit")
    images, targets = (torch.cat(t) for t in zip(*data.val_dataloader()))  # the split, in order
    correct = []
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        for shard, record in zip(shards, ranks):
            batches = [shard[i:i + BATCH] for i in range(0, len(shard), BATCH)]
            assert len(record["val"]["rng"]) == len(batches) == VAL // (2 * BATCH)
            hits = 0
            for index, state in zip(batches, record["val"]["rng"]):
                torch.set_rng_state(state)
                probs, _ = module.predict_proba(images[index])
                hits += int((probs[:, -1].argmax(1) == targets[index]).sum())
            correct.append(hits)
    assert correct[0] != correct[1]  # (else a metric of rank 0's share alone would pass too)
    logged = [r["val"]["logged"]["val/acc"] for r in ranks]
    assert logged[0] == logged[1] == pytest.approx(sum(correct) / VAL, abs=1e-7)  # (float32)
    with open(cwd / "runs" / "ram_quickstart" / "version_0" / "metrics.csv") as f:
        (written,) = [float(row["val/acc"]) for row in csv.DictReader(f) if row["val/acc"]]
    assert written == logged[0]


def test_wandb_writes_one_offline_run_from_rank0(ram_ddp):
    """Without credentials or network, W&B writes one offline run under the run's ``wandb``
    folder (none from rank 1, anywhere), and it is complete: its transaction log, which
    ``wandb sync`` uploads, holds the run, the config, every value of ``metrics.csv`` at its
    step (training, validation and test), the test's glimpse pictures and table (their files
    beside it), and the exit record that finishing the run writes."""
    cwd, _ = ram_ddp
    runs = glob.glob(str(cwd / "**" / "offline-run-*"), recursive=True)
    assert len(runs) == 1 and os.path.dirname(runs[0]) == str(cwd / "runs" / "wandb"), runs
    assert not [p for p in glob.glob(str(cwd / "**" / "run-*"), recursive=True) if os.path.isdir(p)]  # nor online
    (log,) = glob.glob(os.path.join(runs[0], "run-*.wandb"))
    for name in ("files/requirements.txt", "files/output.log", "logs/debug.log"):
        assert os.path.getsize(os.path.join(runs[0], name)) > 0, name
    records = read_records(log)
    kinds = Counter(r.WhichOneof("record_type") for r in records)
    assert kinds["run"] == 1 and kinds["exit"] == 1 and kinds["config"] >= 1, kinds
    config = {i.key: json.loads(i.value_json) for r in records if r.HasField("config") for i in r.config.update}
    assert config["val_size"] == VAL and config["mc_samples"] == 1
    rows = [{i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
            for r in records if r.HasField("history")]
    values = {(row["trainer/global_step"], k): v for row in rows for k, v in row.items()}
    with open(cwd / "runs" / "ram_quickstart" / "version_0" / "metrics.csv") as f:
        logged = {(int(row["step"]), k): float(v) for row in csv.DictReader(f) for k, v in row.items()
                  if v and k not in ("step", "epoch")}
    assert {k for _, k in logged} >= {"train/loss", "val/acc", "test/acc"}
    assert {key: v for key, v in values.items() if not key[1].startswith(("_", "trainer/", "epoch", "test/glimpses"))} \
        == logged
    media = {k: v for (_, k), v in values.items() if k.startswith("test/glimpses")}  # the test's pictures, table
    assert media["test/glimpses/count"] == 8 and media["test/glimpses_table/nrows"] == 8 * 4  # 8 images, 4 glimpses
    for name in [*media["test/glimpses/filenames"], media["test/glimpses_table/path"]]:
        assert os.path.getsize(os.path.join(runs[0], "files", name)) > 0, name


# -- RA-CNN: phases, and resuming ----------------------------------------------------------------
RACNN = {  # steps: 0 warmup, 1 pretrain, then cls cls rank: 2-3 cls, 4 rank, 5-6 cls, 7 rank, ...
    "seed_everything": 7,
    "trainer": {"max_epochs": 100, "logger": [{"class_path": "pytorch_lightning.loggers.CSVLogger",
                                               "init_args": {"save_dir": "runs", "name": "racnn"}}]},
    "data": {"init_args": {"batch_size": 4, "train_size": 24, "val_size": 8, "test_size": 8}},
    "model": {"init_args": {
        "net": {"init_args": {"input_sizes": [32, 32], "apn_hidden": 16}},
        "apn_pretrain_steps": 1, "cls_length": 2, "rank_length": 1, "lr_decay": None,
        "extras": {"warmup_steps": 1, "warmup_boxes": "random", "box_jitter": 0.05,
                   "pretrain_target": "centroid", "pretrain_features": "stride8"},
    }},
}
SCHEDULE = PhaseSchedule(cls_length=2, rank_length=1, pretrain_steps=1, warmup_steps=1)
STEPS = 12  # 24 images in batches of 4: an epoch is 3 steps on 2 processes, 6 on one
KEEP = ('--trainer.callbacks+={"class_path": "pytorch_lightning.callbacks.ModelCheckpoint", "init_args": '
        '{"filename": "%s", "save_top_k": -1, %s}}')
# every epoch's checkpoint (epoch=1.ckpt: step 6, at the epoch's end); monitoring "epoch" tells it
# apart from the config's last.ckpt writer (Lightning refuses two of the same state key)
KEEP_EPOCHS = KEEP % ("{epoch}", '"monitor": "epoch", "mode": "max"')
KEEP_STEPS = KEEP % ("mid-{step}", '"monitor": null, "every_n_train_steps": 2')
DDP = ["--trainer.strategy", "ddp_find_unused_parameters_true", "--trainer.max_steps", str(STEPS)]


def _racnn_config(folder) -> str:
    path = folder / "racnn.yaml"
    path.write_text(yaml.safe_dump(RACNN))
    return str(path)


def _ckpt(folder, name="last.ckpt"):
    return folder / "runs" / "racnn" / "version_0" / "checkpoints" / name


@pytest.fixture(scope="module")
def racnn_ddp(tmp_path_factory):
    """RA-CNN on 2 processes for ``STEPS`` steps (4 epochs, all four phases), every epoch's
    checkpoint kept, then tested; its folder and the processes' records."""
    cwd = tmp_path_factory.mktemp("racnn_ddp")
    ranks = _fit_ddp(cwd, "racnn_quickstart.yaml", "--config", _racnn_config(cwd), *DDP,
                     "--test_after_fit", "true", KEEP_EPOCHS)
    return cwd, ranks


def test_racnn_under_ddp_phases_weights_pictures(racnn_ddp):
    cwd, ranks = racnn_ddp
    expected = [(s, SCHEDULE.at(s).name) for s in range(STEPS)]
    assert {name for _, name in expected} == {"warmup", "pretrain", "cls", "rank"}
    logged = {"warmup": 1.0, "pretrain": 0.0, "cls": 1.0, "rank": 2.0}  # train/phase
    for r in ranks:  # every process in the same phase at every step, and it ran that phase
        assert r["world_size"] == 2 and r["phases"] == [(s, name, logged[name]) for s, name in expected]
    # the same weights at the end, and in the last validation (which followed a classification
    # step, after which each process had its own batch-norm statistics)
    assert SCHEDULE.at(STEPS - 1).name == "cls" and any("running_mean" in k for k in ranks[0]["weights"])
    assert _same(ranks[0]["weights"], ranks[1]["weights"])
    assert _same(ranks[0]["val"]["weights"], ranks[1]["val"]["weights"])
    assert ranks[0]["val"]["logged"] == ranks[1]["val"]["logged"]
    # the training set split between the processes (24 images: no padding)
    seen = [set(r["seen"]) for r in ranks]
    assert len(seen[0]) == len(seen[1]) == 12 and seen[0] | seen[1] == set(range(24))
    # zoom chains (every validation and the test) and the report by rank 0 alone
    assert ranks[0]["written"]["ZoomChainWriter"] and ranks[1]["written"]["ZoomChainWriter"] == []
    tested = [torch.load(cwd / "ranks" / f"rank{r}_test.pt", weights_only=False)["written"] for r in (0, 1)]
    assert tested[0]["ZoomChainWriter"] and tested[0]["EvalReportWriter"]
    assert all(os.path.exists(cwd / f) for files in tested[0].values() for f in files)
    assert tested[1] == {"ZoomChainWriter": [], "EvalReportWriter": []}


def _loaded(record, ckpt) -> bool:
    """Whether the optimisers' states at the start of training were the checkpoint's."""
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)["optimizer_states"]
    return all(
        a["state"].keys() == b["state"].keys()
        and all(torch.equal(a["state"][p][k], b["state"][p][k]) for p in a["state"] for k in a["state"][p])
        for a, b in zip(record["start"]["optimizers"], saved)
    )


def _adam_steps(ckpt) -> list[set[int]]:
    """Per optimiser of the checkpoint (classification, APN), the step counts of its parameters."""
    states = torch.load(ckpt, map_location="cpu", weights_only=False)["optimizer_states"]
    return [{int(s["step"]) for s in opt["state"].values()} for opt in states]


def _counts(steps: int) -> list[set[int]]:
    """The steps each optimiser takes in global steps 0..steps-1 (classification: warm-up and
    classification; APN: pre-training and ranking)."""
    cls = sum(SCHEDULE.at(s).name in ("warmup", "cls") for s in range(steps))
    return [{cls}, {steps - cls}]


def test_racnn_resumes_exactly_under_ddp(racnn_ddp, tmp_path):
    """Stopped after epoch 1 (step 6) and resumed on the same 2 processes, the run ends with the
    same weights, bit for bit, as the one that never stopped, having read the same images. The
    distributed sampler shuffles from its seed and the epoch Lightning gives it; resuming from a
    checkpoint written at an epoch's end Lightning (2.6) gave it the next epoch's, so every
    epoch after the resume read another permutation (and ended elsewhere). Fixed in
    ``raccn.callbacks.ResumeState``."""
    first, straight = racnn_ddp
    ckpt = _ckpt(first, "epoch=1.ckpt")
    ranks = _fit_ddp(tmp_path, "racnn_quickstart.yaml", "--config", _racnn_config(tmp_path), *DDP,
                     "--test_after_fit", "false", "--ckpt_path", str(ckpt))
    for r, s in zip(ranks, straight):
        assert r["start"]["global_step"] == 6 and _loaded(r, ckpt)
        assert r["phases"] == s["phases"][6:]
        assert r["seen"] == s["seen"]  # the images of the last epoch, in order
        assert _same(r["weights"], s["weights"])


def test_racnn_resumes_into_another_number_of_processes(racnn_ddp, tmp_path, monkeypatch):
    """A 2-process checkpoint resumed with 1 process, and a 1-process one with 2, continue the run:
    the global step from the checkpoint (and with it the phase), both optimisers' states (their
    moments and step counts), the learning-rate schedules and the random streams; training
    finishes. The first resume starts from the checkpoint written at the end of epoch 1 (step 6),
    the second from one written in the middle of an epoch (step 8).

    Not exact: the data. The distributed sampler's shards depend on the number of processes and
    an epoch has another number of steps (here 3 on 2 processes, 6 on one), so after the resume
    the batches differ from those the run would have read without changing (and a resume in the
    middle of an epoch skips, in the new shard, as many batches as had been trained: a few
    images of that epoch are read twice, others not at all); each step also averages the
    gradient of another number of images. The weights are then not those of an uninterrupted
    run (docs/usage.md, "Several GPUs")."""
    first, _ = racnn_ddp
    # 2 -> 1: from the 2-process run's checkpoint at step 6, one process, to step 12 (epoch 2)
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the subprocesses (OMP_NUM_THREADS=1)
    try:
        cli = main(["fit", "--config", os.path.join(ROOT, "configs", "racnn_quickstart.yaml"),
                    "--config", _racnn_config(tmp_path), "--trainer.max_steps", str(STEPS),
                    "--test_after_fit", "false", "--trainer.enable_progress_bar", "false",
                    "--trainer.enable_model_summary", "false", "--ckpt_path", str(_ckpt(first, "epoch=1.ckpt")),
                    _record(tmp_path / "ranks"), KEEP_STEPS])
    finally:
        torch.set_num_threads(threads)
    assert cli.trainer.state.finished and cli.trainer.world_size == 1
    one = torch.load(tmp_path / "ranks" / "rank0.pt", weights_only=False)
    assert one["start"]["global_step"] == 6 and _loaded(one, _ckpt(first, "epoch=1.ckpt"))
    assert [(s, name) for s, name, _ in one["phases"]] == [(s, SCHEDULE.at(s).name) for s in range(6, STEPS)]
    assert one["global_step"] == STEPS and sorted(one["seen"]) == list(range(24))  # an epoch: every image
    assert _adam_steps(_ckpt(tmp_path)) == _counts(STEPS)  # every step of each optimiser, before and after

    # 1 -> 2: from the one-process run's checkpoint in the middle of its epoch (step 8 of 6..11)
    mid = _ckpt(tmp_path, "mid-step=8.ckpt")
    again = tmp_path / "again"
    again.mkdir()
    ranks = _fit_ddp(again, "racnn_quickstart.yaml", "--config", _racnn_config(again), *DDP,
                     "--test_after_fit", "false", "--ckpt_path", str(mid))
    for r in ranks:
        assert r["start"]["global_step"] == 8 and _loaded(r, mid) and r["global_step"] == STEPS
        assert [(s, name) for s, name, _ in r["phases"]] == [(s, SCHEDULE.at(s).name) for s in range(8, STEPS)]
    assert ranks[0]["phases"] == ranks[1]["phases"] and _same(ranks[0]["weights"], ranks[1]["weights"])
    seen = [set(r["seen"]) for r in ranks]  # the last epoch's shards
    assert len(seen[0]) == len(seen[1]) == 12 and seen[0] | seen[1] == set(range(24))
    assert _adam_steps(_ckpt(again)) == _counts(STEPS)
