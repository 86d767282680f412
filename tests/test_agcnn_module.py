"""AGCNNLitModule: the three stages move only their own branch (and leave the fixed branches'
batch-norm statistics alone), in steps and in epochs; per-stage learning rates; the metrics
against an independent computation; resuming in the middle of a stage; a short fit on the part
proxy learns."""

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset
from torchvision.ops import box_iou

from raccn.datamodules import PartDigitsDataModule
from raccn.lit import AGCNNLitModule
from raccn.models import AGCNN


def net(**kw):
    return AGCNN(5, **{"backbone": "small_vgg_bn", "local_size": 32, **kw})


def loader(n=8, size=64, with_box=True, batch_size=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    tensors = [torch.rand(n, 3, size, size, generator=g), torch.randint(0, 5, (n,), generator=g)]
    if with_box:
        tensors.append(torch.tensor([[8.0, 8.0, 40.0, 40.0]]).expand(n, 4))
    return DataLoader(TensorDataset(*tensors), batch_size=batch_size)


class TinyData(pl.LightningDataModule):
    def train_dataloader(self):
        return loader(with_box=False)

    def val_dataloader(self):
        return loader()

    test_dataloader = val_dataloader


class StepSpy(pl.Callback):
    """Per training step: the learning rate of each stage's optimiser, and which top-level parts
    of the network it changed (weights or batch-norm statistics)."""

    def __init__(self):
        self.lrs, self.moved = [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.lrs.append(tuple(o.param_groups[0]["lr"] for o in trainer.optimizers))
        self.before = {k: v.clone() for k, v in pl_module.net.state_dict().items()}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        after = pl_module.net.state_dict()
        moved = {k.split(".")[0] for k, v in self.before.items() if not torch.equal(v, after[k])}
        self.moved.append("/".join(sorted(moved)))


class OneBatch(TinyData):
    """One batch per epoch: Lightning resumes a run stopped by max_steps at an epoch end with that
    epoch's batches again (see test_racnn_model)."""

    def train_dataloader(self):
        return loader(n=4, with_box=False)


def fit(m, root, steps, ckpt_path=None, data=None, **kwargs):
    spy = StepSpy()
    trainer = pl.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=root, callbacks=[spy],
                         num_sanity_val_steps=0, limit_val_batches=0, **kwargs)
    trainer.fit(m, datamodule=data or TinyData(), ckpt_path=ckpt_path)
    return trainer, spy


GLOBAL, LOCAL, FUSION = "global_classifier/global_trunk", "local_classifier/local_trunk", "fusion_classifier"
ADAM = lambda p: torch.optim.Adam(p, lr=1e-2)


def test_each_stage_moves_its_own_branch_only(tmp_path):
    """global, global, local, local, fusion, fusion: weights and batch-norm statistics of the
    other branches stay (they run in eval mode and get no gradients)."""
    pl.seed_everything(0)
    m = AGCNNLitModule(net(), global_length=2, local_length=2, optimizer=ADAM)
    _, spy = fit(m, tmp_path, 6, enable_checkpointing=False)
    assert spy.moved == [GLOBAL, GLOBAL, LOCAL, LOCAL, FUSION, FUSION]


def test_stages_in_epochs_end_at_epoch_ends(tmp_path):
    """2 steps per epoch (8 images, batches of 4): one epoch per stage."""
    pl.seed_everything(0)
    m = AGCNNLitModule(net(), stage_unit="epochs", global_length=1, local_length=1, optimizer=ADAM)
    _, spy = fit(m, tmp_path, 6, enable_checkpointing=False)
    assert spy.moved == [GLOBAL, GLOBAL, LOCAL, LOCAL, FUSION, FUSION] and m.schedule.steps_per_epoch == 2


def test_cosine_decay_restarts_in_every_stage(tmp_path):
    """Each stage's learning rate goes 1, 0.5 of its value over its 2 steps (the fusion stage's
    length is what is left of the 6 steps); a stage's optimiser idles at 1 before and 0 after."""
    pl.seed_everything(0)
    m = AGCNNLitModule(net(), global_length=2, local_length=2, lr_decay="cosine",
                       optimizer=lambda p: torch.optim.SGD(p, lr=0.4))
    _, spy = fit(m, tmp_path, 6, enable_checkpointing=False)
    assert spy.lrs == pytest.approx([(0.4, 0.4, 0.4), (0.2, 0.4, 0.4), (0.0, 0.4, 0.4), (0.0, 0.2, 0.4),
                                     (0.0, 0.0, 0.4), (0.0, 0.0, 0.2)])


def test_metrics_equal_an_independent_computation(tmp_path):
    """Accuracies over the whole split (not means of batch means: batches of 4 and 2 images) and
    the crop's IoU with the true box, recomputed from the network's outputs with torchvision."""
    pl.seed_everything(0)
    m = AGCNNLitModule(net())
    data = loader(n=6, batch_size=4, seed=3)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path)
    (result,) = trainer.test(m, dataloaders=data, verbose=False)
    images, target, truth = data.dataset.tensors
    with torch.no_grad():
        out = m.net.eval()(images)
    for branch, logits in (("global", out.global_logits), ("local", out.local_logits), ("fusion", out.fused_logits)):
        assert result[f"test/acc_{branch}"] == pytest.approx((logits.argmax(1) == target).float().mean().item())
    iou = box_iou(out.boxes, truth).diagonal()
    assert result["test/crop_iou"] == pytest.approx(iou.mean().item(), abs=1e-6)
    assert set(result) == {"test/acc_global", "test/acc_local", "test/acc_fusion", "test/crop_iou"}


def test_crop_iou_of_a_planted_box_and_none_without_true_boxes(tmp_path):
    """The crop (0, 0, 32, 32) against the true (8, 8, 40, 40): 24² / (2 · 32² - 24²) = 576 / 1472."""
    m = AGCNNLitModule(net())
    m.net.crop_boxes = lambda heat, h, w: torch.tensor([[0.0, 0.0, 32.0, 32.0]]).expand(len(heat), 4)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path)
    (result,) = trainer.test(m, dataloaders=loader(), verbose=False)
    assert result["test/crop_iou"] == pytest.approx(576 / 1472)
    (result,) = trainer.test(m, dataloaders=loader(with_box=False), verbose=False)
    assert "test/crop_iou" not in result and "test/acc_fusion" in result


def test_resume_continues_the_stage_with_the_optimisers_and_schedulers(tmp_path):
    """Stopped after 3 steps (global, global, local) and resumed: the same learning rates, the
    same branches moved and the same weights as a run that did not stop."""
    kwargs = {"global_length": 2, "local_length": 2, "lr_decay": "cosine",
              "optimizer": lambda p: torch.optim.SGD(p, lr=0.04, momentum=0.9)}
    pl.seed_everything(0)
    full, spy_full = fit(AGCNNLitModule(net(), **kwargs), tmp_path / "full", 6, data=OneBatch())
    pl.seed_everything(0)
    first, _ = fit(AGCNNLitModule(net(), **kwargs), tmp_path / "first", 3, data=OneBatch())
    ckpt = tmp_path / "mid.ckpt"
    first.save_checkpoint(ckpt)
    state = torch.load(ckpt, weights_only=True)  # plain values only
    assert len(state["optimizer_states"]) == 3 and [s["last_epoch"] for s in state["lr_schedulers"]] == [3] * 3
    resumed = AGCNNLitModule(net(), **kwargs)
    _, spy = fit(resumed, tmp_path / "resumed", 6, ckpt_path=ckpt, data=OneBatch())
    assert spy.lrs == spy_full.lrs[3:] and spy.moved == spy_full.moved[3:] == [LOCAL, FUSION, FUSION]
    for k, v in full.lightning_module.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, msg=k)


@pytest.mark.parametrize("kwargs,match", [
    ({"lr_decay": "step"}, "lr_decay must be null or 'cosine'"),
    ({"global_length": -1}, "the global stage's length must be an integer >= 0"),
    ({"stage_unit": "days"}, "stage unit must be"),
])
def test_invalid_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AGCNNLitModule(net(), **kwargs)


def test_short_fit_on_the_part_proxy_learns(tmp_path):
    """A small part proxy (20 classes, chance 0.05; 24-px digits on 32-px canvases, no
    distractors): 40 global, 40 local and 10 fusion steps lift the global and fusion branches far
    above chance, the local branch (from scratch on 16-px crops) well above it (0.1 is 4.6
    standard deviations above chance on 512 test canvases)."""
    pl.seed_everything(0)
    torch.set_num_threads(1)
    dm = PartDigitsDataModule(upscale=3, canvas_size=32, head_size=8, head_offset=2, num_distractors=0,
                              train_size=1280, val_size=64, test_size=512, batch_size=32)
    m = AGCNNLitModule(AGCNN(20, backbone="small_vgg_bn", global_size=32, local_size=16),
                       global_length=40, local_length=40, optimizer=lambda p: torch.optim.Adam(p, lr=3e-3))
    trainer = pl.Trainer(max_steps=90, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path,
                         num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(m, datamodule=dm)
    (result,) = trainer.test(m, datamodule=dm, verbose=False)
    assert result["test/acc_global"] > 0.3 and result["test/acc_fusion"] > 0.3  # 0.58, 0.61 when written
    assert result["test/acc_local"] > 0.1  # 0.25 when written
    assert 0.0 <= result["test/crop_iou"] <= 1.0


def test_predict_gives_the_fusion_prediction_and_the_crop(tmp_path):
    pl.seed_everything(0)
    m = AGCNNLitModule(net())
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path)
    data = loader(n=6, with_box=False)
    out = trainer.predict(m, dataloaders=data)
    images = data.dataset.tensors[0]
    with torch.no_grad():
        ref = m.net.eval()(images)
    probs = ref.fused_logits.softmax(-1)
    torch.testing.assert_close(torch.cat([o["pred"] for o in out]), probs.argmax(1))
    torch.testing.assert_close(torch.cat([o["prob"] for o in out]), probs.max(1).values)
    torch.testing.assert_close(torch.cat([o["crop_box"] for o in out]), ref.boxes)
