"""Attention pictures and tables: a short `fit` with W&B offline logs them (read back from the
offline run's files), the PNG files exist, and the boxes are drawn where the table says."""

import csv
import glob
import json
import os
import socket
import time

import pytest
import torch
from PIL import Image

from raccn.cli import main
from raccn.loggers import WandbLogger, wandb_credentials_available
from raccn.viz import draw_zoom_chain, scale_colour

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K = 8  # the configs' num_images


def _fit_offline(config: str, tmp_path, monkeypatch, *overrides: str):
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.chdir(tmp_path)
    wandb.finish()  # a run left by an earlier test in this process (e.g. a disabled one) would be reused
    try:
        main(["fit", "--config", os.path.join(ROOT, "configs", config), "--trainer.max_epochs=2",
              "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
              *overrides])
    finally:
        wandb.finish()
    runs = glob.glob(str(tmp_path / "runs" / "wandb" / "offline-run-*"))
    assert len(runs) == 1, runs
    return runs[0]


def _tables(run: str, split: str, key: str) -> list[dict]:
    files = sorted(glob.glob(os.path.join(run, "files", "media", "table", split, f"{key}_table_*.table.json")))
    return [json.load(open(f)) for f in files]


def _images(run: str, split: str, key: str) -> list[str]:
    return glob.glob(os.path.join(run, "files", "media", "images", split, f"{key}_*.png"))


def test_ram_glimpses_logged_offline(tmp_path, monkeypatch):
    run = _fit_offline("ram_quickstart.yaml", tmp_path, monkeypatch,
                       "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
                       '--trainer.callbacks=[{"class_path": "raccn.callbacks.GlimpseTrajectoryWriter", '
                       '"init_args": {"every_n_epochs": 1}}]')
    T = 4  # ram_quickstart: 4 glimpses
    columns = ["image_id", "step", "x", "y", "x_px", "y_px", "log_prob", "baseline", "reward", "pred", "target"]
    val = _tables(run, "val", "glimpses")
    assert len(val) == 2  # one per validation epoch
    for table in val + _tables(run, "test", "glimpses"):
        assert table["columns"] == columns
        assert len(table["data"]) == K * T
        steps = [row[1] for row in table["data"]]
        assert steps == list(range(1, T + 1)) * K
        for row in table["data"]:
            assert -1.0 <= row[2] <= 1.0 and -1.0 <= row[3] <= 1.0
            assert (row[6] is None) == (row[1] == 1)  # step 1 is not sampled by the policy
            assert row[8] in (0.0, 1.0) and 0 <= row[9] <= 9
    assert len(_images(run, "val", "glimpses")) == 2 * K
    assert len(_images(run, "test", "glimpses")) == K


def test_racnn_zoom_chains_logged_offline_and_drawn_where_logged(tmp_path, monkeypatch):
    run = _fit_offline("racnn_quickstart.yaml", tmp_path, monkeypatch,
                       "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
                       "--trainer.limit_test_batches=1", "--model.init_args.extras.warmup_steps=1",
                       "--model.init_args.apn_pretrain_steps=1", "--model.init_args.extras.reanchor_steps=0",
                       "--model.init_args.cls_length=1", "--model.init_args.rank_length=1")
    columns = ["image_id", "scale", "tx", "ty", "tl", "p_true"]
    val, test = _tables(run, "val", "zoom_chains"), _tables(run, "test", "zoom_chains")
    assert len(val) == 2 and len(test) == 1  # one per validation epoch, one for the test
    for table in val + test:
        assert table["columns"] == columns
        assert len(table["data"]) == K * 2  # 2 scales
        assert [row[1] for row in table["data"]] == [1, 2] * K
        for row in table["data"]:
            assert 0.0 <= row[5] <= 1.0
    assert len(_images(run, "val", "zoom_chains")) == 2 * K
    assert len(_images(run, "test", "zoom_chains")) == K

    # the PNG files: one per image + a contact sheet + the table, and the scale-2 box is drawn
    # where table.csv says (its left and right edges at mid-height carry the scale-2 colour)
    folder = tmp_path / "runs" / "racnn_quickstart" / "version_0" / "zoom_chains" / "test"
    pngs = sorted(glob.glob(str(folder / "test_*.png")))
    assert len(pngs) == K and (folder / "grid.png").exists()
    rows = list(csv.DictReader((folder / "table.csv").read_text().splitlines()))
    assert len(rows) == 2 * K
    up = 2  # ZoomChainWriter's default upscale
    for i, path in enumerate(pngs):
        pic = Image.open(path).convert("RGB")
        assert pic.width > 96 * up and len(set(pic.getdata())) > 20  # image + crop, not blank
        row = next(r for r in rows if int(r["image_id"]) == i and r["scale"] == "2")
        tx, ty, tl = (float(row[c]) for c in ("tx", "ty", "tl"))
        y = round(ty * up) + 3  # below the centre: away from the scale label
        for x in (round((tx - tl) * up), round((tx + tl) * up) - 2):
            assert pic.getpixel((x, y)) == scale_colour(2), (path, x, y)


def test_draw_zoom_chain_puts_boxes_at_their_coordinates():
    image = torch.zeros(3, 40, 40)
    pic = draw_zoom_chain(image, torch.tensor([[20.0, 16.0, 8.0]]), [torch.ones(3, 24, 24)], upscale=2,
                          true_box=torch.tensor([2.0, 2.0, 10.0, 10.0]))
    assert pic.size == (80 + 4 + 80, 80)
    assert pic.getpixel((24, 40)) == scale_colour(2)  # x0 = (20 - 8) * 2, mid-height
    assert pic.getpixel((30, 40)) == (0, 0, 0)  # inside: untouched
    assert pic.getpixel((4, 10)) == (0, 255, 0)  # the true box's left edge
    assert pic.getpixel((84 + 40, 40)) == (255, 255, 255)  # the (white) crop beside the image


def test_wandb_logger_goes_offline_without_credentials(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    assert not wandb_credentials_available()
    assert WandbLogger(save_dir=str(tmp_path)).resolved_mode() == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert WandbLogger(save_dir=str(tmp_path)).resolved_mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert WandbLogger(save_dir=str(tmp_path)).resolved_mode() == "disabled"
    assert WandbLogger(save_dir=str(tmp_path), offline=True).resolved_mode() == "disabled"  # env wins


@pytest.mark.parametrize("bad", [{"num_images": 0}, {"every_n_epochs": -1}, {"upscale": 0}])
def test_picture_callbacks_reject_bad_values(bad):
    from raccn.callbacks import GlimpseTrajectoryWriter, ZoomChainWriter

    for cls in (GlimpseTrajectoryWriter, ZoomChainWriter):
        with pytest.raises(ValueError, match=next(iter(bad))):
            cls(**bad)


@pytest.mark.parametrize("ema_first", [True, False])
def test_validation_pictures_use_the_weights_validation_used(tmp_path, monkeypatch, ema_first):
    """With an EMA callback, validation runs on the averaged weights; the epoch's pictures must
    be drawn with those too, whichever order the callbacks are listed in (the EMA callback
    swaps the raw weights back in its on_validation_epoch_end)."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import EMAWeightAveraging

    from raccn.callbacks import GlimpseTrajectoryWriter

    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.chdir(tmp_path)
    cli = main(["--config", os.path.join(ROOT, "configs", "ram_quickstart.yaml"),
                "--trainer.logger=false"], run=False)
    fingerprint = lambda m: torch.cat([p.detach().flatten() for p in m.parameters()]).clone()
    seen = {}

    class Spy(pl.Callback):
        def on_validation_batch_end(self, trainer, pl_module, *args, **kwargs):
            seen["validated"] = fingerprint(pl_module)

    class Writer(GlimpseTrajectoryWriter):
        def render(self, pl_module, *args, **kwargs):
            seen["drawn"] = fingerprint(pl_module)
            return super().render(pl_module, *args, **kwargs)

    ema, writer = EMAWeightAveraging(decay=0.5), Writer(num_images=2, every_n_epochs=1)
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=3, limit_val_batches=2, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, num_sanity_val_steps=0,
                         accelerator="cpu", default_root_dir=str(tmp_path),
                         callbacks=[ema, writer, Spy()] if ema_first else [writer, ema, Spy()])
    trainer.fit(cli.model, datamodule=cli.datamodule)
    assert "drawn" in seen and torch.equal(seen["drawn"], seen["validated"])
    assert any(p.endswith("grid.png") for p in writer.written)


PROMISED_FALLBACK_S = 15.0  # docs/usage.md, "Attention pictures and Weights & Biases"


def test_unreachable_wandb_server_falls_back_to_offline_in_time(tmp_path, monkeypatch):
    """Credentials (a 40-character key) but ``WANDB_BASE_URL`` on a closed port of 127.0.0.1, as
    a new user with a refused connection: a tiny ``fit`` through the CLI. W&B goes offline at once
    (``wandb.init`` is called once, offline: wandb's own retries, ~45 s here, are never waited
    out), the fallback (from the probe to the offline run's start) takes less than the promised
    15 s, training runs to its end, and the offline run holds the logged training metrics."""
    import wandb

    import raccn.loggers.wandb as our_wandb

    with socket.socket() as s:  # a port nothing listens on once this closes
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "0123456789abcdef0123456789abcdef01234567")
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.chdir(tmp_path)
    wandb.finish()
    wandb.teardown()  # wandb's process-wide settings (base URL, folders) are read at its first setup
    times, modes = {}, []
    probe, init = our_wandb.server_unreachable, wandb.init

    def timed_probe(*args, **kwargs):
        times["probe"] = time.monotonic()
        return probe(*args, **kwargs)

    def recorded_init(*args, **kwargs):
        modes.append(kwargs.get("mode"))
        run = init(*args, **kwargs)
        times["offline"] = time.monotonic()
        return run

    monkeypatch.setattr(our_wandb, "server_unreachable", timed_probe)
    monkeypatch.setattr(wandb, "init", recorded_init)
    try:
        with pytest.warns(UserWarning, match=rf"W&B server unreachable \(127.0.0.1:{port}: .*refused"):
            cli = main(["fit", "--config", os.path.join(ROOT, "configs", "ram_quickstart.yaml"),
                        "--trainer.max_epochs=1", "--trainer.limit_train_batches=3",
                        "--trainer.limit_val_batches=1", "--trainer.log_every_n_steps=1",
                        "--trainer.enable_progress_bar=false", "--test_after_fit=false"])
    finally:
        wandb.finish()
        wandb.teardown()  # the next test's wandb must not keep this one's settings
    fallback = times["offline"] - times["probe"]
    print(f"W&B fallback to offline: {fallback:.2f} s")
    assert modes == ["offline"] and fallback < PROMISED_FALLBACK_S
    assert cli.trainer.global_step == 3 and cli.trainer.state.finished  # training went on
    (run,) = glob.glob(str(tmp_path / "runs" / "wandb" / "offline-run-*"))
    assert not glob.glob(str(tmp_path / "runs" / "wandb" / "run-*"))  # no online attempt left behind
    (events,) = glob.glob(os.path.join(run, "run-*.wandb"))
    with open(events, "rb") as f:  # wandb's record log (protobuf); history keys are plain strings
        records = f.read()
    with open(cli.trainer.loggers[0].log_dir + "/metrics.csv") as f:
        logged = next(csv.reader(f))  # the CSV logger's columns: every metric logged
    for key in ("trainer/global_step", *[k for k in logged if k.startswith(("train/", "val/"))]):
        assert key.encode() in records, key


def test_validation_pictures_keep_the_same_images_when_validation_is_smaller_than_num_images(tmp_path, monkeypatch):
    """A validation set (or a DDP process's share of it) smaller than ``num_images``: every epoch
    draws the same images, as many as there are (they used to be collected again each epoch, the
    second epoch drawing each image twice)."""
    import pytorch_lightning as pl

    from raccn.callbacks import GlimpseTrajectoryWriter

    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.chdir(tmp_path)
    cli = main(["--config", os.path.join(ROOT, "configs", "ram_quickstart.yaml"), "--trainer.logger=false",
                "--data.init_args.batch_size=2"], run=False)
    drawn = []

    class Writer(GlimpseTrajectoryWriter):
        def render(self, pl_module, images, *args, **kwargs):
            drawn.append(images.clone())
            return super().render(pl_module, images, *args, **kwargs)

    writer = Writer(num_images=8, every_n_epochs=1)
    trainer = pl.Trainer(max_epochs=3, limit_train_batches=1, limit_val_batches=2, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, num_sanity_val_steps=0,
                         accelerator="cpu", default_root_dir=str(tmp_path), callbacks=[writer])
    trainer.fit(cli.model, datamodule=cli.datamodule)
    assert len(drawn) == 3 and all(d.shape[0] == 4 for d in drawn), [d.shape for d in drawn]
    assert all(torch.equal(d, drawn[0]) for d in drawn)
