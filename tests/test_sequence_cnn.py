"""SequenceCNN, the plain multi-digit CNN baseline of DRAM: shapes, the fixed grid that keeps its
parameters independent of the image, its errors, and its training through DRAMLitModule (the
hybrid loss without glimpses is the cross-entropy; a short fit learns; predictions carry no
glimpses) and configs/cnn_mnist_sequences.yaml."""

from __future__ import annotations

import os
import sys

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from raccn.cli import main
from raccn.lit import DRAMLitModule
from raccn.losses import dram_loss
from raccn.models import SequenceCNN

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_dram_module import EOS, TwoDigits

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("side", [60, 100, 200])
def test_shapes_and_parameters_do_not_depend_on_the_image(side):
    torch.manual_seed(0)
    net = SequenceCNN(num_classes=10, in_channels=1, max_digits=3, channels=(8, 8, 16), grid=4, hidden_size=32)
    out = net(torch.rand(5, 1, side, side))
    assert out.logits.shape == (5, 3, 11) and net.eos_index == 10
    assert out.locations.shape == (5, 0, 2) and out.log_pi.shape == out.baselines.shape == (5, 0)
    # conv 5x5 1->8, 3x3 8->8, 3x3 8->16 (no biases: batch norm), 3 BN, fc 16*4*4 -> 32, heads 32 -> 3*11
    expected = 25 * 8 + 9 * 8 * 8 + 9 * 8 * 16 + 2 * (8 + 8 + 16) + (16 * 16 + 1) * 32 + (32 + 1) * 33
    assert n_params(net) == expected
    probs = net.eval().predict_proba(torch.rand(2, 1, side, side))
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 3))


def test_channels_last_gives_the_same_logits():
    torch.manual_seed(0)
    a = SequenceCNN(max_digits=2, channels=(8, 16), grid=3, hidden_size=16, channels_last=True).eval()
    b = SequenceCNN(max_digits=2, channels=(8, 16), grid=3, hidden_size=16, channels_last=False).eval()
    b.load_state_dict(a.state_dict())
    x = torch.rand(3, 1, 30, 30)
    torch.testing.assert_close(a(x).logits, b(x).logits, atol=1e-5, rtol=1e-5)


def test_pooling_before_relu_is_relu_before_pooling():
    """The block's order (conv, max-pool, ReLU) computes the textbook one (conv, ReLU, max-pool)."""
    torch.manual_seed(0)
    net = SequenceCNN(max_digits=1, channels=(4,), grid=2, hidden_size=4, batch_norm=False)
    x = torch.rand(2, 1, 8, 8)
    conv = net.features[0]
    torch.testing.assert_close(net.features(x), F.max_pool2d(F.relu(conv(x)), 2))


@pytest.mark.parametrize("kwargs, images, match", [
    ({"in_channels": 3}, torch.rand(1, 1, 32, 32), "in_channels = 3"),
    ({"channels": (4, 4, 4)}, torch.rand(1, 1, 6, 6), "H, W >= 8"),
])
def test_wrong_images_fail_with_the_shape(kwargs, images, match):
    with pytest.raises(ValueError, match=match):
        SequenceCNN(**kwargs)(images)


@pytest.mark.parametrize("kwargs, match", [({"channels": []}, "channels must be"),
                                           ({"channels": [8, 0]}, "channels must be"),
                                           ({"max_digits": 0}, "max_digits"),
                                           ({"grid": 0}, "grid")])
def test_invalid_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SequenceCNN(**kwargs)


def small_cnn() -> SequenceCNN:
    return SequenceCNN(num_classes=4, in_channels=1, max_digits=3, channels=(16, 32), grid=(2, 5), hidden_size=64)


def test_the_hybrid_loss_without_glimpses_is_the_cross_entropy():
    torch.manual_seed(0)
    net = small_cnn()
    x, y = torch.rand(6, 1, 8, 20), torch.tensor([[1, EOS, 0], [2, 3, EOS], [0, 1, 2]] * 2)
    out = net(x)
    parts = dram_loss(out, y)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 1, 1]] * 2).bool()
    ce = F.cross_entropy(out.logits[mask], y[mask], reduction="sum") / 6
    torch.testing.assert_close(parts.loss, ce)
    assert parts.reinforce.item() == 0 and parts.baseline.item() == 0


def test_dram_module_trains_the_cnn_to_read_two_digits(tmp_path):
    """tests/test_dram.py's two-digit task through DRAMLitModule: the CNN sees both digits at
    once; untrained it reads no sequence right, after 40 steps (seed 0: all right after 20)
    nearly all. No parameter is in the policy group."""
    pl.seed_everything(0)
    module = DRAMLitModule(small_cnn(), optimizer=lambda p: torch.optim.Adam(p, lr=3e-3))
    optimizer = module.configure_optimizers()
    assert optimizer.param_groups[1]["params"] == []
    trainer = pl.Trainer(max_steps=40, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                         num_sanity_val_steps=0, limit_val_batches=0)
    data = TwoDigits()
    (before,) = trainer.test(module, datamodule=data, verbose=False)
    assert before["test/seq_acc"] < 0.1
    trainer.fit(module, datamodule=data)
    (result,) = trainer.test(module, datamodule=data, verbose=False)
    assert result["test/seq_acc"] > 0.9  # chance about 5 %
    assert result["test/digit_acc"] > 0.95 and result["test/len_acc"] > 0.95
    module.eval()
    x = data.val_dataloader().dataset.tensors[0]
    prediction = module.predict_step(x[:4], 0)
    assert set(prediction) == {"sequence", "prob"}  # no glimpses to draw
    assert prediction["sequence"].shape == (4, 3) and ((prediction["prob"] > 0) & (prediction["prob"] <= 1)).all()
    assert (prediction["sequence"] == module.net(x[:4]).logits.argmax(-1)).all()


def test_cnn_config_parses_and_matches_the_dram_data_settings(tmp_path):
    import yaml

    cli = main(["--config", os.path.join(ROOT, "configs", "cnn_mnist_sequences.yaml"),
                f"--data.init_args.data_dir={tmp_path / 'data'}",
                "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false"], run=False)
    model, net, dm = cli.model, cli.model.net, cli.datamodule
    assert isinstance(model, DRAMLitModule) and isinstance(net, SequenceCNN)
    assert net.num_classes == dm.num_classes == 10 and net.max_digits == dm.max_length == 3
    assert model.hparams.net["class_path"] == "raccn.models.SequenceCNN"  # saved, for load_from_checkpoint
    configs = {}
    for name in ("cnn_mnist_sequences", "dram_mnist_sequences"):
        with open(os.path.join(ROOT, "configs", f"{name}.yaml")) as f:
            configs[name] = yaml.safe_load(f)["data"]
    assert configs["cnn_mnist_sequences"] == configs["dram_mnist_sequences"]
