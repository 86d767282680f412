"""The test report (raccn.callbacks.EvalReportWriter): rows and order from metric names, and,
through the CLI, CSV/JSON files whose values are the logged test metrics."""

import csv
import json
import logging
import os

import pytest

from raccn.callbacks.eval_report import EvalReportWriter, report_rows
from raccn.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
         "--trainer.limit_val_batches=1", "--trainer.limit_test_batches=2"]


def test_rows_follow_the_papers_order():
    racnn = {"test/acc_fused": 0.9, "test/acc_scale1+2+3": 0.8, "test/acc_scale3": 0.3,
             "test/acc_scale1+2": 0.7, "test/acc_scale1": 0.1, "test/acc_scale2": 0.2,
             "test/apn_iou_scale2": 0.5, "val/acc_scale1": 0.0}
    rows = report_rows(racnn)
    assert [r.label for r in rows] == ["scale 1", "scale 2", "scale 3", "scale 1+2", "scale 1+2+3", "fused"]
    assert [r.value for r in rows] == [0.1, 0.2, 0.3, 0.7, 0.8, 0.9]
    ram = {f"test/acc_glimpse{t}": t / 20 for t in (10, 2, 1, 9)} | {"test/acc": 0.5, "test/error": 50.0}
    rows = report_rows(ram)
    assert [r.label for r in rows] == ["1 glimpse", "2 glimpses", "9 glimpses", "10 glimpses"]
    assert [r.metric for r in rows] == ["test/acc_glimpse1", "test/acc_glimpse2", "test/acc_glimpse9",
                                        "test/acc_glimpse10"]
    agcnn = {"test/acc_fusion": 0.9, "test/acc_local": 0.6, "test/acc_global": 0.5, "test/crop_iou": 0.2}
    rows = report_rows(agcnn)
    assert [(r.label, r.value) for r in rows] == [("global branch", 0.5), ("local branch", 0.6),
                                                  ("fusion branch", 0.9)]
    # an unknown family: every test/acc* metric, by name
    assert [r.label for r in report_rows({"test/acc_top5": 0.9, "test/acc": 0.5, "test/loss": 1.0})] == [
        "acc", "acc_top5"]
    with pytest.raises(ValueError, match="plain file name"):
        EvalReportWriter(filename="a/b")


def logged_test_metrics(run_dir):
    """The test/ values of the CSVLogger's metrics.csv (the row written by the test run)."""
    with open(os.path.join(run_dir, "metrics.csv")) as fh:
        rows = list(csv.DictReader(fh))
    values = {}
    for row in rows:
        values.update({k: float(v) for k, v in row.items() if k.startswith("test/") and v != ""})
    return values


def read_report(run_dir):
    with open(os.path.join(run_dir, "test_report.csv")) as fh:
        table = list(csv.DictReader(fh))
    with open(os.path.join(run_dir, "test_report.json")) as fh:
        report = json.load(fh)
    return table, report


def check_report(run_dir, labels, callback_metrics):
    table, report = read_report(run_dir)
    logged = logged_test_metrics(run_dir)
    assert [r["row"] for r in table] == [r["row"] for r in report["rows"]] == labels
    for csv_row, json_row in zip(table, report["rows"]):
        name = json_row["metric"]
        assert csv_row["metric"] == name
        assert float(csv_row["accuracy"]) == json_row["accuracy"] == pytest.approx(logged[name], abs=1e-7)
        assert json_row["accuracy"] == pytest.approx(float(callback_metrics[name]), abs=1e-7)
        assert float(csv_row["accuracy_percent"]) == pytest.approx(100 * logged[name], abs=1e-3)
    assert report["metrics"] == pytest.approx(logged, abs=1e-7)
    return report


def test_ram_fit_then_test_writes_the_glimpse_table(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.INFO)
    cli = main(["fit", "--config", os.path.join(ROOT, "configs", "ram_quickstart.yaml"), *QUICK,
                "--trainer.max_epochs=1", "--trainer.limit_train_batches=2"])
    run_dir = tmp_path / "runs" / "ram_quickstart" / "version_0"
    labels = ["1 glimpse", "2 glimpses", "3 glimpses", "4 glimpses"]
    report = check_report(run_dir, labels, cli.trainer.callback_metrics)
    assert report["model"] == "RAMLitModule"
    assert report["checkpoint"].endswith(".ckpt")  # test_after_fit tests the best checkpoint
    assert {"test/acc", "test/error"} <= report["metrics"].keys()
    assert "Test report: top-1 accuracy of RAMLitModule" in caplog.text
    assert "4 glimpses" in caplog.text


def test_racnn_test_of_a_checkpoint_writes_the_paper_table(tmp_path, monkeypatch):
    """fit 2 steps (no test) -> `test --ckpt_path` -> the paper's rows in the test run's folder.
    The checkpoint also loads with ``RACNNLitModule.load_from_checkpoint(path)`` alone: the
    network is rebuilt from the configuration LightningCLI recorded in its hyper-parameters."""
    import torch

    from raccn.lit import RACNNLitModule
    monkeypatch.chdir(tmp_path)
    config = os.path.join(ROOT, "configs", "racnn_quickstart.yaml")
    small = ["--data.init_args.batch_size=4", *QUICK]
    fitted = main(["fit", "--config", config, *small, "--trainer.max_steps=2", "--test_after_fit=false"]).model
    ckpt = tmp_path / "runs" / "racnn_quickstart" / "version_0" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    weights = torch.load(ckpt, weights_only=True)["state_dict"]
    assert all(torch.equal(v, fitted.state_dict()[k]) for k, v in weights.items())  # the final weights
    loaded = RACNNLitModule.load_from_checkpoint(ckpt)  # no network given; strict
    assert loaded.hparams.net["init_args"]["num_classes"] == loaded.net.num_classes == 20  # from the data
    assert loaded.extras == fitted.extras and loaded.schedule == fitted.schedule
    images = torch.rand(2, 3, 144, 144)
    with torch.no_grad():
        out, expected = loaded.eval().net(images), fitted.eval().net(images)
    assert torch.equal(out.fused_logits, expected.fused_logits) and torch.equal(out.boxes[0], expected.boxes[0])
    assert not (ckpt.parent.parent / "test_report.csv").exists()  # nothing tested yet
    cli = main(["test", "--config", config, *small, f"--ckpt_path={ckpt}"])
    run_dir = tmp_path / "runs" / "racnn_quickstart" / "version_1"
    report = check_report(run_dir, ["scale 1", "scale 2", "scale 1+2", "fused"], cli.trainer.callback_metrics)
    assert report["model"] == "RACNNLitModule"
    assert report["checkpoint"] == str(ckpt)
    assert "test/apn_iou_scale2" in report["metrics"]  # extra metrics kept in the JSON
