"""build_trunk("timm:<model>"): timm's feature extractor as a chain of modules whose taps give
the maps timm returns at their strides; pretrained weights read from the torch hub cache, and
offline an error naming the file to put where; RA-CNN on a timm trunk, also from the CLI."""

import os
import re
import socket

import pytest
import timm
import torch
from safetensors.torch import save_file

from raccn.models import RACNN
from raccn.models.backbones import build_trunk

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 64


def timm_maps(model, x):
    """timm's own features_only outputs, keyed by stride."""
    with torch.no_grad():
        maps = model(x)
    return dict(zip(model.feature_info.reduction(), maps))


@pytest.mark.parametrize("arch,expected", [
    # (C, stride, {stride: C_r}) as timm's feature_info documents them
    ("resnet18", (512, 32, {2: 64, 4: 64, 8: 128, 16: 256, 32: 512})),
    ("efficientnet_b0", (320, 32, {2: 16, 4: 24, 8: 40, 16: 112, 32: 320})),
])
def test_timm_trunk_taps_give_timms_maps_at_their_strides(arch, expected):
    torch.manual_seed(0)
    trunk = build_trunk(f"timm:{arch}")
    channels, stride, tap_channels = expected
    assert (trunk.channels, trunk.stride) == (channels, stride)
    assert {r: c for r, (_, c) in trunk.taps.items()} == tap_channels
    assert isinstance(trunk.features, torch.nn.Sequential)
    # timm's own extractor (FeatureListNet for resnet, EfficientNetFeatures for efficientnet)
    # with the same weights: module names differ only by timm's flattening ("blocks_3." vs "blocks.3.")
    reference = timm.create_model(arch, features_only=True).eval()
    state = {re.sub(r"^blocks_(\d+)\.", r"blocks.\1.", k): v for k, v in trunk.features.state_dict().items()}
    if not set(state) <= set(reference.state_dict()):
        state = trunk.features.state_dict()
    reference.load_state_dict(state)
    trunk.features.eval()
    x = torch.rand(2, 3, SIZE, SIZE)
    expected_maps = timm_maps(reference, x)
    with torch.no_grad():
        assert torch.equal(trunk.features(x), expected_maps[stride])
        for r, (n, c) in trunk.taps.items():
            out = trunk.features[:n](x)
            assert out.shape == (2, c, SIZE // r, SIZE // r)
            torch.testing.assert_close(out, expected_maps[r], rtol=0, atol=0)
    # the last map at each stride: the next module (if any) changes the resolution
    for r, (n, _) in trunk.taps.items():
        if n < len(trunk.features):
            assert trunk.features[: n + 1](x).shape[-1] < SIZE // r


def test_racnn_on_a_timm_trunk_forward_backward_and_maps():
    torch.manual_seed(0)
    net = RACNN(5, backbone="timm:resnet18", num_scales=2, input_sizes=[SIZE, 48], apn_hidden=16,
                apn_pool=2)
    x = torch.rand(2, 3, SIZE, SIZE)
    out = net(x)
    assert [f.shape for f in out.features] == [(2, 512, 2, 2), (2, 512, 2, 2)]
    assert out.fused_logits.shape == (2, 5) and out.inputs[1].shape == (2, 3, 48, 48)
    assert net.trunk_map(0, x, "stride16").shape == (2, 256, 4, 4)
    assert net.trunk_map(0, x, "stride8").shape == (2, 128, 8, 8)
    out.fused_logits.logsumexp(1).sum().backward()
    assert net.trunks[0][0].weight.grad.abs().max() > 0  # timm's stem conv is trained


def test_timm_weights_from_the_hub_cache_and_clear_error_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def no_network(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    target = tmp_path / "hub" / "checkpoints" / "resnet18.a1_in1k.safetensors"
    url = "https://huggingface.co/timm/resnet18.a1_in1k/resolve/main/model.safetensors"
    message = f"Download {url} and save it as {target}.*weights: null"
    with pytest.raises(RuntimeError, match=re.escape(url)) as info:
        build_trunk("timm:resnet18", "DEFAULT")  # timm's default tag
    assert re.search(message, str(info.value).replace("\n", " ")) and not target.exists()
    with pytest.raises(RuntimeError, match=re.escape(str(target))):
        build_trunk("timm:resnet18", "a1_in1k")  # the tag by name
    with pytest.raises(RuntimeError, match=re.escape(str(target))):
        build_trunk("timm:resnet18.a1_in1k", "DEFAULT")  # the tag in the model name
    # the file where the error said: read from there, no network needed
    torch.manual_seed(1)
    reference = timm.create_model("resnet18")
    save_file(reference.state_dict(), str(target))
    trunk = build_trunk("timm:resnet18", "DEFAULT")
    torch.testing.assert_close(trunk.features[0].weight, reference.conv1.weight)
    torch.testing.assert_close(trunk.features[7][1].conv2.weight, reference.layer4[1].conv2.weight)


@pytest.mark.parametrize("name,weights,attention,match", [
    ("timm:resnet17", None, None, "unknown timm model 'resnet17'"),
    ("timm:resnet18", "zz_in1k", None, "no pretrained weights 'zz_in1k'.*'a1_in1k'"),
    ("timm:resnet18.a1_in1k", "a2_in1k", None, "names the weights 'a1_in1k' but weights is 'a2_in1k'"),
    ("timm:vit_tiny_patch16_224", None, None, "FeatureGetterNet.*pick a convolutional timm model"),
    ("timm:resnet18", None, "se", "attention: null"),
    ("resnet17", None, None, "unknown backbone 'resnet17'.*timm:<timm model>"),
])
def test_timm_trunk_invalid_names(name, weights, attention, match):
    with pytest.raises(ValueError, match=match):
        build_trunk(name, weights, attention)


def test_cli_selects_a_timm_trunk(tmp_path):
    from raccn.cli import main

    cli = main(["--config", os.path.join(ROOT, "configs", "racnn_quickstart.yaml"), "--trainer.logger", "false",
                "--trainer.default_root_dir", str(tmp_path),
                "--model.init_args.net.init_args.backbone", "timm:efficientnet_b0"], run=False)
    net = cli.model.net
    assert net.taps[0][8][1] == 40 and net.taps[0]["last"][1] == 320  # stride-8 tap for pre-training targets
    assert net.classifiers[0].in_features == 320
