"""build_trunk(..., attention=name): each block lands where its paper puts it, the trunk's output
shape, taps and channels stay, the parameters added are the blocks', and blocks that start as
the identity leave a trunk's output unchanged."""

from pathlib import Path

import pytest
import torch
from timm.layers import NonLocalAttn, SEModule
from torch import nn
from torchvision.models.resnet import BasicBlock

from raccn.layers import (
    ATTENTION,
    AugmentedConv2d,
    CrissCrossAttention,
    LocalSelfAttention2d,
    ResidualAttention,
    build_attention,
)
from raccn.models.backbones import build_trunk

SMALL = {  # keep the blocks cheap on CPU
    "aa_conv": {"heads": 2, "max_size": 32}, "sasa": {"heads": 2, "kernel_size": 3},
    "residual_attention": {"p": 0, "t": 1},
}
ROOT = Path(__file__).resolve().parents[1]
SIZE = 64  # resnet18: 16x16 after the stem, 2x2 at the end; small_vgg_bn: 4x4 at the end


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("backbone", ["resnet18", "small_vgg_bn"])
@pytest.mark.parametrize("name", sorted(ATTENTION))
def test_trunk_with_attention_keeps_its_output_shape_and_taps(backbone, name):
    torch.manual_seed(0)
    plain = build_trunk(backbone)
    trunk = build_trunk(backbone, attention=name, attention_args=SMALL.get(name))
    assert (trunk.channels, trunk.stride, trunk.taps) == (plain.channels, plain.stride, plain.taps)
    assert len(trunk.features) == len(plain.features)
    x = torch.randn(2, 3, SIZE, SIZE)
    for n, c in trunk.taps.values():
        assert trunk.features[:n](x).shape == plain.features[:n](x).shape
        assert trunk.features[:n](x).shape[1] == c
    assert n_params(trunk.features) != n_params(plain.features)


def test_se_sits_in_every_residual_block_before_the_addition():
    plain, trunk = build_trunk("resnet18"), build_trunk("resnet18", attention="se")
    blocks = [m for m in trunk.features.modules() if hasattr(m, "downsample")]
    assert len(blocks) == 8
    widths = [b.bn2[0].num_features for b in blocks]
    assert all(isinstance(b.bn2[1], SEModule) for b in blocks)
    assert widths == [64, 64, 128, 128, 256, 256, 512, 512]
    added = sum(n_params(build_attention("se", c)) for c in widths)
    assert n_params(trunk.features) - n_params(plain.features) == added


def test_non_local_sits_in_res4_before_its_last_block():
    trunk = build_trunk("resnet18", attention="non_local")
    layer3 = trunk.features[6]
    assert len(layer3) == 3 and isinstance(layer3[1], NonLocalAttn) and layer3[1].z.out_channels == 256


def test_ccnet_follows_the_last_stage_and_residual_attention_the_others():
    trunk = build_trunk("resnet18", attention="ccnet")
    assert isinstance(trunk.features[7][1], CrissCrossAttention)
    assert trunk.features[7][1].value.out_channels == 512
    trunk = build_trunk("small_vgg_bn", attention="residual_attention")
    modules = [m for m in trunk.features.modules() if isinstance(m, ResidualAttention)]
    depths = []
    for m in modules:
        hourglass, depth = m.mask[0], 0
        while hourglass is not None:
            hourglass, depth = hourglass.inner, depth + 1
        depths.append(depth)
    assert depths == [3, 2, 1]  # the paper's three stages


@pytest.mark.parametrize("name, cls", [("aa_conv", AugmentedConv2d), ("sasa", LocalSelfAttention2d)])
def test_conv3x3_blocks_replace_every_3x3_convolution_but_the_stem(name, cls):
    trunk = build_trunk("resnet18", attention=name, attention_args=SMALL[name])
    blocks = [m for m in trunk.features.modules() if isinstance(m, BasicBlock)]
    assert all(isinstance(b.conv1, cls) and isinstance(b.conv2, cls) for b in blocks)
    assert sum(isinstance(m, cls) for m in trunk.features.modules()) == 16
    assert [b.conv1.stride for b in blocks] == [1, 1, 2, 1, 2, 1, 2, 1]
    assert isinstance(trunk.features[0], nn.Conv2d)  # the 7x7 stem stays
    vgg = build_trunk("small_vgg_bn", attention=name, attention_args=SMALL[name])
    assert isinstance(vgg.features[0], nn.Conv2d)  # the stem on RGB stays a convolution
    assert sum(isinstance(m, cls) for m in vgg.features.modules()) == 7


def test_se_follows_every_stage_of_a_vgg_trunk():
    trunk = build_trunk("small_vgg_bn", attention="se")
    wrapped = [m[1] for m in trunk.features if isinstance(m, nn.Sequential)]
    assert [m.fc2.out_channels for m in wrapped] == [32, 64, 128, 256]
    assert all(isinstance(m, SEModule) for m in wrapped)


@pytest.mark.parametrize("name", ["non_local", "danet", "ccnet"])
def test_identity_at_init_blocks_leave_a_trunk_unchanged(name):
    torch.manual_seed(0)
    plain = build_trunk("resnet18").features.eval()
    trunk = build_trunk("resnet18", attention=name).features.eval()
    missing = trunk.load_state_dict(
        {_with_attention(k, name): v for k, v in plain.state_dict().items()}, strict=False)
    assert not missing.unexpected_keys
    assert missing.missing_keys and all(k.startswith(('6.1.', '7.1.')) for k in missing.missing_keys)
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(trunk(x), plain(x))


def _with_attention(key: str, name: str) -> str:
    """The plain resnet18 key in the trunk with ``name`` inserted."""
    if name == "non_local" and key.startswith("6.1."):
        return "6.2." + key[4:]  # the block moved one place down in layer3
    if name in ("danet", "ccnet") and key.startswith("7."):
        return "7.0." + key[2:]  # layer4 wrapped
    return key


@pytest.mark.parametrize("name", sorted(ATTENTION))
def test_gradients_reach_the_inserted_blocks(name):
    torch.manual_seed(0)
    plain = build_trunk("small_vgg_bn").features
    trunk = build_trunk("small_vgg_bn", attention=name, attention_args=SMALL.get(name)).features
    base = {n for n, _ in plain.named_parameters()}  # VGG blocks wrap a ReLU: names stay
    trunk(torch.randn(2, 3, 32, 32)).square().mean().backward()
    added = [(n, p) for n, p in trunk.named_parameters() if n not in base]
    assert added and all(p.grad is not None for _, p in added)
    assert sum(p.grad.abs().sum() for _, p in added) > 0


def test_unknown_attention_names_the_choices():
    with pytest.raises(ValueError, match="choose one of"):
        build_trunk("resnet18", attention="senet")


def test_racnn_config_inserts_a_block_by_name(tmp_path):
    """The RA-CNN quick start with one command-line option gets SE in its trunks (and null
    gives the paper's plain trunks)."""
    from raccn.cli import main

    config = str(ROOT / "configs" / "racnn_quickstart.yaml")
    common = ["--config", config, "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path)]
    net = main([*common, "--model.init_args.net.init_args.attention=se",
                '--model.init_args.net.init_args.attention_args={"reduction": 8}'], run=False).model.net
    se = [m for m in net.trunks.modules() if isinstance(m, SEModule)]
    assert len(se) == 4 * len(net.trunks) and se[0].fc1.out_channels == 32 // 8
    plain = main([*common, "--model.init_args.net.init_args.attention=null"], run=False).model.net
    assert not [m for m in plain.trunks.modules() if isinstance(m, SEModule)]
    x = torch.rand(2, 3, net.input_sizes[0], net.input_sizes[0])
    out, ref = net.eval()(x), plain.eval()(x)
    assert [t.shape for t in out.logits] == [t.shape for t in ref.logits]
    assert [f.shape for f in out.features] == [f.shape for f in ref.features]


def test_stride16_placement_needs_a_stage_end():
    from raccn.models.trunk_attention import add_attention

    features = build_trunk("small_vgg_bn").features
    with pytest.raises(ValueError, match="does not end a stage"):
        add_attention(features, 2, "non_local")  # features[1] is a BatchNorm inside block 1
