"""The configs of issue 24. Own images end to end through the command line: ``fit`` -> ``test``
-> ``predict`` with configs/racnn_imagefolder.yaml and configs/ram_imagefolder.yaml on a tiny
class-folder fixture (one grey and one CMYK JPEG, one corrupt file, boxes.csv), tiny models, a few
steps; and the benchmark configs (racnn_aircraft, racnn_flowers, racnn_pets) on their fixtures."""

from __future__ import annotations

import csv
import glob
import importlib
import json
import os

import pytest
import torch
import yaml
from benchmark_fixtures import write_benchmark
from image_folder_fixtures import CLASSES, write_folder
from test_image_folder import expected_box
from test_torchvision_finegrained import SETS

from raccn.cli import main
from raccn.datamodules import ImageFolderDataModule

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUIET = ["--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false",
         "--trainer.enable_model_summary=false"]


def rows(path: str) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def run(*args: str) -> None:
    with pytest.warns(UserWarning):  # the corrupt file (skip_corrupt) and Lightning's small-data notes
        main(list(args))


def run_dir(name: str, version: int) -> str:
    return os.path.join("runs", name, f"version_{version}")


def iou(a: list[float], b: list[float]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_racnn_fit_test_predict_on_an_image_folder(tmp_path, monkeypatch):
    fx = write_folder(tmp_path / "photos")
    monkeypatch.chdir(tmp_path)
    side, resize = 48, 56
    common = ["--config", os.path.join(ROOT, "configs", "racnn_imagefolder.yaml"),
              f"--data.init_args.data_dir={fx.root}", f"--data.init_args.image_size={side}",
              f"--data.init_args.resize_size={resize}", "--data.init_args.batch_size=4",
              "--data.init_args.num_workers=0", "--data.init_args.boxes=true",
              "--model.init_args.net.init_args.backbone=small_vgg_bn", "--model.init_args.net.init_args.weights=null",
              "--model.init_args.net.init_args.num_scales=2", f"--model.init_args.net.init_args.input_sizes=[{side}, {side}]",
              "--model.init_args.net.init_args.apn_hidden=32", "--model.init_args.net.init_args.apn_pool=3", *QUIET]
    run("fit", *common, "--model.init_args.apn_pretrain_steps=1", "--model.init_args.phase_unit=steps",
        "--model.init_args.cls_length=1", "--model.init_args.rank_length=1", "--trainer.max_epochs=1",
        "--test_after_fit=false")
    ckpt = os.path.join(run_dir("racnn_imagefolder", 0), "checkpoints", "last.ckpt")
    run("test", *common, f"--ckpt_path={ckpt}")
    run("predict", *common, f"--ckpt_path={ckpt}")

    dm = ImageFolderDataModule(str(fx.root), image_size=side, resize_size=resize, skip_corrupt=True)
    dm.setup("test")
    labels = dm.test_set.labels.tolist()
    with open(os.path.join(run_dir("racnn_imagefolder", 1), "test_report.json")) as fh:
        report = json.load(fh)
    table = {r["row"]: r["accuracy"] for r in report["rows"]}
    assert list(table) == ["scale 1", "scale 2", "scale 1+2", "fused"]
    # the fused row against the predictions on the test split (another code path: predict_step)
    predictions = rows(os.path.join(run_dir("racnn_imagefolder", 2), "predictions", "predictions.csv"))
    assert [p["path"] for p in predictions] == [f"test[{i}]" for i in range(len(labels))]
    assert {p["class_name"] for p in predictions} <= set(CLASSES)  # the folders' names
    assert all(p["class_name"] == CLASSES[int(p["class_index"])] for p in predictions)
    hits = [int(p["class_index"]) == y for p, y in zip(predictions, labels)]
    assert table["fused"] == pytest.approx(sum(hits) / len(hits), abs=1e-6)
    # the APN's IoU against the boxes of boxes.csv moved through the test transform by hand
    by_path = {im.path: im for im in fx.images}
    truth = [expected_box(by_path[p].size, by_path[p].box, side, resize) for p in dm.test_set.paths]
    zoom = [r for r in rows(os.path.join(run_dir("racnn_imagefolder", 1), "zoom_chains", "test", "table.csv"))
            if r["scale"] == "2"]
    assert len(zoom) == len(truth) == 6
    ious = []
    for r in zoom:
        tx, ty, tl = (float(r[k]) for k in ("tx", "ty", "tl"))
        ious.append(iou([tx - tl, ty - tl, tx + tl, ty + tl], truth[int(r["image_id"])]))
    assert report["metrics"]["test/apn_iou_scale2"] == pytest.approx(sum(ious) / len(ious), abs=1e-5)
    assert 0 < report["metrics"]["test/apn_iou_scale2"] < 1


def test_ram_fit_test_predict_on_an_image_folder(tmp_path, monkeypatch):
    fx = write_folder(tmp_path / "digits", boxes=False)
    monkeypatch.chdir(tmp_path)
    common = ["--config", os.path.join(ROOT, "configs", "ram_imagefolder.yaml"),
              f"--data.init_args.data_dir={fx.root}", "--data.init_args.image_size=24",
              "--data.init_args.batch_size=8", "--model.init_args.net.init_args.glimpses=3",
              "--model.init_args.net.init_args.patch_size=6", "--model.init_args.net.init_args.scales=2",
              "--model.init_args.mc_samples=2", *QUIET]
    run("fit", *common, "--trainer.max_epochs=1", "--test_after_fit=true")
    ckpt = os.path.join(run_dir("ram_imagefolder", 0), "checkpoints", "last.ckpt")
    # test and predict follow the policy's mean (std ~ 0), so both see the same glimpses
    mean_policy = [f"--ckpt_path={ckpt}", "--model.init_args.net.init_args.std=1e-6"]
    run("test", *common, *mean_policy)
    dm = ImageFolderDataModule(str(fx.root), image_size=24, skip_corrupt=True)
    dm.setup("test")
    odd = [str(im.path) for im in fx.images if im.mode != "RGB"]  # a grey and a CMYK JPEG
    paths = [str(p) for p in dm.test_set.paths] + odd
    run("predict", *common, *mean_policy, f"--data.init_args.predict_paths=[{', '.join(paths)}]")

    with open(os.path.join(run_dir("ram_imagefolder", 1), "test_report.json")) as fh:
        report = json.load(fh)
    assert [r["row"] for r in report["rows"]] == ["1 glimpse", "2 glimpses", "3 glimpses"]
    assert report["metrics"]["test/error"] == pytest.approx(100 * (1 - report["metrics"]["test/acc"]), abs=1e-3)
    predictions = rows(os.path.join(run_dir("ram_imagefolder", 2), "predictions", "predictions.csv"))
    assert [p["path"] for p in predictions] == paths
    assert all(p["class_name"] == CLASSES[int(p["class_index"])] for p in predictions)  # folder names
    # the last row against the predictions on the test images given as files
    labels = dm.test_set.labels.tolist()
    hits = [int(p["class_index"]) == y for p, y in zip(predictions, labels)]
    assert report["rows"][-1]["accuracy"] == pytest.approx(sum(hits) / len(hits), abs=1e-6)
    pictures = glob.glob(os.path.join(run_dir("ram_imagefolder", 2), "predictions", "*.png"))
    assert len(pictures) == len(paths)
    ckpt_hp = torch.load(ckpt, map_location="cpu", weights_only=False)["datamodule_hyper_parameters"]
    assert (ckpt_hp["channels"], ckpt_hp["transforms"]) == (1, "resize")


# ----------------------------------------------------------------------------- configs
@pytest.mark.parametrize("name", SETS)
def test_configs_read_the_benchmark_with_the_cub_models_settings(tmp_path, name, monkeypatch):
    configs = os.path.join(ROOT, "configs")
    module, k, _, _ = SETS[name]
    config_name = {"aircraft": "racnn_aircraft", "flowers": "racnn_flowers", "pets": "racnn_pets"}[name]
    with open(os.path.join(configs, f"{config_name}.yaml")) as fh:
        config = yaml.safe_load(fh)
    with open(os.path.join(configs, "racnn_cub.yaml")) as fh:
        cub = yaml.safe_load(fh)
    # the paper's model, schedule and trainer, shared with CUB (the run is named after the file)
    assert (config["model"], config["trainer"]) == (cub["model"], cub["trainer"]) == (
        "racnn/paper_model.yaml", "racnn/trainer.yaml")
    data = config["data"]
    path, cls = data["class_path"].rsplit(".", 1)
    assert getattr(importlib.import_module(path), cls) is module
    write_benchmark(name, tmp_path, monkeypatch)
    dm = module(**{**data["init_args"], "data_dir": str(tmp_path), "num_workers": 0})
    assert dm.num_classes == k and dm.image_size == (448, 448) and dm.val_split == 0.0
