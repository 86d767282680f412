"""The LightningCLI entry point: every config parses and instantiates; bad values fail early;
the quick start runs end to end (short) and writes its pictures."""

import glob
import os
import subprocess
import sys

import pytest

from raccn.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the RAM configs on built-in data (ram_imagefolder.yaml needs a folder: tests/test_imagefolder_configs.py)
CONFIGS = sorted(c for c in glob.glob(os.path.join(ROOT, "configs", "ram_*.yaml"))
                 if not c.endswith("ram_imagefolder.yaml"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

EXPECTED = {  # config -> (glimpses, patch_size, scales, image side, distractors)
    "ram_quickstart": (None, None, None, None, None),
    "ram_mnist": (6, 8, 1, 28, None),
    "ram_translated": (6, 12, 3, 60, 0),
    "ram_cluttered": (8, 12, 3, 60, 4),
    "ram_cluttered100": (8, 12, 4, 100, 8),
    "ram_svhn_cropped": (6, 8, 2, 32, None),
}


def test_all_ram_configs_are_listed():
    assert {os.path.basename(c)[:-5] for c in CONFIGS} == set(EXPECTED)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: os.path.basename(c))
def test_config_parses_and_instantiates(config, tmp_path):
    cli = main(["--config", config, "--trainer.default_root_dir", str(tmp_path),
                "--trainer.logger", "false"], run=False)
    net = cli.model.net
    assert net.num_classes == cli.datamodule.num_classes == 10  # linked into the injected net
    assert net.classifier.fc.out_features == 10
    assert cli.model.hparams.net["init_args"]["num_classes"] == 10  # saved, for load_from_checkpoint
    sensor = net.glimpse_net
    glimpses, patch, scales, side, distractors = EXPECTED[os.path.basename(config)[:-5]]
    if glimpses is not None:
        assert (net.glimpses, sensor.patch_size, sensor.scales) == (glimpses, patch, scales)
        assert cli.datamodule.image_size == (side, side)
    if distractors:
        assert cli.datamodule.hparams.num_distractors == distractors
    assert sensor.patch_size <= min(cli.datamodule.image_size)


def run_train(*args, cwd):
    env = dict(os.environ, WANDB_MODE="disabled", PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.parametrize("override,message", [
    ("--model.init_args.net.init_args.std=0", "std must be > 0"),
    ("--model.init_args.net.init_args.glimpses=0", "glimpses must be an integer >= 1"),
    ("--model.init_args.net.init_args.patch_size=64", "larger than the data's 40x40 images"),
    ("--model.init_args.net.init_args.in_channels=3", "set model.init_args.net.init_args.in_channels: 1"),
    ("--model.init_args.mc_samples=0", "mc_samples must be an integer >= 1"),
])
def test_invalid_values_fail_before_training(override, message, tmp_path):
    r = run_train("fit", "--config", os.path.join(ROOT, "configs", "ram_quickstart.yaml"),
                  override, "--trainer.max_epochs=1", cwd=tmp_path)
    assert r.returncode != 0
    assert message in r.stderr
    assert "Epoch 0" not in r.stdout + r.stderr  # nothing trained
    assert not glob.glob(str(tmp_path / "runs" / "**" / "*.ckpt"), recursive=True)


def test_missing_mnist_folder_fails_with_instructions(tmp_path):
    r = run_train("fit", "--config", os.path.join(ROOT, "configs", "ram_mnist.yaml"),
                  f"--data.init_args.data_dir={tmp_path / 'nowhere'}",
                  "--data.init_args.download=false", cwd=tmp_path)
    assert r.returncode != 0
    assert "train-images-idx3-ubyte" in r.stderr and "data_dir" in r.stderr


def test_quickstart_short_run_end_to_end(tmp_path):
    """fit (2 short epochs) -> test on the best checkpoint -> metrics printed, PNGs written."""
    r = run_train("fit", "--config", os.path.join(ROOT, "configs", "ram_quickstart.yaml"),
                  "--trainer.max_epochs=2", "--trainer.limit_train_batches=3",
                  "--trainer.enable_progress_bar=false", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout + r.stderr
    for name in ("test/acc", "test/error", "test/acc_glimpse1"):
        assert name in out
    assert "RAM test accuracy:" in out
    pngs = glob.glob(str(tmp_path / "runs" / "ram_quickstart" / "version_0" / "glimpses" / "test" / "*.png"))
    assert len(pngs) == 9  # 8 trajectories + the contact sheet
    assert all(os.path.getsize(p) > 500 for p in pngs)
    ckpts = glob.glob(str(tmp_path / "runs" / "ram_quickstart" / "version_0" / "checkpoints" / "*.ckpt"))
    assert ckpts
    # the checkpoint can be tested again from the command line
    r2 = run_train("test", "--config", os.path.join(ROOT, "configs", "ram_quickstart.yaml"),
                   f"--ckpt_path={ckpts[0]}", "--trainer.enable_progress_bar=false", cwd=tmp_path)
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert "test/acc_glimpse4" in r2.stdout + r2.stderr


@pytest.mark.parametrize("config", sorted(glob.glob(os.path.join(ROOT, "configs", "*.yaml"))),
                         ids=os.path.basename)
def test_every_config_keeps_the_best_and_the_last_checkpoint(config):
    import yaml
    with open(config) as f:
        trainer = yaml.safe_load(f)["trainer"]
    if isinstance(trainer, str):  # a shared trainer file, relative to the config
        with open(os.path.join(os.path.dirname(config), trainer)) as f:
            trainer = yaml.safe_load(f)
    callbacks = trainer["callbacks"]
    ckpts = [c["init_args"] for c in callbacks if c["class_path"].endswith("ModelCheckpoint")]
    assert [c.get("monitor") is not None for c in ckpts] == [True, False]
    assert ckpts[1]["filename"] == "last" and not any(c.get("save_last") for c in ckpts)


@pytest.mark.parametrize("which", ["best", "last"])
def test_last_ckpt_holds_the_last_epoch_when_the_best_is_earlier(which, tmp_path, monkeypatch):
    """Lightning >= 2.6 writes save_last's last.ckpt only when the monitored best improves; with
    lr = 0 (and glimpse locations sampled with a negligible std, so that validation scores the
    same every epoch) it never does after epoch 0, and last.ckpt must still be epoch 2's.
    ``test_ckpt`` chooses which of the two the test after fit loads."""
    import torch
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    cli = main(["fit", "--config", os.path.join(ROOT, "configs", "ram_quickstart.yaml"),
                "--model.init_args.optimizer.init_args.lr=0", "--model.init_args.net.init_args.std=1e-6",
                "--trainer.max_epochs=3",
                "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
                "--trainer.limit_test_batches=1", "--trainer.enable_progress_bar=false",
                "--trainer.logger=false", "--test_after_fit=true", f"--test_ckpt={which}"])
    folder = tmp_path / "runs" / "ram_quickstart" / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["best-epoch=00.ckpt", "last.ckpt"]
    assert torch.load(folder / "last.ckpt", weights_only=False)["epoch"] == 2
    tested = {"best": "best-epoch=00.ckpt", "last": "last.ckpt"}[which]
    assert os.path.abspath(cli.trainer.ckpt_path) == str(folder / tested)



def test_test_after_fit_tests_the_averaged_weights_of_an_ema_run(tmp_path, monkeypatch):
    """With an EMA callback, a checkpoint's state_dict holds the averaged weights (the ones
    validation scored) and current_model_state the raw ones; the test after fit must use the
    averaged weights, as `train.py test --ckpt_path` does, not have the callback put the raw
    ones back."""
    import torch
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    ema = '{"class_path": "pytorch_lightning.callbacks.EMAWeightAveraging", "init_args": {"decay": 0.9}}'
    cli = main(["fit", "--config", os.path.join(ROOT, "configs", "ram_quickstart.yaml"),
                f"--trainer.callbacks+={ema}", "--trainer.max_epochs=1",
                "--trainer.limit_train_batches=4", "--trainer.limit_val_batches=1",
                "--trainer.limit_test_batches=1", "--trainer.enable_progress_bar=false",
                "--trainer.logger=false", "--test_after_fit=true"])
    ckpt = torch.load(cli._best_checkpoint(), weights_only=False)
    tested = cli.model.state_dict()
    assert "current_model_state" in ckpt  # written by the EMA callback
    averaged, raw = ckpt["state_dict"], ckpt["current_model_state"]
    assert any(not torch.equal(averaged[k], raw[k]) for k in averaged)  # the two differ
    assert all(torch.equal(tested[k], averaged[k]) for k in averaged)
    assert any(isinstance(cb, __import__("pytorch_lightning").callbacks.WeightAveraging)
               for cb in cli.trainer.callbacks)  # the trainer's callbacks are restored afterwards

# -- RA-CNN configs on fixture folders in the real layouts ----------------------------------
from finegrained_fixtures import write_cars, write_cub, write_dogs

RACNN = {"racnn_cub": write_cub, "racnn_dogs": write_dogs, "racnn_cars": write_cars}


@pytest.mark.parametrize("name", sorted(RACNN))
def test_racnn_paper_configs_instantiate(name, tmp_path):
    fixture = RACNN[name](tmp_path / "data")
    cli = main(["--config", os.path.join(ROOT, "configs", f"{name}.yaml"),
                f"--data.init_args.data_dir={tmp_path / 'data'}", "--model.init_args.net.init_args.weights=null",
                "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false"], run=False)
    import torch

    from raccn.lit import RecipeExtras
    model, net = cli.model, cli.model.net
    assert model.hparams.net["init_args"]["backbone"] == "vgg19"
    assert (net.num_scales, net.input_sizes, net.k, round(net.min_side_fraction, 4), net.fusion, net.grid_grad) == (
        3, [448, 224, 224], 10.0, 0.3333, "concat", False)
    assert net.num_classes == cli.datamodule.num_classes == len({i.label for i in fixture.images})  # linked
    assert len(net.trunks) == 3  # separate trunks (paper)
    # the paper's recipe: pre-training on the peak, side 0.5, margin 0.05, nothing of the proxy's extras
    assert (model.hparams.margin, model.hparams.apn_pretrain_side, model.extras) == (0.05, 0.5, RecipeExtras())
    # validation runs on the test split (val_split 0): the run tests its last weights
    assert cli.datamodule.val_split == 0 and cli.config.test_ckpt == "last"
    apn_opt = model.apn_optimizer([torch.nn.Parameter(torch.zeros(1))])  # scale-free steps for the sigmoid-headed APN
    assert isinstance(apn_opt, torch.optim.Adam) and apn_opt.defaults["lr"] == 1e-4
    assert model.hparams.rank_lr_factor == 1.0 and model.hparams.crop == "apn"  # the paper's ranking step


def test_racnn_fit_and_test_on_cub_fixture(tmp_path):
    """Pre-training, both phases and the test table, end to end through train.py."""
    write_cub(tmp_path / "data", num_classes=3, n_train=4, n_test=2)
    r = run_train(
        "fit", "--config", os.path.join(ROOT, "configs", "racnn_cub.yaml"),
        f"--data.init_args.data_dir={tmp_path / 'data'}", "--data.init_args.image_size=64",
        "--data.init_args.resize_size=72", "--data.init_args.batch_size=4", "--data.init_args.num_workers=0",
        "--model.init_args.net.init_args.backbone=resnet18", "--model.init_args.net.init_args.weights=null",
        "--model.init_args.net.init_args.input_sizes=[64, 64, 64]", "--model.init_args.apn_pretrain_steps=1",
        "--model.init_args.phase_unit=steps", "--model.init_args.cls_length=1",
        "--model.init_args.rank_length=1", "--trainer.max_steps=4", "--trainer.accelerator=cpu",
        "--trainer.log_every_n_steps=1",
        "--trainer.enable_progress_bar=false", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout + r.stderr
    assert "Test report: top-1 accuracy of RACNNLitModule" in out  # the paper's table
    for name in ("test/acc_scale1", "test/acc_scale3", "test/acc_scale1+2+3", "test/acc_fused"):
        assert name in out
    metrics = (tmp_path / "runs" / "racnn_cub" / "version_0" / "metrics.csv").read_text()
    for name in ("train/loss_pretrain", "train/loss_cls", "train/loss_rank", "train/phase", "val/acc_scale2"):
        assert name in metrics


def test_racnn_missing_data_fails_before_training(tmp_path):
    r = run_train("fit", "--config", os.path.join(ROOT, "configs", "racnn_cub.yaml"),
                  f"--data.init_args.data_dir={tmp_path / 'nowhere'}",
                  "--model.init_args.net.init_args.weights=null", cwd=tmp_path)
    assert r.returncode != 0
    assert "images.txt" in r.stderr and "data_dir" in r.stderr
    assert "Epoch 0" not in r.stdout + r.stderr


# -- RA-CNN recipe switches: one config value each, in a second --config ----------------------
ABLATIONS = {  # configs/ablations/<name>.yaml -> what it changes
    "no_rank": lambda m: m.hparams.rank_lr_factor == 0,
    "no_pretrain": lambda m: m.schedule.pretrain_steps == 0,
    "reanchor": lambda m: m.extras.reanchor_steps == 40 == m.schedule.reanchor_steps,
    "warmup_apn": lambda m: m.extras.warmup_boxes == "apn",
    "mask_grad": lambda m: m.net.grid_grad is False,
    "centre_box": lambda m: m.hparams.crop == "centre",
    "random_box": lambda m: m.hparams.crop == "random",
    "heuristic_box": lambda m: m.hparams.crop == "heuristic",
}


def test_every_ablation_file_is_tested():
    files = glob.glob(os.path.join(ROOT, "configs", "ablations", "*.yaml"))
    assert sorted(os.path.basename(f)[:-5] for f in files) == sorted(ABLATIONS)


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_racnn_ablation_is_one_value_in_a_second_config(name, tmp_path):
    changed = ABLATIONS[name]
    args = ["--config", os.path.join(ROOT, "configs", "racnn_quickstart.yaml"), "--trainer.logger", "false",
            "--trainer.default_root_dir", str(tmp_path)]
    override = os.path.join(ROOT, "configs", "ablations", f"{name}.yaml")
    base, cli = main(args, run=False).model, main([*args, "--config", override], run=False).model
    assert changed(cli) and not changed(base)
    differ = {k for k in base.hparams if base.hparams[k] != cli.hparams[k]}
    assert len(differ) == 1  # everything else as in the quick start
    key = differ.pop()
    if isinstance(base.hparams[key], dict):  # extras or net: one value inside
        flat = lambda d: {f"{k}.{i}": w for k, v in d.items() for i, w in (v.items() if isinstance(v, dict) else [("", v)])}
        a, b = flat(base.hparams[key]), flat(cli.hparams[key])
        assert len({k for k in a if a[k] != b[k]}) == 1


def test_racnn_command_line_nulls_reach_the_net_and_extras(tmp_path):
    """jsonargparse passes a command-line null nested two levels deep as the string 'None'; the
    network's weights and the extras' pre-training map take it as null."""
    cli = main(["--config", os.path.join(ROOT, "configs", "racnn_quickstart.yaml"), "--trainer.logger", "false",
                "--trainer.default_root_dir", str(tmp_path), "--model.init_args.extras.pretrain_features=null",
                "--model.init_args.net.init_args.weights=null"], run=False)
    assert cli.model.extras.pretrain_features is None
    assert len(cli.model.net.trunks) == 2  # small_vgg_bn, which has no weights: built with none


# -- DRAM configs ---------------------------------------------------------------------------
DRAM_EXPECTED = {  # config -> (data module, S, glimpses per label, image side, channels, reward)
    "dram_quickstart": ("EmbeddedHouseNumbersDataModule", 3, None, None, 3, "sequence"),
    "dram_svhn": ("SVHNDataModule", 5, 3, 54, 3, "sequence"),
    "dram_mnist_sequences": ("MNISTSequencesDataModule", 3, None, 100, 1, "sequence"),
}


def test_all_dram_configs_are_listed():
    files = glob.glob(os.path.join(ROOT, "configs", "dram_*.yaml"))
    assert sorted(os.path.basename(f)[:-5] for f in files) == sorted(DRAM_EXPECTED)


@pytest.mark.parametrize("name", sorted(DRAM_EXPECTED))
def test_dram_config_parses_and_instantiates(name, tmp_path):
    from raccn.lit import DRAMLitModule
    from raccn.models import DRAM

    cli = main(["--config", os.path.join(ROOT, "configs", f"{name}.yaml"),
                f"--data.init_args.data_dir={tmp_path / 'data'}",
                "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false"], run=False)
    data_class, slots, per_label, side, channels, reward = DRAM_EXPECTED[name]
    model, net, dm = cli.model, cli.model.net, cli.datamodule
    assert isinstance(model, DRAMLitModule) and isinstance(net, DRAM) and type(dm).__name__ == data_class
    assert net.num_classes == dm.num_classes == 10 and net.eos_index == 10  # linked; EOS added by the model
    assert model.hparams.net["init_args"]["num_classes"] == 10  # saved, for load_from_checkpoint
    assert net.max_digits == dm.max_length == slots and net.in_channels == dm.num_channels == channels
    assert model.hparams.reward == reward
    if per_label is not None:
        assert net.glimpses_per_digit == per_label
    if side is not None:
        assert dm.image_size == (side, side)
    assert net.glimpse_net.patch_size <= min(dm.image_size)
    monitored = [c.monitor for c in cli.trainer.checkpoint_callbacks if getattr(c, "monitor", None)]
    assert monitored == ["val/seq_acc"]


def test_dram_slots_must_match_the_data(tmp_path):
    r = run_train("fit", "--config", os.path.join(ROOT, "configs", "dram_quickstart.yaml"),
                  f"--data.init_args.data_dir={tmp_path / 'data'}", "--data.init_args.train_size=8",
                  "--data.init_args.test_size=4", "--data.init_args.val_split=0.25",
                  "--model.init_args.net.init_args.max_digits=4", "--trainer.max_epochs=1", cwd=tmp_path)
    assert r.returncode != 0
    assert "set model.init_args.net.init_args.max_digits: 3" in r.stderr
    assert not glob.glob(str(tmp_path / "runs" / "**" / "*.ckpt"), recursive=True)
