"""DRAM through train.py: the quick start on a tiny embedded set (fit -> test -> the report, the
trajectory pictures), then `predict` on house-number files: the number read, its probability
and the picture, against the checkpoint's own output."""

from __future__ import annotations

import csv
import logging
import os

import pytest
import torch
from PIL import Image

from raccn.cli import main
from raccn.lit import DRAMLitModule
from raccn.lit.sequence_accuracy import label_strings, sequence_probability

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "dram_quickstart.yaml")
QUICK = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
TINY = ["--data.init_args.data_dir=data/hn", "--data.init_args.train_size=24", "--data.init_args.test_size=8",
        "--data.init_args.val_split=0.25", "--data.init_args.batch_size=4"]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """The quick start, 1 epoch of 3 steps on 24 rendered numbers, tested after fit. The policy's
    std is near 0, so that a prediction's rollout is the policy mean's and can be recomputed
    (``predict --ckpt_path`` builds the model from the checkpoint's hyper-parameters)."""
    folder = tmp_path_factory.mktemp("dram_cli")
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        cli = main(["fit", "--config", CONFIG, *QUICK, *TINY, "--trainer.max_epochs=1",
                    "--trainer.limit_train_batches=3", "--model.init_args.net.init_args.std=1e-6"])
    finally:
        os.chdir(cwd)
    return folder, cli


def test_quickstart_fit_tests_and_writes_the_table_and_pictures(fitted):
    folder, cli = fitted
    run = folder / "runs" / "dram_quickstart" / "version_0"
    with open(run / "test_report.csv") as fh:
        rows = list(csv.DictReader(fh))
    labels = [r["row"] for r in rows]
    assert labels[0] == "whole sequence" and labels[-2:] == ["digits", "length"]
    assert set(labels[1:-2]) <= {"1 digit", "2 digits", "3 digits"} and labels[1:-2]
    metrics = cli.trainer.callback_metrics
    assert float(rows[0]["accuracy"]) == pytest.approx(float(metrics["test/seq_acc"]))
    assert float(metrics["test/seq_error"]) == pytest.approx(100 * (1 - float(metrics["test/seq_acc"])), abs=1e-4)
    pictures = sorted((run / "glimpses" / "test").glob("*.png"))
    assert len(pictures) == 9  # 8 trajectories + the contact sheet
    with open(run / "glimpses" / "test" / "table.csv") as fh:
        table = list(csv.DictReader(fh))
    net = cli.model.net
    assert len(table) == 8 * net.glimpses and table[0]["slot"] == "1"
    assert {r["slot"] for r in table} == {str(s) for s in range(1, net.max_digits + 1)}


def test_predict_prints_the_number_read_and_draws_the_glimpses(fitted, monkeypatch, caplog):
    folder, fit_cli = fitted
    monkeypatch.chdir(folder)
    caplog.set_level(logging.INFO)
    ckpt = folder / "runs" / "dram_quickstart" / "version_0" / "checkpoints" / "last.ckpt"
    houses = [str(folder / "data" / "hn" / "test" / f"{i}.png") for i in (1, 2, 3)]
    arg = "--data.init_args.predict_paths=[" + ", ".join(f'"{p}"' for p in houses) + "]"
    main(["predict", "--config", CONFIG, *QUICK, *TINY, f"--ckpt_path={ckpt}", arg])
    run = folder / "runs" / "dram_quickstart" / "version_1" / "predictions"
    with open(run / "predictions.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["path", "number", "probability", "picture"]
    assert [r["path"] for r in rows] == houses

    module = DRAMLitModule.load_from_checkpoint(ckpt).eval()  # the net from the saved config
    assert module.net.locator.std == 1e-6
    transform = fit_cli.datamodule.predict_transform()  # the config's crop of the resized image
    images = torch.stack([transform(Image.open(p)) for p in houses])
    with torch.no_grad():
        probs = module.net(images, deterministic=True).logits.softmax(-1)
    sequence, p = sequence_probability(probs, module.net.eos_index)
    assert [r["number"] for r in rows] == label_strings(sequence, module.net.eos_index)
    assert [float(r["probability"]) for r in rows] == pytest.approx(p.tolist(), rel=1e-3)
    for r in rows:
        assert r["number"] == "" or r["number"].isdigit()
        assert f"{r['path']}: {r['number'] or '(nothing)'}, p = {float(r['probability']):.4f}" in caplog.text
        with Image.open(run / r["picture"]) as im:
            assert im.height >= 160
            assert len(set(im.convert("RGB").getdata())) > 50  # the image, squares and caption
