"""The test report (raccn.callbacks.EvalReportWriter): rows and order from metric names, and,
through the CLI, CSV/JSON files whose values are the logged test metrics."""

import csv
import json
import logging
import os

import numpy as np
import pytest
import torch

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


# ----------------------------------------------------------------------------- RA-CNN rows, by value
def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _iou(a, b):
    """IoU of (x0, y0, x1, y1) rows, written out in numpy."""
    w = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    h = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])
    return w * h / (area(a) + area(b) - w * h)


class FixedOutputs(torch.nn.Module):
    """An RA-CNN stand-in whose output for image i (its pixel (0, 0, 0) holds i) is row i of fixed
    tables: per-scale logits, fused logits and the APNs' squares (tx, ty, tl) in the pixels of
    each scale's input; scale 1 sees the images at ``1 / view_scale`` of their size."""

    def __init__(self, logits, fused, boxes, input_sizes, view_scale):
        super().__init__()
        self.num_scales, self.num_classes = len(logits), logits[0].shape[1]
        self.logits, self.fused, self.boxes = logits, fused, boxes
        self.input_sizes, self.view_scale = input_sizes, view_scale
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # a parameter, so the module has a device

    def forward(self, images, crop_boxes=None):
        from raccn.models.racnn import RACNNOutput

        i = images[:, 0, 0, 0].long()
        inputs = [images.new_zeros(len(i), 1, s, s) for s in self.input_sizes]
        return RACNNOutput([z[i] for z in self.logits], self.fused[i], [b[i] for b in self.boxes],
                           inputs, [], self.view_scale)


@pytest.mark.parametrize("num_scales", [2, 3])
def test_racnn_report_rows_equal_an_independent_computation(tmp_path, num_scales):
    """``test`` on fixed logits and boxes of 10 images in batches of 4 (a short last batch): every
    row of the report (scale s, scale 1+2[+3], fused) and ``apn_iou_scale{s}`` equal numpy's
    computation from the same tables: the softmax average of scales 1..s, its argmax against the
    labels, and the IoU of the APN squares mapped to image pixels (scale 1's input at half the
    image's size; scale 3's square through scale 2's crop) with the true boxes."""
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader, TensorDataset

    from raccn.lit import RACNNLitModule

    rng = np.random.default_rng(num_scales)
    N, K, view, sizes = 10, 5, 2.0, [24, 16, 16][:num_scales]
    labels = rng.integers(0, K, N)
    hint = 2.5 * np.eye(K)[labels]  # some signal, so that the accuracies are neither 0 nor 1
    logits = [rng.normal(0, 2, (N, K)) + hint for _ in range(num_scales)]
    fused = rng.normal(0, 2, (N, K)) + hint
    boxes = [np.stack([rng.uniform(6, 18, N), rng.uniform(6, 18, N), rng.uniform(3, 6, N)], 1)
             for _ in range(num_scales - 1)]  # (tx, ty, tl) in the pixels of scale s's input
    corners = rng.uniform(0, 20, (N, 2))
    truth = np.concatenate([corners, corners + rng.uniform(4, 28, (N, 2))], 1)
    images = torch.zeros(N, 1, 48, 48)
    images[:, 0, 0, 0] = torch.arange(N, dtype=torch.float32)
    f32 = lambda a: torch.tensor(a, dtype=torch.float32)
    net = FixedOutputs([f32(z) for z in logits], f32(fused), [f32(b) for b in boxes], sizes, view)
    model = RACNNLitModule(net)
    trainer = pl.Trainer(accelerator="cpu", logger=False, default_root_dir=tmp_path, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[EvalReportWriter()])
    loader = DataLoader(TensorDataset(images, torch.tensor(labels), f32(truth)), batch_size=4)
    trainer.test(model, loader, verbose=False)
    _, report = read_report(tmp_path)

    probs = [_softmax(z) for z in logits]
    expected = {f"test/acc_scale{s + 1}": np.mean(p.argmax(1) == labels) for s, p in enumerate(probs)}
    expected |= {f"test/acc_scale{'+'.join(map(str, range(1, s + 1)))}":
                 np.mean(np.mean(probs[:s], 0).argmax(1) == labels) for s in range(2, num_scales + 1)}
    expected["test/acc_fused"] = np.mean(fused.argmax(1) == labels)
    # the squares in image pixels: scale 2's is scale 1's input times `view`; scale 3's is
    # scale 2's crop (a square of side 2 tl2 image pixels, amplified to sizes[1]) at its place
    x0 = (boxes[0][:, :2] - boxes[0][:, 2:]) * view
    side = 2 * boxes[0][:, 2:] * view
    image_squares = [np.concatenate([x0, x0 + side], 1)]
    if num_scales == 3:
        per_pixel = side / sizes[1]
        centre, half = x0 + boxes[1][:, :2] * per_pixel, boxes[1][:, 2:] * per_pixel
        image_squares.append(np.concatenate([centre - half, centre + half], 1))
    expected |= {f"test/apn_iou_scale{s + 2}": np.mean(_iou(sq, truth)) for s, sq in enumerate(image_squares)}
    assert 0 < min(expected.values()) and max(expected.values()) < 1  # not degenerate
    rows = {r["metric"]: r["accuracy"] for r in report["rows"]}
    assert set(rows) == {k for k in expected if "/acc" in k}
    for name, value in expected.items():
        assert report["metrics"][name] == pytest.approx(value, abs=1e-6), name
        if name in rows:
            assert rows[name] == pytest.approx(value, abs=1e-6), name
