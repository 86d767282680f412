"""configs/zoo/: every file parses through the CLI and changes only what it says (a block in both
RA-CNN trunks, the cropper) against the quick start, or (AG-CNN) uses its trunk, data, batch and
budget; AG-CNN and one block run a couple of steps end to end."""

import glob
import os

import pytest
import yaml
from torch import nn

from raccn.cli import main
from raccn.layers import ATTENTION

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(ROOT, "configs", "racnn_quickstart.yaml")
ZOO = os.path.join(ROOT, "configs", "zoo")
BLOCKS = ("se", "cbam", "non_local", "danet", "ccnet", "aa_conv", "sasa", "residual_attention")
# block -> (class name of what it inserts, how many per small_vgg_bn trunk; raccn.models.trunk_attention)
INSERTED = {"se": ("SEModule", 4), "cbam": ("CbamModule", 4), "non_local": ("NonLocalAttn", 1),
            "danet": ("DualAttention", 1), "ccnet": ("CrissCrossAttention", 1),
            "aa_conv": ("AugmentedConv2d", 7), "sasa": ("LocalSelfAttention2d", 7),
            "residual_attention": ("ResidualAttention", 3)}


def args_for(name: str, tmp_path) -> list[str]:
    configs = ["--config", os.path.join(ZOO, f"{name}.yaml")]
    if name != "agcnn":  # an override of the quick start
        configs = ["--config", QUICKSTART, *configs]
    return [*configs, "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path)]


def quick_start(tmp_path):
    return main(["--config", QUICKSTART, "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path)],
                run=False)


def test_every_zoo_file_is_tested_and_every_block_has_one():
    files = {os.path.basename(f)[:-5] for f in glob.glob(os.path.join(ZOO, "*.yaml"))}
    assert files == {*BLOCKS, "stn", "agcnn"} and set(BLOCKS) == set(ATTENTION)


@pytest.mark.parametrize("name", [*BLOCKS, "stn"])
def test_racnn_zoo_override_changes_only_the_trunks_block_or_the_cropper(name, tmp_path):
    base = quick_start(tmp_path).model
    cli = main(args_for(name, tmp_path), run=False)
    model = cli.model
    differ = {k for k in base.hparams if base.hparams[k] != model.hparams[k]}
    assert differ == {"net"}  # the recipe as in the quick start
    net_base, net = base.hparams["net"]["init_args"], model.hparams["net"]["init_args"]
    changed = {k for k in net_base.keys() | net.keys() if net_base.get(k) != net.get(k)}
    if name == "stn":
        assert changed == {"cropper"} and model.net.cropper == "stn"
        return
    assert changed <= {"attention", "attention_args"} and net["attention"] == name
    cls, count = INSERTED[name]
    for trunk in model.net.trunks:  # both scales' trunks
        assert sum(type(m).__name__ == cls for m in trunk.modules()) == count


def test_agcnn_config_uses_the_quick_starts_trunk_data_batch_and_budget(tmp_path):
    from raccn.lit import AGCNNLitModule
    from raccn.models import AGCNN

    quick = quick_start(tmp_path)
    cli = main(args_for("agcnn", tmp_path), run=False)
    model, net = cli.model, cli.model.net
    assert isinstance(model, AGCNNLitModule) and isinstance(net, AGCNN)
    q = quick.model.hparams["net"]["init_args"]
    assert model.hparams["net"]["init_args"]["backbone"] == q["backbone"] == "small_vgg_bn"
    assert [net.global_size, net.local_size] == q["input_sizes"]  # the scales' inputs
    assert net.num_classes == cli.datamodule.num_classes == 20
    assert cli.datamodule.hparams == quick.datamodule.hparams
    assert cli.trainer.max_epochs == quick.trainer.max_epochs
    assert cli.config.seed_everything == quick.config.seed_everything
    opt = model.optimizer([nn.Parameter(nn.init.zeros_(nn.Linear(1, 1).weight))])
    assert type(opt).__name__ == "Adam" and opt.defaults["lr"] == 1e-3  # the quick start's cls optimiser
    with open(os.path.join(ZOO, "agcnn.yaml")) as f:
        callbacks = yaml.safe_load(f)["trainer"]["callbacks"]
    ckpts = [c["init_args"] for c in callbacks if c["class_path"].endswith("ModelCheckpoint")]
    assert [c.get("monitor") for c in ckpts] == ["val/acc_fusion", None] and ckpts[1]["filename"] == "last"
    # the three stages fit in the budget: the fusion stage gets steps too
    assert model.schedule.start(2) < cli.trainer.max_epochs * 12000 // 32


@pytest.mark.parametrize("name", ["agcnn", "ccnet"])
def test_zoo_config_runs_a_few_steps_and_tests(name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    main(["fit", *args_for(name, tmp_path), "--trainer.fast_dev_run=2", "--trainer.enable_progress_bar=false",
          "--data.init_args.train_size=64", "--data.init_args.val_size=64", "--data.init_args.test_size=64"])
    out = capsys.readouterr().out
    names = ["test/acc_global", "test/acc_local", "test/acc_fusion", "test/crop_iou"] if name == "agcnn" else [
        "test/acc_scale1", "test/acc_fused", "test/apn_iou_scale2"]
    assert all(n in out for n in names), out[-2000:]
