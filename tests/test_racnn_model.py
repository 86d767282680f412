"""RA-CNN model and training procedure: shapes, box bounds, gradient routing per phase,
phase schedule and its checkpointing, the test table, weights loading, config checks."""

import math
import os

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from raccn.lit import RACNNLitModule, RecipeExtras
from raccn.lit.phase_schedule import Phase
from raccn.models import RACNN
from raccn.models.apn import AttentionProposalNetwork
from raccn.models.backbones import build_trunk
from raccn.ops.boxes import box_iou_pairs, compose_squares, square_to_xyxy

SMALL = {"backbone": "resnet18", "num_scales": 3, "input_sizes": [64, 64, 64], "apn_hidden": 16,
         "apn_pool": 2}


def test_apn_box_bounds():
    apn = AttentionProposalNetwork(8, hidden=4, pool=2, min_side_fraction=1 / 3)
    feats = torch.randn(4, 8, 4, 4)
    torch.testing.assert_close(apn(feats, 90), torch.tensor([[45.0, 45.0, 30.0]]).expand(4, 3))  # init: centred
    with torch.no_grad():
        apn.fc2.bias.copy_(torch.tensor([-50.0, 50.0, -50.0]))  # u = (0, 1, 0): smallest box, left, bottom
    torch.testing.assert_close(apn(feats, 90), torch.tensor([[15.0, 75.0, 15.0]]).expand(4, 3))
    with torch.no_grad():
        apn.fc2.bias.copy_(torch.tensor([50.0, -50.0, 50.0]))  # largest box: the whole image
    torch.testing.assert_close(apn(feats, 90), torch.tensor([[45.0, 45.0, 45.0]]).expand(4, 3))
    torch.nn.init.normal_(apn.fc2.weight, std=5.0)
    tx, ty, tl = apn(torch.randn(256, 8, 4, 4), 90).unbind(1)
    assert (tl >= 15 - 1e-4).all() and (tl <= 45 + 1e-4).all()  # [L/6, L/2]
    assert (tx - tl >= -1e-4).all() and (tx + tl <= 90 + 1e-4).all()
    assert (ty - tl >= -1e-4).all() and (ty + tl <= 90 + 1e-4).all()


@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("fusion", ["concat", "softmax"])
def test_forward_shapes(B, fusion):
    torch.manual_seed(0)
    net = RACNN(7, fusion=fusion, **SMALL)
    out = net(torch.rand(B, 3, 64, 64))
    assert [z.shape for z in out.logits] == [(B, 7)] * 3 and out.fused_logits.shape == (B, 7)
    assert [x.shape[-1] for x in out.inputs] == [64, 64, 64]
    assert [b.shape for b in out.boxes] == [(B, 3)] * 2


def test_boxes_only_stops_after_the_last_apn():
    torch.manual_seed(0)
    net = RACNN(7, **SMALL).eval()
    x = torch.rand(2, 3, 64, 64)
    calls = []
    for s, trunk in enumerate(net.trunks):
        trunk[0].register_forward_hook(lambda *_, s=s: calls.append(s))
    full = net(x)
    assert calls == [0, 1, 2]
    calls.clear()
    part = net(x, boxes_only=True)
    assert calls == [0, 1]  # the last scale's trunk does not run
    assert part.fused_logits is None and len(part.logits) == len(part.features) == 2
    for a, b in zip(part.boxes + part.inputs + part.logits, full.boxes + full.inputs + full.logits[:2]):
        assert torch.equal(a, b)


def test_channels_last_gives_the_same_outputs_and_gradients():
    torch.manual_seed(0)
    nets = [RACNN(7, backbone="small_vgg_bn", num_scales=2, input_sizes=[48, 64], apn_hidden=16,
                  apn_pool=2, grid_grad=True, channels_last=cl) for cl in (False, True)]
    nets[1].load_state_dict(nets[0].state_dict())
    conv = next(m for m in nets[1].trunks.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.rand(3, 3, 48, 48)
    outs = []
    for net in nets:
        out = net(x)
        (sum(z.logsumexp(1).sum() for z in out.logits) + out.boxes[0].sum()).backward()
        assert out.features[0].is_contiguous(memory_format=net.memory_format)
        outs.append(out)
    torch.testing.assert_close(outs[1].fused_logits, outs[0].fused_logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(outs[1].boxes[0], outs[0].boxes[0], rtol=1e-4, atol=1e-4)
    for (name, p0), p1 in zip(nets[0].named_parameters(), nets[1].parameters()):
        torch.testing.assert_close(p1.grad, p0.grad, rtol=1e-3, atol=1e-4, msg=name)


@pytest.mark.parametrize("name", ["vgg19", "resnet18", "small_vgg_bn"])
def test_backbone_taps_give_the_map_at_their_stride(name):
    trunk = build_trunk(name)
    x = torch.rand(1, 3, 64, 64)
    assert trunk.features(x).shape == (1, trunk.channels, 64 // trunk.stride, 64 // trunk.stride)
    assert 16 in trunk.taps and 8 in trunk.taps
    for stride, (n, channels) in trunk.taps.items():
        assert trunk.features[:n](x).shape == (1, channels, 64 // stride, 64 // stride)
        if n < len(trunk.features):  # the last map at that stride: the next module downsamples
            assert trunk.features[: n + 1](x).shape[-1] < 64 // stride or n + 1 == len(trunk.features)


def test_trunk_maps_at_their_strides():
    torch.manual_seed(0)
    net = RACNN(5, **{**SMALL, "num_scales": 2, "input_sizes": [64, 64]}).eval()
    x = torch.rand(2, 3, 64, 64)
    assert torch.equal(net.trunk_map(0, x, "last"), net(x).features[0])  # the map the APN reads
    torch.testing.assert_close(net.trunk_map(0, x, "stride16"), net.trunks[0][:7](x))  # ResNet-18 layer3
    assert net.trunk_map(0, x, "stride16").shape == (2, 256, 4, 4)
    assert net.trunk_map(1, x, "stride8").shape == (2, 128, 8, 8)  # layer2
    with pytest.raises(ValueError, match="trunk map must be one of"):
        net.trunk_map(0, x, "layer3")


def test_one_backbone_per_scale():
    net = RACNN(5, backbone=["small_vgg_bn", "resnet18"], num_scales=2, input_sizes=[64, 64],
                apn_hidden=8, apn_pool=2)
    out = net(torch.rand(2, 3, 64, 64))
    assert [f.shape[-1] for f in out.features] == [4, 2]  # stride 16 where the APN reads, then 32
    assert net.apns[0].fc1.in_features == 256 * 2 * 2 and out.fused_logits.shape == (2, 5)
    assert net.fuse.in_features == 256 + 512
    for bad in (["resnet18"], ["resnet18", "resnet18", "resnet18"]):
        with pytest.raises(ValueError, match="one name or one per scale"):
            RACNN(5, backbone=bad, num_scales=2, input_sizes=[64, 64])
    with pytest.raises(ValueError, match="one name with shared_trunk"):
        RACNN(5, backbone=["small_vgg_bn", "resnet18"], num_scales=2, input_sizes=[64, 64], shared_trunk=True)


def test_shared_trunk_has_one_trunk():
    assert len(RACNN(5, shared_trunk=True, **SMALL).trunks) == 1
    assert len(RACNN(5, **SMALL).trunks) == 3


def nonzero_grads(module):
    return {n for n, p in module.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def test_gradient_routing_of_the_two_losses():
    torch.manual_seed(1)
    net = RACNN(5, **SMALL)
    x, y = torch.rand(4, 3, 64, 64), torch.tensor([0, 1, 2, 3])
    out = net(x, detach_boxes=True)
    sum(torch.nn.functional.cross_entropy(z, y) for z in out.logits).backward()
    cls = nonzero_grads(net)
    assert not any(n.startswith("apns") for n in cls)  # classification never reaches the APNs
    assert any(n.startswith("trunks.2") for n in cls) and any(n.startswith("classifiers.2") for n in cls)
    net.zero_grad()
    from raccn.losses import ranking_loss
    out = net(x)
    ranking_loss(out.logits, y, margin=1.0).backward()  # margin 1: every pair is active
    rank = nonzero_grads(net)
    assert any(n.startswith("apns.0") for n in rank) and any(n.startswith("apns.1") for n in rank)


def test_compose_squares_and_iou():
    outer = torch.tensor([[50.0, 40.0, 20.0]])  # crop [30, 70] x [20, 60], amplified to 80 px
    inner = torch.tensor([[40.0, 40.0, 10.0]])  # centre of the crop, half side 10 crop px
    img = compose_squares(outer, inner, 80)
    torch.testing.assert_close(img, torch.tensor([[50.0, 40.0, 5.0]]))
    a = square_to_xyxy(torch.tensor([[10.0, 10.0, 5.0], [10.0, 10.0, 5.0]]))
    b = torch.tensor([[5.0, 5.0, 15.0, 15.0], [10.0, 5.0, 20.0, 15.0]])
    torch.testing.assert_close(box_iou_pairs(a, b), torch.tensor([1.0, 1 / 3]))


def loader(n=8, size=64, with_box=True):
    g = torch.Generator().manual_seed(0)
    tensors = [torch.rand(n, 3, size, size, generator=g), torch.randint(0, 5, (n,), generator=g)]
    if with_box:
        tensors.append(torch.tensor([[8.0, 8.0, 40.0, 40.0]]).expand(n, 4))
    return DataLoader(TensorDataset(*tensors), batch_size=4)


class TinyData(pl.LightningDataModule):
    num_classes = 5

    def train_dataloader(self):
        return loader(with_box=False)

    def val_dataloader(self):
        return loader()

    test_dataloader = val_dataloader


NET_ARGS = {"backbone", "num_scales", "input_sizes", "apn_hidden", "apn_pool", "min_side_fraction", "k",
            "grid_grad", "fusion", "shared_trunk", "channels_last"}
EXTRAS = set(RecipeExtras.__dataclass_fields__)


def module(**kw):
    """A small module: keyword arguments of RACNN go to the net, those of RecipeExtras to extras."""
    args = {**SMALL, "cls_length": 2, "rank_length": 1, "apn_pretrain_steps": 1, **kw}
    net = RACNN(5, **{k: args.pop(k) for k in NET_ARGS & set(args)})
    extras = RecipeExtras(**{k: args.pop(k) for k in EXTRAS & set(args)})
    return RACNNLitModule(net, extras=extras, **args)


def only(m: RACNNLitModule, phase: str) -> RACNNLitModule:
    """``m`` with every step in ``phase``."""
    m.schedule = type("Only", (), {"unit": "steps", "at": staticmethod(lambda step: Phase(phase, step))})()
    return m


class StepSpy(pl.Callback):
    """Per training step: the learning rates it runs with (classification, APN optimiser) and
    which parameters it moved ("apn" or "cls": the trunks')."""

    def __init__(self):
        self.lrs, self.moved = [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.lrs.append(tuple(o.param_groups[0]["lr"] for o in trainer.optimizers))
        self.before = {k: v.clone() for k, v in pl_module.net.state_dict().items() if ".weight" in k}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        after = pl_module.net.state_dict()
        moved = {k.split(".")[0] for k, v in self.before.items() if not torch.equal(v, after[k])}
        self.moved.append("/".join(sorted(moved)))


class OneBatch(TinyData):
    def train_dataloader(self):
        return loader(n=4, with_box=False)


def fit(m, root, steps: int, ckpt_path=None, data=None, callbacks=(), **kwargs) -> tuple[pl.Trainer, StepSpy]:
    spy = StepSpy()
    trainer = pl.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=root, callbacks=[spy, *callbacks],
                         num_sanity_val_steps=0, limit_val_batches=0, **kwargs)
    trainer.fit(m, datamodule=data or TinyData(), ckpt_path=ckpt_path)
    return trainer, spy


def test_training_steps_follow_the_schedule(tmp_path):
    """warmup, pretrain, cls, cls, reanchor, rank, cls: the APN phases move only the APNs, the
    classification phases only the trunks and classifiers (and fusion)."""
    pl.seed_everything(0)
    _, spy = fit(module(warmup_steps=1, reanchor_steps=1), tmp_path, 7, enable_checkpointing=False)
    cls, apn = "classifiers/fuse/trunks", "apns"
    assert spy.moved == [cls, apn, cls, cls, apn, apn, cls]


def test_training_phases_in_epochs_end_at_epoch_ends(tmp_path):
    """2 steps per epoch: pre-training (1 step), classification to the end of epoch 0, ranking in
    epoch 1, classification in epoch 2 (the module gives the schedule the epoch length)."""
    pl.seed_everything(0)
    m = module(phase_unit="epochs", cls_length=1, rank_length=1, margin=1.0)  # margin 1: every pair ranks
    _, spy = fit(m, tmp_path, 6, enable_checkpointing=False)
    cls, apn = "classifiers/fuse/trunks", "apns"
    assert spy.moved == [apn, cls, apn, apn, cls, cls] and m.schedule.steps_per_epoch == 2


def test_resume_continues_the_phase_with_the_optimisers_and_schedulers(tmp_path):
    """A run stopped after 4 steps (pretrain, cls, cls, reanchor) and resumed from its checkpoint
    goes on with the ranking step, the same learning rates and the same weights as a run that
    did not stop; the checkpoint holds both optimisers' and both schedulers' states. (One batch per
    epoch: Lightning resumes a run stopped by max_steps at an epoch end with that epoch's batches
    again.)"""
    kwargs = {"reanchor_steps": 1, "rank_lr_factor": 0.5,
              "apn_optimizer": lambda p: torch.optim.SGD(p, lr=0.04, momentum=0.9)}
    pl.seed_everything(0)
    full, spy_full = fit(module(**kwargs), tmp_path / "full", 8, data=OneBatch())
    pl.seed_everything(0)
    first, _ = fit(module(**kwargs), tmp_path / "first", 4, data=OneBatch())
    ckpt = tmp_path / "mid.ckpt"
    first.save_checkpoint(ckpt)
    state = torch.load(ckpt, weights_only=True)  # plain values only
    assert [s["last_epoch"] for s in state["lr_schedulers"]] == [4, 4]
    assert len(state["optimizer_states"]) == 2 and all(s["state"] for s in state["optimizer_states"])
    assert "racnn_phase" not in state  # the phase follows from the global step
    resumed = module(**kwargs)
    assert resumed.schedule.at(state["global_step"]).name == "rank"
    _, spy = fit(resumed, tmp_path / "resumed", 8, ckpt_path=ckpt, data=OneBatch())
    assert spy.lrs == spy_full.lrs[4:] == [(1e-3, 0.02), (1e-3, 0.04), (1e-3, 0.04), (1e-3, 0.04)]
    assert spy.moved == spy_full.moved[4:]
    for k, v in full.lightning_module.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, msg=k)


def test_test_table_and_metric_names(tmp_path, capsys):
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path)
    (result,) = trainer.test(module(), datamodule=TinyData(), verbose=False)
    expected = {"test/acc_scale1", "test/acc_scale2", "test/acc_scale3", "test/acc_fused",
                "test/acc_scale1+2", "test/acc_scale1+2+3", "test/apn_iou_scale2", "test/apn_iou_scale3",
                "test/ranked_scale2", "test/ranked_scale3"}
    assert expected <= set(result)
    assert all(0.0 <= v <= 1.0 for v in result.values())


@pytest.mark.parametrize("kwargs,match", [
    ({"k": 0.0}, "k .* must be > 0"),
    ({"k": float("inf")}, "k .* must be > 0 and finite"),
    ({"k": float("nan")}, "k .* must be > 0 and finite"),
    ({"min_side_fraction": 1.0}, "min_side_fraction must be in \\(0, 1\\)"),
    ({"min_side_fraction": 0.0}, "min_side_fraction must be in \\(0, 1\\)"),
    ({"num_scales": 1, "input_sizes": [64]}, "num_scales must be >= 2"),
    ({"input_sizes": [64, 32]}, "input_sizes must list one"),
    ({"backbone": "alexnet"}, "unknown backbone"),
    ({"margin": -0.1}, "margin must be >= 0"),
    ({"margin": float("nan")}, "margin must be >= 0 and finite"),
    ({"margin": float("inf")}, "margin must be >= 0 and finite"),
    ({"phase_unit": "hours"}, "phase_unit"),
    ({"cls_length": 0}, "cls_length and rank_length must be >= 1"),
    ({"apn_pretrain_side": 0.0}, "apn_pretrain_side must be in"),
    ({"rank_lr_factor": -0.1}, "rank_lr_factor must be in \\[0, 1\\]"),
    ({"rank_lr_factor": 1.5}, "rank_lr_factor must be in \\[0, 1\\]"),
    ({"lr_decay": "step"}, "lr_decay must be null or 'cosine'"),
    ({"warmup_steps": -1}, "warmup_steps must be >= 0"),
    ({"reanchor_steps": -1}, "reanchor_steps must be >= 0"),
    ({"pretrain_target": "mean"}, "pretrain_target must be"),
    ({"pretrain_power": 0.0}, "pretrain_power must be > 0"),
    ({"pretrain_features": "stride4"}, "pretrain_features must be null or one of"),
    ({"warmup_boxes": "grid"}, "warmup_boxes must be"),
    ({"box_jitter": 1.5}, "box_jitter must be in"),
    ({"crop": "grid"}, "crop must be one of"),
])
def test_invalid_config_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        module(**kwargs)


def test_weights_from_the_hub_cache_and_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(RuntimeError, match="resnet18-f37072fd.pth.*weights: null"):
        build_trunk("resnet18", "DEFAULT")  # no cached file, no network here
    import torchvision
    reference = torchvision.models.resnet18()
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(reference.state_dict(), cache / "resnet18-f37072fd.pth")
    trunk = build_trunk("resnet18", "IMAGENET1K_V1")
    torch.testing.assert_close(trunk.features[0].weight, reference.conv1.weight)
    assert os.path.exists(cache / "resnet18-f37072fd.pth")
    with pytest.raises(ValueError, match="has no weights"):
        build_trunk("resnet18", "IMAGENET9K")
    with pytest.raises(ValueError, match="'small_vgg_bn' has no pretrained weights.*weights: null"):
        build_trunk("small_vgg_bn", "DEFAULT")
    with pytest.raises(ValueError, match="unknown backbone 'vgg7'.*small_vgg_bn"):
        build_trunk("vgg7")


def test_rank_phase_leaves_batchnorm_statistics_alone():
    pl.seed_everything(0)
    m = module(apn_pretrain_steps=0)
    bn = next(mod for mod in m.net.trunks.modules() if isinstance(mod, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    out = m._frozen_forward(torch.rand(4, 3, 64, 64), targets_only=False)
    assert torch.equal(bn.running_mean, before) and m.net.trunks.training
    assert out.boxes[0].requires_grad  # the ranking loss still reaches the APNs



def graph_leaves(loss: Tensor) -> set[int]:
    """ids of the leaf tensors (parameters) the loss's autograd graph reaches."""
    seen, stack, leaves = set(), [loss.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if hasattr(node, "variable"):  # AccumulateGrad
            leaves.add(id(node.variable))
        stack.extend(next_fn for next_fn, _ in node.next_functions)
    return leaves


@pytest.mark.parametrize("phase", ["pretrain", "rank", "cls"])
def test_each_phase_builds_a_graph_over_its_own_parameters_only(phase, tmp_path):
    """The phase's optimiser is toggled before the forward: an APN phase's graph holds no trunk
    or classifier weight (the backward computes none of their gradients and does not go
    through scale 1's trunk at all), a classification step's none of the APNs'."""
    pl.seed_everything(0)
    m = only(module(), phase)
    graphs = []
    m.manual_backward = lambda loss: (graphs.append(graph_leaves(loss)), loss.backward())
    pl.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_progress_bar=False,
               enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path,
               limit_val_batches=0).fit(m, datamodule=TinyData())
    apn = {id(p) for p in m.net.apns.parameters()}
    assert graphs and graphs[0]
    if phase == "cls":
        assert not graphs[0] & apn
    else:
        assert graphs[0] <= apn
    assert all(p.requires_grad for p in m.parameters())  # untoggled after the step


DDP_SCRIPT = """
import sys
import pytorch_lightning as pl, torch
sys.path.insert(0, {tests!r})
from test_racnn_model import TinyData, module

class Steps(pl.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        print("TRAINING STEP", flush=True)

if __name__ == "__main__":
    torch.set_num_threads(1)
    pl.seed_everything(0)
    m = module(num_scales=2, input_sizes=[64, 64])
    t = pl.Trainer(max_steps=6, accelerator="cpu", devices={devices}, strategy={strategy!r}, logger=False,
                   enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                   num_sanity_val_steps=0, limit_val_batches=1, callbacks=[Steps()])
    t.fit(m, datamodule=TinyData())
    weights = [float(sum(p.double().sum() for p in part.parameters())) for part in (m.net.apns, m.net.trunks)]
    with open(f"rank{{t.global_rank}}.txt", "w") as out:  # a file each: the ranks share stdout
        out.write(f"step {{t.global_step}} phase {{m.schedule.at(t.global_step).name}} weights {{weights}}")
"""


def run_ddp(tmp_path, strategy: str, devices: int):
    import subprocess
    import sys
    script = tmp_path / "ddp_fit.py"
    script.write_text(DDP_SCRIPT.format(tests=os.path.dirname(os.path.abspath(__file__)), strategy=strategy,
                                        devices=devices))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # this checkout's raccn
    return subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, check=False,
                          timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled",
                                            "PYTHONPATH": root})


def test_ddp_trains_every_phase_with_find_unused_parameters(tmp_path):
    """Two CPU processes (gloo) through pre-training, classification and ranking steps: each
    phase leaves the other's parameters without gradients, which DDP accepts with
    find_unused_parameters; both ranks end with the same weights."""
    r = run_ddp(tmp_path, "ddp_find_unused_parameters_true", 2)
    assert r.returncode == 0, r.stderr[-3000:]
    ranks = [(tmp_path / f"rank{rank}.txt").read_text() for rank in (0, 1)]
    assert ranks[0] == ranks[1] and ranks[0].startswith("step 6 phase rank ")  # pretrain, cls, cls, rank, cls, cls


@pytest.mark.parametrize("strategy", ["ddp", "ddp_find_unused_parameters_false"])
def test_ddp_without_find_unused_parameters_is_refused_before_training(strategy, tmp_path):
    r = run_ddp(tmp_path, strategy, 1)
    assert r.returncode != 0
    assert "use --trainer.strategy ddp_find_unused_parameters_true" in r.stderr
    assert "TRAINING STEP" not in r.stdout


def peaked_map() -> Tensor:
    """Tensor[1, 2, 4, 4]: peak 1 at cell (row 1, col 3) of 16-px cells on a 64-px input, 0.5 at
    (row 1, col 2)."""
    f = torch.zeros(1, 2, 4, 4)
    f[0, :, 1, 3] = 1.0
    f[0, :, 1, 2] = 0.5
    return f


@pytest.mark.parametrize("target,power,expected_cx", [
    ("peak", 2.0, 56.0),
    ("centroid", 2.0, (56.0 + 0.25 * 40.0) / 1.25),  # weights (excess over the minimum)^2
    ("centroid", 4.0, (56.0 + 0.0625 * 40.0) / 1.0625),
])
def test_pretrain_targets(target, power, expected_cx):
    m = module(pretrain_target=target, apn_pretrain_side=0.25, pretrain_power=power)
    f = peaked_map()
    out = m.net(torch.rand(1, 3, 64, 64))._replace(features=[f, f, f])
    (cx, cy, tl), _ = [t[0].tolist() for t in m.pretrain_targets(out)]
    assert tl == 8.0  # 0.5 * 0.25 * 64; the centre stays inside [8, 56]
    assert (cx, cy) == pytest.approx((expected_cx, 24.0), abs=1e-4)


def test_pretrain_squares_on_a_map():
    from raccn.losses import pretrain_squares
    f = peaked_map().sum(1)  # (1, 4, 4): 2 at cell (1, 3), 1 at (1, 2)
    assert pretrain_squares(f, 64, 0.25).tolist() == [[56.0, 24.0, 8.0]]  # the peak cell's centre
    assert pretrain_squares(f, 64, 1.0).tolist() == [[32.0, 32.0, 32.0]]  # moved inside: the whole input
    (cx, cy, _), = pretrain_squares(f, 64, 0.25, "centroid", 1.0).tolist()
    assert (cx, cy) == pytest.approx(((2 * 56.0 + 40.0) / 3, 24.0), abs=1e-4)
    with pytest.raises(ValueError, match="centre must be one of"):
        pretrain_squares(f, 64, centre="mean")


def test_pretrain_targets_read_the_configured_map(monkeypatch):
    m = module(pretrain_target="centroid", apn_pretrain_side=0.25, pretrain_features="stride8")
    x = torch.rand(2, 3, 64, 64)
    out = m.net(x)
    # trunk_map: the trunk's own maps at each named stride
    last = m.net.trunks[0](out.inputs[0])
    assert torch.equal(m.net.trunk_map(0, out.inputs[0], "last"), last)
    assert m.net.trunk_map(0, out.inputs[0], "stride8").shape[-1] == 64 // 8
    # the real targets: read in eval mode, batch-norm statistics untouched, train mode after
    bn = next(mod for mod in m.net.trunks.modules() if isinstance(mod, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    m.pretrain_targets(out)
    assert torch.equal(bn.running_mean, before) and m.net.trunks.training
    seen = []

    def fake_map(s, inputs, features):
        seen.append((s, features, inputs.requires_grad))
        return peaked_map().expand(inputs.shape[0], -1, -1, -1)

    monkeypatch.setattr(m.net, "trunk_map", fake_map)
    (cx, cy, _), _ = [t[0].tolist() for t in m.pretrain_targets(out)]
    assert seen == [(0, "stride8", False), (1, "stride8", False)]
    assert (cx, cy) == pytest.approx(((56.0 + 0.25 * 40.0) / 1.25, 24.0), abs=1e-4)


def learning_rates_per_step(m, optimizer: int, tmp_path, steps: int = 4) -> list[float]:
    """Fit ``m`` on TinyData for ``steps`` steps; the learning rate each step runs with, of
    optimiser ``optimizer`` (0: classification, 1: APN)."""
    _, spy = fit(m, tmp_path, steps, enable_checkpointing=False)
    return [lrs[optimizer] for lrs in spy.lrs]


def test_rank_lr_factor_scales_only_ranking_steps(tmp_path):
    pl.seed_everything(0)
    m = module(rank_lr_factor=0.25, apn_optimizer=lambda p: torch.optim.SGD(p, lr=0.4))
    # pretrain, cls, cls, rank: the APN optimiser runs at 0.4 for pre-training, 0.1 for ranking
    assert learning_rates_per_step(m, 1, tmp_path) == pytest.approx([0.4, 0.4, 0.4, 0.1])


def test_rank_lr_factor_zero_ranks_without_moving_the_apns(tmp_path):
    """Ranking off: the ranking steps log their loss but leave the APNs and the APN optimiser's
    state as pre-training left them; the other phases train as usual."""
    pl.seed_everything(0)
    m = module(rank_lr_factor=0.0, apn_pretrain_steps=1, cls_length=1, rank_length=2)
    logged, apn = [], []

    def log(name, value, **kwargs):
        logged.append(name)

    class APNState(pl.Callback):  # before the first ranking step and after the last
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 2:
                apn.append(snapshot(trainer))

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == 4:
                apn.append(snapshot(trainer))

    def snapshot(trainer):
        adam = trainer.optimizers[1].state_dict()["state"]
        return [v.clone() for v in m.net.apns.state_dict().values()] + [
            v.clone() for state in adam.values() for v in state.values()]

    m.log = log
    _, spy = fit(m, tmp_path, 5, enable_checkpointing=False, callbacks=[APNState()])
    assert spy.moved == ["apns", "classifiers/fuse/trunks", "", "", "classifiers/fuse/trunks"]
    assert len(apn) == 2 and all(torch.equal(a, b) for a, b in zip(*apn))
    assert logged.count("train/loss_rank") == 2


def test_cam_pretrain_target_follows_the_true_class():
    """The CAM target sits on the cell that votes for the true class, not on the strongest
    response: two cells respond, each through a channel that only one class weighs."""
    m = module(pretrain_target="cam", apn_pretrain_side=0.25)
    C = m.net.classifiers[0].in_features
    f = torch.zeros(2, C, 4, 4)
    f[:, 0, 1, 3] = 2.0  # channel 0 (class 0) at row 1, col 3: the strongest response
    f[:, 1, 2, 0] = 1.0  # channel 1 (class 1) at row 2, col 0
    with torch.no_grad():
        m.net.classifiers[0].weight.zero_()
        m.net.classifiers[0].weight[0, 0] = 1.0
        m.net.classifiers[0].weight[1, 1] = 1.0
    out = m.net(torch.rand(2, 3, 64, 64))._replace(features=[f, f, f])
    (boxes, _) = m.pretrain_targets(out, torch.tensor([0, 1]))
    assert boxes[0, :2].tolist() == pytest.approx([56.0, 24.0], abs=1e-3)  # cell (1, 3)
    assert boxes[1, :2].tolist() == pytest.approx([8.0, 40.0], abs=1e-3)  # cell (2, 0), moved inside
    empty = m.pretrain_targets(out._replace(features=[torch.zeros_like(f)] * 3), torch.tensor([0, 1]))[0]
    assert empty[:, :2].flatten().tolist() == pytest.approx([32.0] * 4)  # no evidence: the centre


def test_training_crops_random_warmup_and_jitter_stay_within_the_apn_bounds():
    torch.manual_seed(0)
    m = module(warmup_boxes="random", box_jitter=0.2)
    L, f = 64, m.net.min_side_fraction
    apn_box = torch.tensor([[32.0, 32.0, 20.0]]).repeat(2000, 1)
    for phase in ("warmup", "cls"):
        boxes = m._training_crops(phase, None)(0, apn_box, L)
        tx, ty, tl = boxes.unbind(1)
        assert (tl >= 0.5 * f * L - 1e-4).all() and (tl <= 0.5 * L + 1e-4).all()
        assert (tx - tl >= -1e-4).all() and (tx + tl <= L + 1e-4).all()
        assert (ty - tl >= -1e-4).all() and (ty + tl <= L + 1e-4).all()
        assert boxes.std(0).min() > 1.0  # they do vary
    random_tl = m._training_crops("warmup", None)(0, apn_box, L)[:, 2]
    assert random_tl.min() < 0.5 * f * L + 1 and random_tl.max() > 0.5 * L - 1  # the whole range
    assert module()._training_crops("cls", None) is None  # default: the APN's boxes


def test_cosine_lr_decay_reaches_zero_at_the_end(tmp_path):
    pl.seed_everything(0)
    m = module(lr_decay="cosine", apn_pretrain_steps=0, cls_optimizer=lambda p: torch.optim.SGD(p, lr=0.2))
    seen = learning_rates_per_step(m, 0, tmp_path)
    # steps 0..3 of 4 (the first is a cls step with factor 1)
    assert seen[0] == pytest.approx(0.2)
    assert seen[1] == pytest.approx(0.2 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert seen == sorted(seen, reverse=True)


def test_larger_images_scale1_sees_an_area_view_and_scale2_is_cut_from_full_resolution():
    """input_sizes[0] < image side: scale 1 reads the images area-averaged to its size, the
    APN's box is scaled to the images' pixels and scale 2 is cut from the full-resolution images
    (fine detail that the view averages away reaches scale 2)."""
    from raccn.ops import zoom

    torch.manual_seed(0)
    net = RACNN(5, backbone="resnet18", weights=None, num_scales=2, input_sizes=[32, 48]).eval()
    images = torch.zeros(2, 3, 64, 64)
    images[:, :, ::2] = 1.0  # stripes of period 2 px: a flat 0.5 in the 2x area view
    with torch.no_grad():
        out = net(images)
        torch.testing.assert_close(out.inputs[0], F.avg_pool2d(images, 2))
        assert out.inputs[0].std() < 1e-6 and out.view_scale == 2.0
        box = out.boxes[0]
        torch.testing.assert_close(out.inputs[1], zoom(images, box * 2.0, 48, k=net.k))
        assert out.inputs[1].std() > 0.2  # the stripes survive in the crop
    (image_box,) = RACNNLitModule(net).image_boxes(out)
    torch.testing.assert_close(image_box, box * 2.0)  # in the images' pixels
    with pytest.raises(ValueError, match="input_sizes\\[0\\]"):
        net(torch.zeros(1, 3, 16, 16))


def test_small_vgg_bn_is_small_and_its_maps_sit_at_their_strides():
    trunk = build_trunk("small_vgg_bn")
    assert sum(p.numel() for p in trunk.features.parameters()) == 1_173_216
    assert trunk.features(torch.rand(2, 3, 72, 72)).shape == (2, 256, 5, 5)  # ceil pools: 36, 18, 9, 5
    assert trunk.features[: trunk.taps[8][0]](torch.rand(2, 3, 72, 72)).shape == (2, 128, 9, 9)


def two_scales(**kw):
    return module(num_scales=2, input_sizes=[64, 32], apn_pretrain_side=0.5, **kw).eval()


@pytest.mark.parametrize("mode", ["centre", "random", "heuristic"])
def test_ablation_boxes_crop_and_are_scored(mode):
    """``crop`` other than "apn" crops scale 2 with squares of side ``apn_pretrain_side`` (the
    centre, a random place, the pre-training target), and those squares are what is scored."""
    m = two_scales(crop=mode)
    images = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = m._evaluation_forward(images)
        box = out.boxes[0]
        torch.testing.assert_close(box[:, 2], torch.full((4,), 16.0))  # side 0.5 x 64
        if mode == "centre":
            torch.testing.assert_close(box[:, :2], torch.full((4, 2), 32.0))
        elif mode == "heuristic":
            expected = m.pretrain_targets(m.net(images, boxes_only=True))[0]
            torch.testing.assert_close(box, expected)
        else:
            assert (box[:, :2] >= 16).all() and (box[:, :2] <= 48).all() and box[:, 0].unique().numel() == 4
        crop = m.net(images, crop_boxes=lambda s, b, L: box).inputs[1]
    torch.testing.assert_close(out.inputs[1], crop)  # the scored squares are those that cropped
    apn = two_scales()
    apn.load_state_dict(m.state_dict())
    with torch.no_grad():
        assert not torch.allclose(apn._evaluation_forward(images).boxes[0], box)


def test_ranked_metric_counts_the_hinge_met():
    """``ranked_scale2``: the fraction of images where p_t(2) >= p_t(1) + margin, checked against
    a computation from the two scales' logits."""
    m = two_scales(margin=0.05)
    images, target = torch.rand(8, 3, 64, 64), torch.randint(0, 5, (8,))
    with torch.no_grad():
        m._evaluate((images, target), "test")
        logits = m.net(images).logits
    p = [z.softmax(-1)[torch.arange(8), target] for z in logits]
    expected = (p[1] >= p[0] + 0.05).float().mean()
    torch.testing.assert_close(m.metrics["test"]["ranked_scale2"].compute(), expected)
