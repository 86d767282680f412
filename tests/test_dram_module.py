"""DRAMLitModule (Ba et al. 2015): the sequence scores against a count by hand, the per-label
and whole-sequence rewards, the logged test metrics and the report on fixed logits, the
trajectory table, a short fit that learns, and the settings' checks."""

from __future__ import annotations

import csv
import json
import os
import sys

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from raccn.callbacks import EvalReportWriter, GlimpseTrajectoryWriter
from raccn.callbacks.eval_report import format_table, report_rows
from raccn.lit import DRAMLitModule
from raccn.lit.sequence_accuracy import (
    SequenceAccuracy,
    label_strings,
    sequence_lengths,
    sequence_probability,
)
from raccn.losses import dram_loss
from raccn.losses.dram_loss import sequence_reward
from raccn.models import DRAM, DRAMOutput

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_dram import two_digit_task

EOS = 4  # 4 classes, K = 5

# targets and predictions, S = 3 (E = EOS); the scores by hand in ``by_hand``
TARGETS = [[1, 2, EOS], [3, EOS, EOS], [0, 1, 2], [2, EOS, EOS], [1, 1, EOS], [3, 0, 1]]
PREDS = [[1, 2, EOS],  # right
         [3, 1, EOS],  # digit right, no end after it: wrong, length 2 != 1
         [0, 1, 2],  # right (full length, no EOS needed)
         [1, EOS, 3],  # digit wrong, length right
         [1, 2, 2],  # first digit right, second wrong, no end
         [3, 0, EOS]]  # two digits right, ends too early: length 2 != 3


def by_hand():
    """The scores of PREDS against TARGETS, counted with plain Python."""
    seq_right, digits_right, digits, len_right = [], 0, 0, 0
    per_length: dict[int, list[bool]] = {}
    for t, p in zip(TARGETS, PREDS):
        L = t.index(EOS) if EOS in t else len(t)
        Lp = p.index(EOS) if EOS in p else len(p)
        right = p[:L] == t[:L] and (L == len(t) or p[L] == EOS)
        seq_right.append(right)
        per_length.setdefault(L, []).append(right)
        digits_right += sum(a == b for a, b in zip(p[:L], t[:L]))
        digits += L
        len_right += L == Lp
    n = len(TARGETS)
    return {"seq_acc": sum(seq_right) / n, "digit_acc": digits_right / digits, "len_acc": len_right / n,
            "by_length": {L: sum(v) / len(v) for L, v in per_length.items()}}


def test_sequence_scores_against_a_count_by_hand():
    expected = by_hand()
    assert expected["seq_acc"] == pytest.approx(2 / 6) and expected["digit_acc"] == pytest.approx(9 / 12)
    metric = SequenceAccuracy(3, EOS)
    metric.update(torch.tensor(PREDS[:4]), torch.tensor(TARGETS[:4]))  # in two batches
    metric.update(torch.tensor(PREDS[4:]), torch.tensor(TARGETS[4:]))
    got = metric.compute()
    for key in ("seq_acc", "digit_acc", "len_acc"):
        assert got[key].item() == pytest.approx(expected[key]), key
    assert got["count_by_length"].tolist() == [2, 2, 2]
    assert got["seq_acc_by_length"].tolist() == pytest.approx(
        [expected["by_length"][n] for n in (1, 2, 3)])
    assert sequence_lengths(torch.tensor(PREDS), EOS).tolist() == [2, 2, 3, 1, 3, 2]
    assert label_strings(torch.tensor(PREDS), EOS) == ["12", "31", "012", "1", "122", "30"]
    with pytest.raises(ValueError, match="Tensor\\[B, 3\\]"):
        metric.update(torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 4, dtype=torch.long))


def test_sequence_probability_counts_the_slots_up_to_the_end_read():
    probs = torch.tensor([[[0.7, 0.1, 0.1, 0.05, 0.05], [0.1, 0.1, 0.1, 0.1, 0.6], [0.9, 0, 0, 0, 0.1]],
                          [[0.1, 0.6, 0.1, 0.1, 0.1], [0.1, 0.1, 0.5, 0.2, 0.1], [0.1, 0.1, 0.1, 0.6, 0.1]]])
    seq, p = sequence_probability(probs, EOS)
    assert seq.tolist() == [[0, EOS, 0], [1, 2, 3]]
    assert p.tolist() == pytest.approx([0.7 * 0.6, 0.6 * 0.5 * 0.6])  # slot 3 of the first is after its end


def test_per_label_reward_is_the_fraction_right_up_to_the_first_error():
    targets = torch.tensor(TARGETS)
    logits = torch.nn.functional.one_hot(torch.tensor(PREDS), EOS + 1).float() * 5.0
    out = DRAMOutput(logits, torch.zeros(6, 2, 2), torch.zeros(6, 2), torch.zeros(6, 2))
    seq = dram_loss(out, targets, reward="sequence").reward
    per = dram_loss(out, targets, reward="per_label").reward
    assert seq.tolist() == [1, 0, 1, 0, 0, 0]
    # counted slots (labels + end): 3, 2, 3, 2, 3, 3; right before the first error: 3, 1, 3, 0, 1, 2
    assert per.tolist() == pytest.approx([1.0, 1 / 2, 1.0, 0.0, 1 / 3, 2 / 3])
    # the loss's other parts do not depend on the reward chosen except through R
    a, b = dram_loss(out, targets), dram_loss(out, targets, reward="per_label")
    assert a.ce == b.ce
    with pytest.raises(ValueError, match="reward must be one of"):
        sequence_reward(torch.ones(1, 3, dtype=torch.bool), torch.ones(1, 3, dtype=torch.bool), "partial")
    assert sequence_reward(torch.tensor([[True, False, True]]), torch.tensor([[True, True, False]]),
                           "per_label").tolist() == [0.5]


class FixedNet(nn.Module):
    """A stand-in DRAM whose logits are fixed per image: image b (all pixels = b) gets LOGITS[b]."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("table", logits)
        self.num_classes, self.in_channels = logits.shape[-1] - 1, 1
        self.max_digits, self.glimpses_per_digit, self.glimpses = logits.shape[1], 1, logits.shape[1]
        self.eos_index = self.num_classes
        self.glimpse_net = nn.Module()
        self.glimpse_net.patch_size, self.glimpse_net.scales, self.glimpse_net.scale_factor = 2, 1, 2.0
        self.scale = nn.Parameter(torch.ones(()))
        self.locator, self.location_core, self.context_net = nn.Identity(), nn.Identity(), nn.Identity()

    def forward(self, images, deterministic=False):
        idx = images[:, 0, 0, 0].round().long()
        B, T = len(idx), self.glimpses
        return DRAMOutput(self.table[idx] * self.scale, torch.zeros(B, T, 2), torch.zeros(B, T),
                          torch.zeros(B, T))


def fixed_problem():
    """Images 0..5 with TARGETS; logits whose argmax is PREDS (random margins)."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 3, EOS + 1, generator=g)
    logits.scatter_(2, torch.tensor(PREDS)[..., None], 10.0)
    images = torch.arange(6.0)[:, None, None, None].expand(6, 1, 4, 4).clone()
    targets = torch.tensor(TARGETS)
    return logits, TensorDataset(images, targets, sequence_lengths(targets, EOS))


def test_logged_test_metrics_and_report_on_fixed_logits(tmp_path):
    logits, data = fixed_problem()
    module = DRAMLitModule(FixedNet(logits), mc_samples=3)
    report = EvalReportWriter()
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path, callbacks=[report])
    (result,) = trainer.test(module, DataLoader(data, batch_size=4), verbose=False)
    expected = by_hand()
    assert result["test/seq_acc"] == pytest.approx(expected["seq_acc"])
    assert result["test/seq_error"] == pytest.approx(100 * (1 - expected["seq_acc"]), abs=1e-4)
    assert result["test/digit_acc"] == pytest.approx(expected["digit_acc"])
    assert result["test/len_acc"] == pytest.approx(expected["len_acc"])
    for n in (1, 2, 3):
        assert result[f"test/seq_acc_len{n}"] == pytest.approx(expected["by_length"][n])
    with open(tmp_path / "test_report.json") as fh:
        written = json.load(fh)
    with open(tmp_path / "test_report.csv") as fh:
        rows = list(csv.DictReader(fh))
    labels = ["whole sequence", "1 digit", "2 digits", "3 digits", "digits", "length"]
    values = [expected["seq_acc"], *(expected["by_length"][n] for n in (1, 2, 3)), expected["digit_acc"],
              expected["len_acc"]]
    assert [r["row"] for r in rows] == [r["row"] for r in written["rows"]] == labels
    assert [float(r["accuracy"]) for r in rows] == pytest.approx(values)
    assert written["model"] == "DRAMLitModule"
    table = format_table(report_rows(written["metrics"]))
    assert f"whole-sequence error: {100 * (1 - expected['seq_acc']):.2f} %" in table
    # a test set without 3-digit numbers has no 3-digit row
    (short,) = trainer.test(module, DataLoader(torch.utils.data.Subset(data, [0, 1, 3, 4]), batch_size=4),
                            verbose=False)
    assert "test/seq_acc_len3" not in short and short["test/seq_acc_len1"] == pytest.approx(0.0)


def test_validation_metrics_and_monte_carlo_average():
    logits, data = fixed_problem()
    module = DRAMLitModule(FixedNet(logits), mc_samples=4)
    probs, out = module.predict_proba(data.tensors[0])
    assert out.logits.shape == (24, 3, EOS + 1)  # 4 rollouts of 6 images, one forward
    torch.testing.assert_close(probs, logits.softmax(-1))  # every rollout the same here
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    (result,) = trainer.validate(module, DataLoader(data, batch_size=5), verbose=False)
    assert result["val/seq_acc"] == pytest.approx(by_hand()["seq_acc"])
    assert result["val/digit_acc"] == pytest.approx(by_hand()["digit_acc"])
    assert result["val/seq_error"] == pytest.approx(100 * (1 - by_hand()["seq_acc"]), abs=1e-4)


def small_dram(**kw):
    args = {"num_classes": 4, "max_digits": 3, "glimpses_per_digit": 1, "patch_size": 6, "scales": 1,
            "conv_channels": (8, 8, 16), "glimpse_dim": 64, "hidden_size": 64, "context_size": 1,
            "context_channels": (8, 8, 8), "std": 0.2}
    return DRAM(**(args | kw))


@pytest.mark.parametrize("kwargs,match", [
    ({"reward": "partial"}, "reward must be one of"),
    ({"mc_samples": 0}, "mc_samples must be an integer >= 1"),
    ({"policy_lr_factor": 0.0}, "policy_lr_factor must be > 0"),
    ({"reinforce_weight": -1.0}, "reinforce_weight must be >= 0"),
])
def test_invalid_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DRAMLitModule(small_dram(), **kwargs)


def test_policy_group_is_what_reinforce_alone_trains():
    module = DRAMLitModule(small_dram(), policy_lr_factor=0.05, optimizer=lambda p: torch.optim.Adam(p, lr=2e-3))
    rest, policy = module.configure_optimizers().param_groups
    net = module.net
    expected = {id(p) for m in (net.locator, net.location_core, net.context_net) for p in m.parameters()}
    assert {id(p) for p in policy["params"]} == expected
    assert len(rest["params"]) + len(policy["params"]) == len(list(module.parameters()))
    assert (rest["lr"], policy["lr"]) == (pytest.approx(2e-3), pytest.approx(1e-4))


class TwoDigits(pl.LightningDataModule):
    """tests/test_dram.py's two-digit task as batches (images, targets, lengths)."""

    num_classes, num_channels, image_size, max_length = 4, 1, (8, 20), 3

    def _data(self, n, seed):
        x, y = two_digit_task(n, seed)
        return TensorDataset(x, y, sequence_lengths(y, EOS))

    def train_dataloader(self):
        return DataLoader(self._data(64 * 600, 100), batch_size=64, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self._data(500, 1), batch_size=250)

    test_dataloader = val_dataloader


@pytest.mark.parametrize("reward", ["sequence", "per_label"])
def test_dram_module_learns_to_read_two_digits(reward, tmp_path):
    """The tiny task of tests/test_dram.py through the Lightning module (600 steps, ~15 s on one
    thread): one glimpse per label has to go to the left digit, then the right one."""
    pl.seed_everything(0)
    module = DRAMLitModule(small_dram(), reward=reward, optimizer=lambda p: torch.optim.Adam(p, lr=3e-3))
    writer = GlimpseTrajectoryWriter(num_images=4, every_n_epochs=0)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                         callbacks=[writer], num_sanity_val_steps=0, limit_val_batches=0)
    data = TwoDigits()
    trainer.fit(module, datamodule=data)
    (result,) = trainer.test(module, datamodule=data, verbose=False)
    assert result["test/seq_acc"] > 0.6  # chance about 5 %, a policy stuck at the centre 0.26
    assert result["test/digit_acc"] > 0.75 and result["test/len_acc"] > 0.8
    # the trajectory table: one row per (image, glimpse), the slot of each glimpse
    table = tmp_path / "glimpses" / "test" / "table.csv"
    with open(table) as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["image_id", "slot", "step", "x", "y", "x_px", "y_px", "log_prob", "baseline",
                             "reward", "pred", "target"]
    assert len(rows) == 4 * 3 and [r["slot"] for r in rows[:3]] == ["1", "2", "3"]
    x, y = data.val_dataloader().dataset.tensors[:2]
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(0)
        module.eval()
        out = module.net(x[:4])
    torch.testing.assert_close(torch.tensor([float(r["x"]) for r in rows]), out.locations[..., 0].reshape(-1))
    assert [r["pred"] for r in rows] == [("EOS" if k == EOS else str(k)) for k in out.logits.argmax(-1).reshape(-1).tolist()]
    assert [r["target"] for r in rows] == [("EOS" if k == EOS else str(k)) for k in y[:4].reshape(-1).tolist()]
    assert len(list((tmp_path / "glimpses" / "test").glob("test_*.png"))) == 4


def test_compile_goes_through_the_shared_seam(monkeypatch):
    """compile=True: the training step calls DRAMLitModule.training_loss through torch.compile,
    made once per class by the seam RAMLitModule uses too (GlimpseTraining)."""
    from raccn.lit import RAMLitModule, glimpse_training
    from raccn.models import RecurrentAttentionModel

    compiled = []

    def fake_compile(fn, **kwargs):
        compiled.append(fn)
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    monkeypatch.setattr(glimpse_training, "missing_cxx_compiler", lambda: None)  # the fake needs none
    glimpse_training.compiled.cache_clear()
    try:
        module = DRAMLitModule(small_dram(), compile=True)
        x, y = two_digit_task(8, 0)
        torch.manual_seed(0)
        parts = module.compiled_training_loss(x, y)
        torch.manual_seed(0)
        eager = module.training_loss(x, y)
        torch.testing.assert_close(parts.loss, eager.loss)
        DRAMLitModule(small_dram(), compile=True).compiled_training_loss(x, y)  # made once per class
        ram = RAMLitModule(RecurrentAttentionModel(num_classes=4, glimpses=2, patch_size=4), compile=True)
        ram.compiled_training_loss(torch.rand(2, 1, 8, 8), torch.tensor([0, 1]))
        assert compiled == [DRAMLitModule.training_loss, RAMLitModule.training_loss]
    finally:
        glimpse_training.compiled.cache_clear()


def test_each_slot_is_drawn_in_its_own_colour():
    from raccn.viz import draw_glimpse_path, slot_colours

    colours = slot_colours(6, 2)
    assert colours[0] == colours[1] != colours[2] == colours[3] != colours[4] == colours[5]
    assert len(set(colours)) == 3
    image = torch.zeros(1, 40, 40)
    # glimpse t at x = -0.6 + 0.25 t (far apart), one 4-px square each, upscale 1
    locations = torch.tensor([[-0.75 + 0.3 * t, 0.0] for t in range(6)])
    picture = draw_glimpse_path(image, locations, patch_size=4, upscale=1, colours=colours)
    for t, (x, _) in enumerate(locations.tolist()):
        cx = round((x + 1) / 2 * 40)
        assert picture.getpixel((cx - 2, 18)) == colours[t]  # the square's left edge
    with pytest.raises(ValueError, match="one colour per step"):
        draw_glimpse_path(image, locations, patch_size=4, colours=colours[:5])
