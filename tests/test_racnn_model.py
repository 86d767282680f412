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

from raccn.lit import RACNNLitModule
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


@pytest.mark.parametrize("name", ["vgg19", "resnet50", "resnet18", "resnet18_os16", "mobilenet_v3_small",
                                  "mobilenet_v3_small_os16", "small_vgg_bn"])
def test_backbone_taps_give_the_map_at_their_stride(name):
    trunk = build_trunk(name)
    x = torch.rand(1, 3, 64, 64)
    assert trunk.features(x).shape == (1, trunk.channels, 64 // trunk.stride, 64 // trunk.stride)
    assert 16 in trunk.taps and 8 in trunk.taps
    for stride, (n, channels) in trunk.taps.items():
        assert trunk.features[:n](x).shape == (1, channels, 64 // stride, 64 // stride)
        if n < len(trunk.features):  # the last map at that stride: the next module downsamples
            assert trunk.features[: n + 1](x).shape[-1] < 64 // stride or n + 1 == len(trunk.features)


def test_apn_reads_the_stride16_map_when_asked():
    torch.manual_seed(0)
    small = {**SMALL, "num_scales": 2, "input_sizes": [64, 64]}
    last, mid = RACNN(5, **small), RACNN(5, apn_features="stride16", **small)
    mid.trunks.load_state_dict(last.trunks.state_dict())  # same trunks; the APN input differs
    x = torch.rand(2, 3, 64, 64)
    a, b = last.eval()(x), mid.eval()(x)
    assert a.apn_features[0] is a.features[0] and a.features[0].shape == (2, 512, 2, 2)
    assert b.apn_features[0].shape == (2, 256, 4, 4)  # ResNet-18 layer3
    torch.testing.assert_close(b.apn_features[0], last.trunks[0][:7](x))
    torch.testing.assert_close(b.features[0], a.features[0])  # the classifier's map is unchanged
    assert mid.apns[0].fc1.in_features == 256 * 2 * 2
    assert RACNN(5, apn_features="stride8", **small)(x).apn_features[0].shape == (2, 128, 8, 8)  # layer2
    with pytest.raises(ValueError, match="apn_features must be one of"):
        RACNN(5, apn_features="layer3", **small)


def test_one_backbone_per_scale():
    net = RACNN(5, backbone=["resnet18_os16", "resnet18"], num_scales=2, input_sizes=[64, 64],
                apn_hidden=8, apn_pool=2)
    out = net(torch.rand(2, 3, 64, 64))
    assert [f.shape[-1] for f in out.features] == [4, 2]  # stride 16 where the APN reads, then 32
    assert out.apn_features[0].shape == (2, 512, 4, 4) and out.fused_logits.shape == (2, 5)
    assert net.fuse.in_features == 1024
    for bad in (["resnet18"], ["resnet18", "resnet18", "resnet18"]):
        with pytest.raises(ValueError, match="one name or one per scale"):
            RACNN(5, backbone=bad, num_scales=2, input_sizes=[64, 64])
    with pytest.raises(ValueError, match="one name with shared_trunk"):
        RACNN(5, backbone=["resnet18_os16", "resnet18"], num_scales=2, input_sizes=[64, 64], shared_trunk=True)


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


def module(**kw):
    args = {**SMALL, "num_classes": 5, "cls_length": 2, "rank_length": 1, "apn_pretrain_steps": 1}
    args.update(kw)
    return RACNNLitModule(**args)


def test_alternation_schedule_and_resume(tmp_path):
    pl.seed_everything(0)
    m = module()
    phases = []

    class Spy(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            phases.append(pl_module.phase)

    trainer = pl.Trainer(max_steps=6, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path, callbacks=[Spy()],
                         num_sanity_val_steps=0, limit_val_batches=1)
    trainer.fit(m, datamodule=TinyData())
    assert phases == ["pretrain", "cls", "cls", "rank", "cls", "cls"]
    warm, phases[:] = module(warmup_cls_steps=2), []
    pl.Trainer(max_steps=5, accelerator="cpu", logger=False, enable_progress_bar=False,
               enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path,
               callbacks=[Spy()], limit_val_batches=0).fit(warm, datamodule=TinyData())
    assert phases == ["warmup", "warmup", "pretrain", "cls", "cls"]
    anchored, phases[:] = module(reanchor_steps=2), []
    pl.Trainer(max_steps=8, accelerator="cpu", logger=False, enable_progress_bar=False,
               enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path,
               callbacks=[Spy()], limit_val_batches=0).fit(anchored, datamodule=TinyData())
    assert phases == ["pretrain", "cls", "cls", "reanchor", "reanchor", "rank", "cls", "cls"]
    ckpt = tmp_path / "mid.ckpt"
    trainer.save_checkpoint(ckpt)
    state = torch.load(ckpt, weights_only=False)
    assert state["racnn_phase"] == {"phase": "rank", "progress": 0}
    assert len(state["optimizer_states"]) == 2 and all(s["state"] for s in state["optimizer_states"])
    resumed = module()
    resumed.on_load_checkpoint(state)
    assert (resumed.phase, resumed.phase_progress) == ("rank", 0)


def test_test_table_and_metric_names(tmp_path, capsys):
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path)
    (result,) = trainer.test(module(), datamodule=TinyData(), verbose=False)
    expected = {"test/acc_scale1", "test/acc_scale2", "test/acc_scale3", "test/acc_fused",
                "test/acc_scale1+2", "test/acc_scale1+2+3", "test/apn_iou_scale2", "test/apn_iou_scale3"}
    assert expected <= set(result)
    assert all(0.0 <= v <= 1.0 for v in result.values())


@pytest.mark.parametrize("kwargs,match", [
    ({"k": 0.0}, "k .* must be > 0"),
    ({"margin": -0.1}, "margin must be >= 0"),
    ({"margin": float("nan")}, "margin must be >= 0 and finite"),
    ({"margin": float("inf")}, "margin must be >= 0 and finite"),
    ({"k": float("inf")}, "k .* must be > 0 and finite"),
    ({"k": float("nan")}, "k .* must be > 0 and finite"),
    ({"min_side_fraction": 1.0}, "min_side_fraction must be in \\(0, 1\\)"),
    ({"min_side_fraction": 0.0}, "min_side_fraction must be in \\(0, 1\\)"),
    ({"num_scales": 1, "input_sizes": [64]}, "num_scales must be >= 2"),
    ({"input_sizes": [64, 32]}, "input_sizes must list one"),
    ({"backbone": "alexnet"}, "unknown backbone"),
    ({"phase_unit": "hours"}, "phase_unit"),
    ({"warmup_cls_steps": -1}, "warmup_cls_steps must be >= 0"),
    ({"rank_lr_factor": 0.0}, "rank_lr_factor must be in"),
    ({"reanchor_steps": -1}, "reanchor_steps must be >= 0"),
    ({"apn_pretrain_target": "mean"}, "apn_pretrain_target must be"),
    ({"apn_pretrain_power": 0.0}, "apn_pretrain_power must be > 0"),
    ({"apn_pretrain_features": "stride4"}, "apn_pretrain_features must be null or one of"),
    ({"warmup_boxes": "grid"}, "warmup_boxes must be"),
    ({"cls_box_jitter": 1.5}, "cls_box_jitter must be in"),
    ({"lr_decay": "step"}, "lr_decay must be null or 'cosine'"),
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
    m.phase = "rank"
    bn = next(mod for mod in m.net.trunks.modules() if isinstance(mod, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    out = m._frozen_forward(torch.rand(4, 3, 64, 64))
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
    m = module(apn_pretrain_steps=0)
    m.phase = phase
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
if __name__ == "__main__":
    torch.set_num_threads(1)
    pl.seed_everything(0)
    m = module(num_scales=2, input_sizes=[64, 64])
    t = pl.Trainer(max_steps=6, accelerator="cpu", devices=2, strategy={strategy!r}, logger=False,
                   enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                   num_sanity_val_steps=0, limit_val_batches=1)
    t.fit(m, datamodule=TinyData())
    with open(f"rank{{t.global_rank}}.txt", "w") as out:  # a file each: the ranks share stdout
        out.write(f"RANK {{t.global_rank}} step {{t.global_step}} phase {{m.phase}}")
"""


def test_ddp_trains_every_phase_with_the_default_strategy(tmp_path):
    """Two CPU processes (gloo) through pre-training, classification and ranking steps with
    strategy='ddp': each phase leaves the other's parameters without gradients, which plain
    DDP rejects unless the module turns on find_unused_parameters."""
    import subprocess
    import sys
    script = tmp_path / "ddp_fit.py"
    script.write_text(DDP_SCRIPT.format(tests=os.path.dirname(os.path.abspath(__file__)), strategy="ddp"))
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, check=False,
                       timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert [(tmp_path / f"rank{rank}.txt").read_text() for rank in (0, 1)] == [
        "RANK 0 step 6 phase rank", "RANK 1 step 6 phase rank"]  # after pretrain, cls, cls, rank, cls, cls


def test_ddp_without_find_unused_parameters_is_refused_before_training(tmp_path):
    m = module()
    m.trainer = pl.Trainer(accelerator="cpu", devices=1, strategy="ddp_find_unused_parameters_false",
                           logger=False, default_root_dir=tmp_path)
    with pytest.raises(ValueError, match="ddp_find_unused_parameters_true"):
        m.setup("fit")
    m.trainer = pl.Trainer(accelerator="cpu", devices=1, strategy="ddp", logger=False, default_root_dir=tmp_path)
    m.setup("fit")
    assert m.trainer.strategy._ddp_kwargs["find_unused_parameters"] is True

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
    m = module(apn_pretrain_target=target, apn_pretrain_side=0.25, apn_pretrain_power=power)
    f = peaked_map()
    out = m.net(torch.rand(1, 3, 64, 64))._replace(apn_features=[f, f])
    (cx, cy, tl), _ = [t[0].tolist() for t in m.pretrain_targets(out)]
    assert tl == 8.0  # 0.5 * 0.25 * 64; the centre stays inside [8, 56]
    assert (cx, cy) == pytest.approx((expected_cx, 24.0), abs=1e-4)


def test_pretrain_targets_read_the_configured_map(monkeypatch):
    m = module(apn_pretrain_target="centroid", apn_pretrain_side=0.25, apn_pretrain_features="stride8")
    x = torch.rand(2, 3, 64, 64)
    out = m.net(x)
    # trunk_map: the trunk's own maps at each named stride
    last = m.net.run_trunk(0, out.inputs[0])[1]
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
    """Fit ``m`` on TinyData for ``steps`` steps; the learning rate of optimiser ``optimizer``
    (0: classification, 1: APN) after every step."""
    seen = []

    class Spy(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen.append(trainer.optimizers[optimizer].param_groups[0]["lr"])

    pl.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_progress_bar=False,
               enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path,
               callbacks=[Spy()], limit_val_batches=0).fit(m, datamodule=TinyData())
    return seen


def test_rank_lr_factor_scales_only_ranking_steps(tmp_path):
    pl.seed_everything(0)
    m = module(rank_lr_factor=0.25, apn_optimizer=lambda p: torch.optim.SGD(p, lr=0.4))
    seen = learning_rates_per_step(m, 1, tmp_path)
    # pretrain, cls, cls, rank: the APN optimiser runs at 0.4 for pre-training, 0.1 for ranking
    assert seen[0] == pytest.approx(0.4) and seen[-1] == pytest.approx(0.1)


def test_cam_pretrain_target_follows_the_true_class():
    """The CAM target sits on the cell that votes for the true class, not on the strongest
    response: two cells respond, each through a channel that only one class weighs."""
    m = module(apn_pretrain_target="cam", apn_pretrain_side=0.25)
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
    m = module(warmup_boxes="random", cls_box_jitter=0.2)
    L, f = 64, m.hparams.min_side_fraction
    apn_box = torch.tensor([[32.0, 32.0, 20.0]]).repeat(2000, 1)
    for phase in ("warmup", "cls"):
        boxes = m._training_crops(phase)(0, apn_box, L)
        tx, ty, tl = boxes.unbind(1)
        assert (tl >= 0.5 * f * L - 1e-4).all() and (tl <= 0.5 * L + 1e-4).all()
        assert (tx - tl >= -1e-4).all() and (tx + tl <= L + 1e-4).all()
        assert (ty - tl >= -1e-4).all() and (ty + tl <= L + 1e-4).all()
        assert boxes.std(0).min() > 1.0  # they do vary
    random_tl = m._training_crops("warmup")(0, apn_box, L)[:, 2]
    assert random_tl.min() < 0.5 * f * L + 1 and random_tl.max() > 0.5 * L - 1  # the whole range
    assert module()._training_crops("cls") is None  # default: the APN's boxes


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
    from raccn.lit import RACNNLitModule
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
    module = RACNNLitModule(num_classes=5, backbone="resnet18", weights=None, num_scales=2, input_sizes=[32, 48])
    (image_box,) = module.image_boxes(out)
    torch.testing.assert_close(image_box, box * 2.0)  # in the images' pixels
    with pytest.raises(ValueError, match="input_sizes\\[0\\]"):
        net(torch.zeros(1, 3, 16, 16))


def test_small_vgg_bn_is_small_and_its_maps_sit_at_their_strides():
    trunk = build_trunk("small_vgg_bn")
    assert sum(p.numel() for p in trunk.features.parameters()) == 1_173_216
    assert trunk.features(torch.rand(2, 3, 72, 72)).shape == (2, 256, 5, 5)  # ceil pools: 36, 18, 9, 5
    assert trunk.features[: trunk.taps[8][0]](torch.rand(2, 3, 72, 72)).shape == (2, 128, 9, 9)


def test_dilated_mobilenet_keeps_the_weights_layout_of_the_plain_one():
    plain, dilated = build_trunk("mobilenet_v3_small"), build_trunk("mobilenet_v3_small_os16")
    dilated.features.load_state_dict(plain.features.state_dict())  # ImageNet weights fit both
    x = torch.rand(1, 3, 64, 64)
    assert plain.features(x).shape[-1] == 2 and dilated.features(x).shape[-1] == 4
    torch.testing.assert_close(dilated.features[:4](x), plain.features[:4](x))  # same up to stride 8
