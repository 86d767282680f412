"""Checkpoints: the injected network is rebuilt from a CLI run's checkpoint without passing it,
the published checkpoints load strictly and predict as when they were published, and the
publishing tool keeps the weights and moves old hyper-parameters into the injected layout."""

import glob
import os
import sys

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from raccn.checkpoints import inject_net_hparams, strip_checkpoint
from raccn.cli import main
from raccn.lit import RAMLitModule
from raccn.models import RecurrentAttentionModel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
PUBLISHED = sorted(glob.glob(os.path.join(ROOT, "checkpoints", "*.ckpt")))
QUICK = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", "--trainer.logger=false"]


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name


def test_strip_keeps_weights_and_a_python_built_net_is_passed_again(tmp_path):
    """Built in Python, the net is an object, not a config: it is not saved with the
    hyper-parameters, and load_from_checkpoint takes it again."""
    from test_ram_learning import CornerData, tiny_net

    model = RAMLitModule(tiny_net(), mc_samples=3)
    assert "net" not in model.hparams and model.hparams.mc_samples == 3
    trainer = pl.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, default_root_dir=tmp_path)
    trainer.fit(model, datamodule=CornerData())
    full = tmp_path / "full.ckpt"
    trainer.save_checkpoint(full)
    small = strip_checkpoint(str(full), str(tmp_path / "small.ckpt"))
    assert "optimizer_states" in torch.load(full, weights_only=False)
    assert "optimizer_states" not in small and (tmp_path / "small.ckpt").stat().st_size < full.stat().st_size
    torch.load(tmp_path / "small.ckpt", weights_only=True)  # plain data only: no pickled module
    loaded = RAMLitModule.load_from_checkpoint(tmp_path / "small.ckpt", net=tiny_net())
    same_weights(model, loaded)
    assert loaded.hparams.mc_samples == 3

    dropped = strip_checkpoint(str(full), str(tmp_path / "d.ckpt"), drop_hparams=["mc_samples"])
    assert "mc_samples" not in dropped["hyper_parameters"]
    with pytest.raises(ValueError, match="no hyper-parameter"):
        strip_checkpoint(str(full), str(tmp_path / "e.ckpt"), drop_hparams=["nope"])
    with pytest.raises(ValueError, match="must differ"):
        strip_checkpoint(str(full), str(full))


def test_cli_checkpoint_rebuilds_the_injected_net_without_passing_it(tmp_path, monkeypatch):
    """LightningCLI saves the run's model config, the net as class_path/init_args (num_classes
    linked from the data): load_from_checkpoint(path) alone rebuilds the same module."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    config = os.path.join(ROOT, "configs", "ram_quickstart.yaml")
    cli = main(["fit", "--config", config, *QUICK, "--trainer.max_steps=2", "--trainer.limit_val_batches=1",
                "--test_after_fit=false", "--model.init_args.net.init_args.hidden_size=48",
                "--model.init_args.mc_samples=2"])
    (ckpt,) = glob.glob(str(tmp_path / "runs" / "ram_quickstart" / "checkpoints" / "last.ckpt"))
    saved = torch.load(ckpt, weights_only=True)["hyper_parameters"]
    assert saved["net"]["class_path"] == "raccn.models.RecurrentAttentionModel"
    assert saved["net"]["init_args"]["hidden_size"] == 48 and saved["net"]["init_args"]["num_classes"] == 10
    for path in (ckpt, strip_checkpoint(ckpt, str(tmp_path / "small.ckpt")) and tmp_path / "small.ckpt"):
        loaded = RAMLitModule.load_from_checkpoint(path)
        assert isinstance(loaded.net, RecurrentAttentionModel) and loaded.net.core.hidden_size == 48
        assert loaded.hparams.mc_samples == 2
        same_weights(cli.model, loaded)


def test_inject_net_hparams_moves_the_net_arguments():
    old = {"_class_path": "raccn.lit.RAMLitModule", "num_classes": 10, "glimpses": 6, "patch_size": 12,
           "hidden_size": 256, "mc_samples": 10, "reinforce_weight": 1.0, "_instantiator": "x"}
    new = inject_net_hparams(old, "raccn.models.RecurrentAttentionModel")
    assert {k: v for k, v in new.items() if k != "net"} == {
        "_class_path": "raccn.lit.RAMLitModule", "mc_samples": 10, "reinforce_weight": 1.0, "_instantiator": "x"}
    assert new["net"]["class_path"] == "raccn.models.RecurrentAttentionModel"
    args = new["net"]["init_args"]
    assert (args["glimpses"], args["patch_size"], args["hidden_size"]) == (6, 12, 256)
    assert args["scales"] == 1 and args["init"] == "torch"  # absent: today's defaults
    RecurrentAttentionModel(**args)  # a complete argument list
    with pytest.raises(ValueError, match="already have 'net'"):
        inject_net_hparams(new, "raccn.models.RecurrentAttentionModel")
    with pytest.raises(ValueError, match="name none of"):
        inject_net_hparams({"mc_samples": 1}, "raccn.models.RecurrentAttentionModel")


# Fixed inputs: scikit-learn's bundled digits 0-5 (8x8, upscaled 2.5x to 20x20) at a fixed place
# on a black canvas; the policy's mean path (deterministic, first glimpse at the centre).
# Reference values: the published checkpoints under commit 0f4c820 (before they were re-saved in
# the injected layout): last-step argmax and its logit.
REFERENCE = {  # name -> (canvas side, (row, col) of the digit, predictions, top logits)
    "ram_mnist": (28, (4, 4), [0, 1, 2, 3, 6, 3], [8.2801, 1.8901, 1.9024, 3.0111, 2.9936, 2.1955]),
    "ram_translated": (60, (10, 27), [0, 8, 8, 3, 6, 3], [7.0191, 6.0455, 4.1486, 6.5522, 3.9482, 2.953]),
    "ram_cluttered": (60, (30, 12), [0, 8, 8, 3, 4, 3], [4.1327, 3.0748, 2.8815, 6.244, 2.7952, 4.28]),
}


def fixed_digits(side: int, at: tuple[int, int]) -> torch.Tensor:
    from sklearn.datasets import load_digits

    digits = torch.tensor(load_digits().images[:6], dtype=torch.float32)[:, None] / 16.0
    digits = F.interpolate(digits, scale_factor=2.5, mode="bilinear", align_corners=False).clamp(0, 1)
    canvas = torch.zeros(6, 1, side, side)
    canvas[..., at[0]:at[0] + 20, at[1]:at[1] + 20] = digits
    return canvas


def test_every_published_checkpoint_is_listed():
    assert {os.path.basename(p)[:-5] for p in PUBLISHED} == set(REFERENCE)


@pytest.mark.parametrize("path", PUBLISHED, ids=os.path.basename)
def test_published_checkpoint_loads_strictly_and_predicts_as_published(path):
    model = RAMLitModule.load_from_checkpoint(path, map_location="cpu", strict=True).eval()
    saved = torch.load(path, weights_only=True)
    assert set(saved["state_dict"]) == set(model.state_dict())  # every weight, under net.*
    assert all(k.startswith("net.") for k in saved["state_dict"])
    side, at, preds, top = REFERENCE[os.path.basename(path)[:-5]]
    with torch.no_grad():
        out = model.net(fixed_digits(side, at), deterministic=True)
    last = out.logits[:, -1]
    assert last.argmax(-1).tolist() == preds
    # kernels round differently across hosts and thread counts (the 8-glimpse path amplifies it
    # to ~0.01); a wrong or missing weight moves these by units
    torch.testing.assert_close(last.max(-1).values, torch.tensor(top), atol=0.02, rtol=0)
    assert out.logits.shape[1] == model.net.glimpses == len(model.test_acc)


@pytest.mark.parametrize("path", PUBLISHED, ids=os.path.basename)
def test_published_checkpoint_tests_from_the_command_line(path, tmp_path, monkeypatch):
    """`train.py test --config configs/<name>.yaml --ckpt_path checkpoints/<name>.ckpt`: the saved
    hyper-parameters parse into the config (here on 20 fake MNIST test digits)."""
    from test_datamodules import write_mnist

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    write_mnist(tmp_path / "mnist", gz=True)
    name = os.path.basename(path)[:-5]
    cli = main(["test", "--config", os.path.join(ROOT, "configs", f"{name}.yaml"), *QUICK, f"--ckpt_path={path}",
                f"--data.init_args.data_dir={tmp_path / 'mnist'}", "--data.init_args.val_size=10"])
    metrics = cli.trainer.callback_metrics
    assert 0.0 <= float(metrics["test/acc"]) <= 1.0
    assert f"test/acc_glimpse{cli.model.net.glimpses}" in metrics
    same_weights(cli.model, RAMLitModule.load_from_checkpoint(path))
