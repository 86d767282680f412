"""A tiny fit that learns: the class is written in the top-left 4x4 corner of a noisy 12x12
image, the first glimpse (4x4, centre) sees only noise, so the model is right only if the
location policy learns, through REINFORCE, to send the second glimpse to the corner."""

import os
import re
import shutil
import subprocess
import sys
import time

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from raccn.lit import RAMLitModule
from raccn.models import RecurrentAttentionModel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the C++ compiler torch.compile's default (inductor) backend builds CPU kernels with: $CXX, else g++
CXX = os.environ.get("CXX", "g++")
HAS_CXX = shutil.which(CXX) is not None


def corner_task(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    x = torch.rand(n, 1, 12, 12, generator=g) * 0.3
    patterns = torch.zeros(4, 4, 4)
    patterns[0, :2], patterns[1, 2:], patterns[2, :, :2], patterns[3, :, 2:] = 1, 1, 1, 1
    x[:, 0, :4, :4] = patterns[y]
    return TensorDataset(x, y)


class CornerData(pl.LightningDataModule):
    num_classes, num_channels, image_size = 4, 1, (12, 12)

    def train_dataloader(self):
        return DataLoader(corner_task(64 * 700, 0), batch_size=64, shuffle=True)

    def val_dataloader(self):
        return DataLoader(corner_task(500, 1), batch_size=250)

    test_dataloader = val_dataloader


def tiny_net(**kwargs) -> RecurrentAttentionModel:
    """A small RAM for the corner task (4 classes, 12x12 images)."""
    args = {"num_classes": 4, "glimpses": 2, "patch_size": 4, "glimpse_hidden": 8, "glimpse_dim": 8, "hidden_size": 8}
    return RecurrentAttentionModel(**(args | kwargs))


def test_ram_learns_where_to_look(tmp_path):
    pl.seed_everything(0)
    net = RecurrentAttentionModel(num_classes=4, glimpses=2, patch_size=4, scales=1, glimpse_hidden=32,
                                  glimpse_dim=64, hidden_size=64, std=0.25, init_loc="center")
    model = RAMLitModule(net, optimizer=lambda p: torch.optim.Adam(p, lr=3e-3))
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path)
    data = CornerData()
    trainer.fit(model, datamodule=data)
    (result,) = trainer.test(model, datamodule=data, verbose=False)
    assert result["test/acc"] > 0.9
    assert result["test/acc_glimpse1"] < 0.5  # one look at the centre cannot tell
    assert result["test/error"] < 10.0
    x = data.val_dataloader().dataset.tensors[0][:100]
    with torch.no_grad():
        second = model.net(x, deterministic=True).locations[:, 1]
    assert (second < -0.4).all()  # the policy mean points at the top-left corner


def test_train_metrics_are_logged_at_every_logging_step(tmp_path):
    """The training step logs only at Lightning's logging steps; none of them may be missed."""
    import csv

    from pytorch_lightning.loggers import CSVLogger

    pl.seed_everything(0)
    model = RAMLitModule(tiny_net())
    trainer = pl.Trainer(max_steps=20, log_every_n_steps=5, accelerator="cpu", enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         logger=CSVLogger(tmp_path, name="log"))
    trainer.fit(model, datamodule=CornerData())
    rows = list(csv.DictReader((tmp_path / "log" / "version_0" / "metrics.csv").read_text().splitlines()))
    logged = {int(r["step"]): r for r in rows if r.get("train/loss")}
    assert sorted(logged) == [4, 9, 14, 19]
    for r in logged.values():
        for name in ("train/reward", "train/ce", "train/reinforce", "train/baseline_mse"):
            assert r[name] != ""


def test_wall_clock_is_logged_after_every_validation_epoch(tmp_path):
    import csv

    from pytorch_lightning.loggers import CSVLogger

    from raccn.callbacks import WallClock

    model = RAMLitModule(tiny_net())
    trainer = pl.Trainer(max_epochs=3, limit_train_batches=3, limit_val_batches=1, accelerator="cpu",
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         logger=CSVLogger(tmp_path, name="log"), callbacks=[WallClock()])
    trainer.fit(model, datamodule=CornerData())
    rows = list(csv.DictReader((tmp_path / "log" / "version_0" / "metrics.csv").read_text().splitlines()))
    elapsed = [float(r["time/elapsed_s"]) for r in rows if r.get("time/elapsed_s")]
    assert len(elapsed) == 3 and elapsed == sorted(elapsed) and elapsed[0] > 0
    assert all(r.get("val/acc") for r in rows if r.get("time/elapsed_s"))


def test_policy_lr_factor_scales_only_the_policy_group():
    model = RAMLitModule(
        tiny_net(glimpses=3), policy_lr_factor=0.15,
        optimizer=lambda p: torch.optim.Adam(p, lr=2e-3),
        scheduler=lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10),
    )
    conf = model.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    rest, policy = opt.param_groups
    assert {id(p) for p in policy["params"]} == {id(p) for p in model.net.locator.parameters()}
    assert len(rest["params"]) + len(policy["params"]) == len(list(model.parameters()))
    assert (rest["lr"], policy["lr"]) == (pytest.approx(2e-3), pytest.approx(3e-4))
    for _ in range(4):
        opt.step()
        sched.step()
    assert policy["lr"] / rest["lr"] == pytest.approx(0.15)  # the schedule keeps the ratio
    assert rest["lr"] < 2e-3


@pytest.mark.parametrize("factor", [0.0, -1.0])
def test_policy_lr_factor_must_be_positive(factor):
    with pytest.raises(ValueError, match="policy_lr_factor must be > 0"):
        RAMLitModule(tiny_net(), policy_lr_factor=factor)


@pytest.mark.skipif(not HAS_CXX, reason=f"needs a C++ compiler for torch.compile's inductor backend ({CXX} "
                    "not found); compile: true falls back to eager there (tested below)")
def test_compiled_training_step_learns_and_matches_eager_loss(tmp_path):
    """model.compile: the compiled training loss equals the eager one on the same sampled
    locations' distribution (deterministic policy here), a compiled run still learns, and the
    module copies and pickles (EMA copies, spawned processes) without a compiled function."""
    import copy
    import functools
    import pickle

    pl.seed_everything(0)
    net = RecurrentAttentionModel(num_classes=4, glimpses=2, patch_size=4, scales=1, glimpse_hidden=32,
                                  glimpse_dim=64, hidden_size=64, std=0.25, init_loc="center")
    model = RAMLitModule(net, compile=True, optimizer=functools.partial(torch.optim.Adam, lr=3e-3))
    x, y = corner_task(64, 5).tensors
    model.net.locator.std = 1e-6  # near-deterministic policy: both draw almost the same locations
    eager, compiled = model.training_loss(x, y), model.compiled_training_loss(x, y)
    torch.testing.assert_close(compiled.ce, eager.ce, rtol=1e-4, atol=1e-4)
    assert not model._compile_failed
    for twin in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        torch.testing.assert_close(twin.compiled_training_loss(x, y).ce, eager.ce, rtol=1e-4, atol=1e-4)
    model.net.locator.std = 0.25
    pl.seed_everything(0)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path)
    data = CornerData()
    trainer.fit(model, datamodule=data)
    (result,) = trainer.test(model, datamodule=data, verbose=False)
    assert result["test/acc"] > 0.9


@pytest.fixture
def compile_with(monkeypatch):
    """Make RAMLitModule's compiled training loss with ``torch.compile`` replaced by ``fake``."""
    from raccn.lit import glimpse_training

    def use(fake):
        monkeypatch.setattr(torch, "compile", fake)
        monkeypatch.setattr(glimpse_training, "missing_cxx_compiler", lambda: None)  # the fake needs none
        glimpse_training.compiled.cache_clear()

    yield use
    glimpse_training.compiled.cache_clear()


def test_compiled_training_loss_makes_the_planes_eagerly_and_two_graphs(compile_with):
    """Compiled, the glimpse planes are made eagerly (first in the forward) and the rest
    compiles into two graphs, the forward and the loss, with no break between the glimpses."""
    graphs = []

    def counting_backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    real_compile = torch.compile
    compile_with(lambda fn, **kwargs: real_compile(fn, backend=counting_backend))
    torch._dynamo.reset()
    model = RAMLitModule(RecurrentAttentionModel(num_classes=4, glimpses=3, patch_size=4, scales=2), compile=True)
    x, y = torch.rand(8, 1, 16, 16), torch.randint(0, 4, (8,))
    parts = model.compiled_training_loss(x, y)
    parts.loss.backward()
    assert len(graphs) == 2
    ops = [[str(n.target) for n in g.graph.nodes if n.op == "call_function"] for g in graphs]
    assert sum("grid_sample" in op for op in ops[0]) == 3 * 2  # every glimpse of every scale
    assert any("cross_entropy" in op for op in ops[1])
    assert all(p.grad is not None for n, p in model.net.named_parameters() if not n.startswith("locator"))
    model.compiled_training_loss(x, y)
    assert len(graphs) == 2  # nothing recompiled


def test_compile_failure_falls_back_to_eager_with_a_warning(compile_with):
    def broken_compile(fn, **kwargs):
        def call(*args):
            raise RuntimeError("no working C++ compiler found\nmore lines")
        return call

    compile_with(broken_compile)
    model = RAMLitModule(RecurrentAttentionModel(num_classes=4, glimpses=2, patch_size=4), compile=True)
    x, y = corner_task(8, 0).tensors
    with pytest.warns(UserWarning, match="torch.compile failed .*no working C\\+\\+ compiler.*compile: false"):
        parts = model.compiled_training_loss(x, y)
    assert parts.loss.requires_grad
    assert model._compile_failed  # eager from now on, no retry
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.compiled_training_loss(x, y)  # no second warning


def test_real_compile_without_a_compiler_falls_back_to_eager():
    """``compile=True`` with the real ``torch.compile`` (inductor) where no C++ compiler is found:
    a warning saying what to do, at once (before any tracing), and the eager loss, equal to the
    plain training loss on the same random stream. Run without a compiler by
    ``test_the_compile_tests_pass_with_no_cxx_on_the_path``."""
    if HAS_CXX:
        pytest.skip(f"a C++ compiler is on PATH ({CXX}): this test needs none; "
                    "test_the_compile_tests_pass_with_no_cxx_on_the_path runs it without one")
    from raccn.lit import glimpse_training

    glimpse_training.compiled.cache_clear()
    model = RAMLitModule(RecurrentAttentionModel(num_classes=4, glimpses=2, patch_size=4), compile=True)
    x, y = corner_task(8, 0).tensors
    torch.manual_seed(0)
    start = time.monotonic()
    with pytest.warns(UserWarning, match=r"torch.compile failed \(no C\+\+ compiler found: .*g\+\+ not found"
                                         r".*Install a C\+\+ compiler"):
        fallback = model.compiled_training_loss(x, y)
    assert time.monotonic() - start < 5  # no tracing first
    torch.manual_seed(0)
    eager = model.training_loss(x, y)
    assert model._compile_failed
    torch.testing.assert_close(fallback.loss, eager.loss, rtol=0, atol=0)


def test_the_compile_tests_pass_with_no_cxx_on_the_path(tmp_path):
    """This file's compile tests, run where no C++ compiler can be found (``PATH`` an empty folder,
    ``CXX``/``CC`` naming missing files): the one that needs a compiler is skipped saying so, the
    real compile falls back to eager (the test above passes, not skipped), the rest pass."""
    bare = tmp_path / "bin"
    bare.mkdir()
    env = {**os.environ, "PATH": str(bare), "CXX": str(bare / "g++"), "CC": str(bare / "gcc"),
           "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    tests = [os.path.join("tests", "test_ram_learning.py")]  # (test_glimpse's and test_dram_module's
    # compile tests use the eager backend or a fake compile: no compiler involved)
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-o", "addopts=", "-q", "-rA",
         "-k", "compile and not no_cxx_on_the_path", *tests],
        check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    report = out.stdout[-4000:]
    assert out.returncode == 0, report
    assert "PASSED tests/test_ram_learning.py::test_real_compile_without_a_compiler_falls_back_to_eager" in report
    assert re.search(r"SKIPPED .*test_ram_learning.py:\d+: needs a C\+\+ compiler", report), report
    assert re.search(r"\b3 passed, 1 skipped", report), report


def test_a_copy_of_the_module_shares_its_optimiser_factory():
    """``EMAWeightAveraging`` deep-copies the module. The optimiser callable LightningCLI injects
    reaches the CLI, the trainer and, under DDP, the launcher's process handles, which cannot be
    copied (``cannot pickle '_thread.lock'``): a factory holding a lock stands in for it. The
    copy shares the factory, builds the same optimiser, and its weights are its own."""
    import copy
    import functools
    import threading

    lock = threading.Lock()  # what the CLI's instantiator reaches under DDP
    factory = functools.partial(lambda params, lr, held: torch.optim.Adam(params, lr=lr), lr=0.01, held=lock)
    with pytest.raises(TypeError, match="cannot pickle '_thread.lock'"):
        copy.deepcopy(factory)
    model = RAMLitModule(tiny_net(), optimizer=factory)
    twin = copy.deepcopy(model)
    assert twin.optimizer_factory is model.optimizer_factory
    assert twin.configure_optimizers().param_groups[0]["lr"] == 0.01
    assert all(a is not b and torch.equal(a, b) for a, b in zip(twin.parameters(), model.parameters()))
