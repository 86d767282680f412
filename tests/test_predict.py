"""Prediction on the user's image files: the data modules' prediction set, and through the CLI
(`predict --data.init_args.predict_paths [...]`) the CSV, the pictures and the errors."""

import csv
import logging
import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from pytorch_lightning.callbacks import Callback

from raccn.cli import main
from raccn.datamodules import ClutteredDigitsDataModule, CUBDataModule, LocalizedDigitsDataModule

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from finegrained_fixtures import write_cub

QUICK = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


@pytest.fixture
def user_images(tmp_path):
    """A grey PNG (50x60), an RGB JPEG (80x70) and an RGBA PNG with a space in its name."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "mine"
    folder.mkdir()
    paths = [folder / "grey digit.png", folder / "photo.jpg", folder / "alpha.png"]
    Image.fromarray(rng.integers(0, 256, (50, 60), dtype=np.uint8), "L").save(paths[0])
    Image.fromarray(rng.integers(0, 256, (80, 70, 3), dtype=np.uint8), "RGB").save(paths[1], quality=90)
    Image.fromarray(rng.integers(0, 256, (30, 30, 4), dtype=np.uint8), "RGBA").save(paths[2])
    return [str(p) for p in paths]


def paths_arg(paths):
    return "--data.init_args.predict_paths=[" + ", ".join(f'"{p}"' for p in paths) + "]"


def read_predictions(run_dir):
    with open(run_dir / "predictions" / "predictions.csv") as fh:
        return list(csv.DictReader(fh))


def check_predictions(run_dir, paths, class_names, min_width):
    rows = read_predictions(run_dir)
    assert [r["path"] for r in rows] == paths  # one row per image, in order
    for r in rows:
        k = int(r["class_index"])
        assert 0 <= k < len(class_names) and r["class_name"] == class_names[k]
        assert 0.0 < float(r["probability"]) <= 1.0
        picture = run_dir / "predictions" / r["picture"]
        with Image.open(picture) as im:
            assert im.width >= min_width and im.height >= 160
            lo_hi = im.convert("L").getextrema()
            assert lo_hi[1] - lo_hi[0] > 100  # not a blank picture
    assert len({r["picture"] for r in rows}) == len(paths)
    assert sorted(os.listdir(run_dir / "predictions")) == sorted([r["picture"] for r in rows] + ["predictions.csv"])
    return rows


def test_prediction_set_matches_each_modules_inputs(user_images, tmp_path):
    dm = ClutteredDigitsDataModule(canvas_size=40, predict_paths=user_images)
    dm.setup("predict")
    assert dm.train_set is None  # the digits are not even loaded
    images, indices = next(iter(dm.predict_dataloader()))
    assert images.shape == (3, 1, 40, 40) and indices.tolist() == [0, 1, 2]
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert dm.class_names == [str(k) for k in range(10)]

    rgb = LocalizedDigitsDataModule(predict_paths=user_images[:1])
    image, _ = rgb.predict_dataloader().dataset[0]  # built on demand, without setup
    assert image.shape == (3, 96, 96) and torch.equal(image[0], image[2])  # grey, as the proxy

    fx = write_cub(tmp_path / "cub", num_classes=3, n_train=2, n_test=1)
    cub = CUBDataModule(str(fx.data_dir), image_size=32, resize_size=36, predict_paths=user_images)
    for im in fx.images:  # the data set's own images are not needed to predict
        im.path.unlink()
    cub.setup("predict")
    images, _ = next(iter(cub.predict_dataloader()))
    assert images.shape == (3, 3, 32, 32) and images.min() < 0  # ImageNet-normalised
    assert cub.class_names == fx.class_names


def test_ram_predict_from_a_checkpoint(user_images, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = os.path.join(ROOT, "configs", "ram_quickstart.yaml")
    main(["fit", "--config", config, *QUICK, "--trainer.max_epochs=1", "--trainer.limit_train_batches=1",
          "--trainer.limit_val_batches=1", "--test_after_fit=false"])
    ckpt = tmp_path / "runs" / "ram_quickstart" / "version_0" / "checkpoints" / "last.ckpt"
    main(["predict", "--config", config, *QUICK, f"--ckpt_path={ckpt}", paths_arg(user_images)])
    run_dir = tmp_path / "runs" / "ram_quickstart" / "version_1"
    rows = check_predictions(run_dir, user_images, [str(k) for k in range(10)], min_width=160)
    assert rows[0]["picture"] == "0000_grey_digit.png"


def test_racnn_predict_names_the_classes_and_draws_the_zoom_chain(user_images, tmp_path, monkeypatch, capsys,
                                                                  caplog):
    """Predict on CUB (fixture): class names from classes.txt, pictures with the amplified crops."""
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.INFO)
    fx = write_cub(tmp_path / "data", num_classes=3, n_train=2, n_test=1)
    cli = main([
        "predict", "--config", os.path.join(ROOT, "configs", "racnn_cub.yaml"), *QUICK,
        f"--data.init_args.data_dir={fx.data_dir}", "--data.init_args.image_size=64",
        "--data.init_args.resize_size=72", "--data.init_args.num_workers=0",
        "--model.init_args.net.init_args.backbone=resnet18", "--model.init_args.net.init_args.weights=null",
        "--model.init_args.net.init_args.input_sizes=[64, 32, 32]", "--trainer.accelerator=cpu", paths_arg(user_images),
    ])
    run_dir = tmp_path / "runs" / "racnn_cub" / "version_0"
    # upscale 3: 192-pixel image + 2 crops of its height beside it
    check_predictions(run_dir, user_images, fx.class_names, min_width=3 * 192)
    out = capsys.readouterr()
    # one line per image (through Lightning's logger: captured as a log record, or as stderr when
    # its handler was created inside this test, depending on the tests run before)
    text = out.out + out.err + caplog.text
    assert sum(p in text for p in user_images) == len(user_images)
    predictions = cli.trainer.predict_loop.predictions
    assert "crops" not in predictions[0] and predictions[0]["boxes"].shape == (3, 2, 3)


@pytest.mark.parametrize("bad", ["missing", "garbage"])
def test_unusable_file_fails_before_predicting(bad, user_images, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / f"{bad}.png"
    if bad == "garbage":
        path.write_bytes(b"not an image at all\n" * 8)
    error = FileNotFoundError if bad == "missing" else ValueError
    with pytest.raises(error, match=r"(?s)cannot predict: .*" + str(path).replace(".", r"\.")):
        main(["predict", "--config", os.path.join(ROOT, "configs", "ram_quickstart.yaml"), *QUICK,
              paths_arg([user_images[0], str(path)])])
    assert not list(tmp_path.glob("runs/**/predictions.csv"))  # nothing predicted


def test_predict_paths_must_be_a_list_of_files():
    with pytest.raises(ValueError, match="non-empty list of image files"):
        ClutteredDigitsDataModule(predict_paths=[])
    with pytest.raises(ValueError, match="non-empty list of image files"):
        ClutteredDigitsDataModule(predict_paths="a.png")


# ----------------------------------------------------------------------------- values of the predictions
class RNGAtPredictBatch(Callback):
    """Records the global torch RNG state as each prediction batch starts: the state the rollouts
    of that batch draw their glimpse locations from."""

    def __init__(self) -> None:
        self.states: list[torch.Tensor] = []

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self.states.append(torch.get_rng_state())


@pytest.mark.parametrize("mc_samples", [1, 3])
def test_each_predictions_row_is_the_models_own_output_for_its_file(user_images, tmp_path, monkeypatch,
                                                                    mc_samples):
    """RAM fitted one step, then ``predict`` on 3 files in batches of 2: row i of predictions.csv
    is file i, and its class and probability are those of the checkpoint's weights, loaded apart,
    on that file read with the data module's transform, drawing from the RNG state its batch
    started with (RAM samples its glimpse locations; with ``mc_samples`` 3, the average of 3
    rollouts). Replayed from another state, the probabilities differ: the rows are not a constant."""
    from raccn.lit import RAMLitModule

    monkeypatch.chdir(tmp_path)
    config = os.path.join(ROOT, "configs", "ram_quickstart.yaml")
    main(["fit", "--config", config, *QUICK, "--trainer.max_epochs=1", "--trainer.limit_train_batches=1",
          "--trainer.limit_val_batches=1", "--test_after_fit=false", f"--model.init_args.mc_samples={mc_samples}"])
    ckpt = tmp_path / "runs" / "ram_quickstart" / "version_0" / "checkpoints" / "last.ckpt"
    cli = main(["predict", "--config", config, *QUICK, f"--ckpt_path={ckpt}", paths_arg(user_images),
                "--data.init_args.batch_size=2", "--predictions.pictures=false",
                "--trainer.callbacks+=test_predict.RNGAtPredictBatch"])
    rows = read_predictions(tmp_path / "runs" / "ram_quickstart" / "version_1")
    assert [r["path"] for r in rows] == user_images
    (recorder,) = [cb for cb in cli.trainer.callbacks if isinstance(cb, RNGAtPredictBatch)]
    assert len(recorder.states) == 2
    model = RAMLitModule.load_from_checkpoint(ckpt, map_location="cpu").eval()
    assert model.hparams.mc_samples == mc_samples
    transform = cli.datamodule.predict_transform()
    replayed = []
    for b, state in enumerate(recorder.states):
        files = user_images[2 * b : 2 * b + 2]
        images = []
        for f in files:
            with Image.open(f) as im:
                images.append(transform(im))
        torch.set_rng_state(state)
        with torch.no_grad():
            prob, pred = model.predict_proba(torch.stack(images))[0][:, -1].max(1)
        for i, f in enumerate(files):
            row = rows[2 * b + i]
            assert int(row["class_index"]) == int(pred[i]) and row["class_name"] == str(int(pred[i]))
            assert float(row["probability"]) == pytest.approx(float(prob[i]), abs=1e-6)
        replayed.append(prob)
        torch.manual_seed(12345)
        with torch.no_grad():
            other = model.predict_proba(torch.stack(images))[0][:, -1].max(1).values
        assert not torch.allclose(other, prob, atol=1e-6)


def test_mc_samples_average_separately_seeded_rollouts(monkeypatch):
    """``predict_proba`` with M = 3 rollouts equals the mean of the softmax of 3 single rollouts
    run one by one, rollout m drawing the same location noise in both (seeded by (m, glimpse); the
    first glimpse at the centre, as a random one is not drawn by ``torch.normal``): the batched
    rollouts are averaged per image, never across images."""
    from raccn.lit import RAMLitModule
    from raccn.models import RecurrentAttentionModel

    M, B = 3, 4
    torch.manual_seed(0)
    net = RecurrentAttentionModel(num_classes=5, glimpses=3, patch_size=4, std=0.3, init_loc="center")
    x = torch.rand(B, 1, 16, 16)
    real_normal = torch.normal
    which = {"first": 0, "count": M, "glimpse": 0}

    def seeded_noise(mean, std, *args, **kwargs):  # rows: `count` rollouts of B images, rollout-major
        t = which["glimpse"]
        which["glimpse"] += 1
        eps = torch.cat([real_normal(0.0, 1.0, (B, 2), generator=torch.Generator().manual_seed(100 * m + t))
                         for m in range(which["first"], which["first"] + which["count"])])
        return mean + std * eps

    monkeypatch.setattr(torch, "normal", seeded_noise)
    model = RAMLitModule(net, mc_samples=M).eval()
    with torch.no_grad():
        batched = model.predict_proba(x)[0]  # (B, T, K)
        singles = []
        for m in range(M):
            which.update(first=m, count=1, glimpse=0)
            singles.append(net(x).logits.softmax(-1))
    torch.testing.assert_close(batched, torch.stack(singles).mean(0), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(singles[0], singles[1], atol=1e-3)  # the rollouts do differ


def test_command_line_settings_override_the_checkpoints_except_the_networks(tmp_path, monkeypatch):
    """``test --ckpt_path`` rebuilds the model from the checkpoint's settings (Lightning's CLI);
    a training-procedure setting given on the command line wins (``mc_samples``: it was silently
    dropped), the config file's does not, and a network setting is refused with a warning."""
    monkeypatch.chdir(tmp_path)
    config = os.path.join(ROOT, "configs", "ram_quickstart.yaml")
    main(["fit", "--config", config, *QUICK, "--trainer.max_epochs=1", "--trainer.limit_train_batches=1",
          "--trainer.limit_val_batches=1", "--test_after_fit=false", "--model.init_args.mc_samples=2"])
    ckpt = tmp_path / "runs" / "ram_quickstart" / "version_0" / "checkpoints" / "last.ckpt"
    run = ["validate", "--config", config, *QUICK, f"--ckpt_path={ckpt}", "--trainer.limit_val_batches=1"]
    assert main(run).model.hparams.mc_samples == 2  # the config file says 1: the checkpoint's stays
    with pytest.warns(UserWarning, match="net.init_args.std=0.5 not used"):
        cli = main([*run, "--model.init_args.mc_samples=4", "--model.init_args.net.init_args.std=0.5"])
    assert cli.model.hparams.mc_samples == 4 and cli.model.net.locator.std != 0.5
