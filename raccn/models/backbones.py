"""CNN trunks for RA-CNN, chosen by name from config (one registry, no ``if`` chains).

Each entry builds a torchvision classifier and keeps its convolutional part (``small_vgg_bn``, for
CPU runs from scratch, is our own and has no pretrained weights): the trunk maps
``Tensor[B, 3, H, W]`` to the last conv feature map ``Tensor[B, C, H/s, W/s]``. ``taps`` maps
a stride r to ``(n, C_r)``: the first n modules of the trunk produce its last map at stride r,
``Tensor[B, C_r, H/r, W/r]`` (a finer map to read APN pre-training targets from,
``RACNNLitModule``'s ``extras.pretrain_features``).

| name | features kept | C | stride s | stride-16 map (C16) | stride-8 map (C8) |
| --- | --- | --- | --- | --- | --- |
| ``vgg19`` (paper) | conv1_1 .. conv5_4 + ReLU (last max-pool dropped) | 512 | 16 | the last (512) | conv4_4 (512) |
| ``resnet18`` | conv1 .. layer4 | 512 | 32 | layer3 (256) | layer2 (128) |
| ``small_vgg_bn`` | 4 blocks of two 3×3 conv + BN + ReLU, widths 32, 64, 128, 256, the first conv at stride 2, 2×2 max-pools (ceil) between blocks; ≈ 1.2 M parameters, for CPU runs from scratch | 256 | 16 | the last (256) | block 3 (128) |

``weights`` is a torchvision weights name (``"DEFAULT"``, ``"IMAGENET1K_V1"``, ...) or ``None``
(random initialisation). Weights are read from the torch hub cache
(``$TORCH_HOME/hub/checkpoints``) or downloaded; when neither works the error says which file to
put where.

``attention`` (a name of ``raccn.layers.ATTENTION``) inserts a plug-in attention block where its
paper puts it (every residual block for SE/CBAM, res4 for non-local, after the last stage for
DANet/CCNet, replacing 3×3 convolutions for AA-Conv/SASA; see ``raccn.models.trunk_attention``).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn
from torchvision.models import get_model, get_model_weights

from raccn.layers import ATTENTION
from raccn.models.trunk_attention import add_attention


class Trunk(NamedTuple):
    features: nn.Sequential  #: Tensor[B, 3, H, W] -> Tensor[B, C, h, w]
    channels: int  #: C
    stride: int  #: H / h
    taps: dict[int, tuple[int, int]]  #: stride r -> (n, C_r): features[:n] is the map at stride r


def _vgg(model: nn.Module) -> Trunk:
    layers = list(model.features.children())[:-1]
    return Trunk(nn.Sequential(*layers), 512, 16, {16: (len(layers), 512), 8: (27, 512)})


def _resnet18(model: nn.Module) -> Trunk:
    layers = [model.conv1, model.bn1, model.relu, model.maxpool,
              model.layer1, model.layer2, model.layer3, model.layer4]
    return Trunk(nn.Sequential(*layers), 512, 32, {32: (8, 512), 16: (7, 256), 8: (6, 128)})


BACKBONES: dict[str, Callable[[nn.Module], Trunk]] = {"vgg19": _vgg, "resnet18": _resnet18}


SMALL_VGG_WIDTHS = (32, 64, 128, 256)


def small_vgg_bn() -> Trunk:
    """The ``small_vgg_bn`` trunk (see the table above), randomly initialised."""
    layers: list[nn.Module] = []
    c_in, taps = 3, {}
    for i, c in enumerate(SMALL_VGG_WIDTHS):
        if i:
            taps[2 ** i] = (len(layers), c_in)  # the map before this pool is at stride 2^i
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
        for j in range(2):
            stride = 2 if i == j == 0 else 1
            layers += [nn.Conv2d(c_in, c, 3, stride, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
            c_in = c
    stride = 2 ** len(SMALL_VGG_WIDTHS)
    taps[stride] = (len(layers), c_in)
    return Trunk(nn.Sequential(*layers), c_in, stride, {r: taps[r] for r in (16, 8)})


OWN_BACKBONES: dict[str, Callable[[], Trunk]] = {"small_vgg_bn": small_vgg_bn}


def check_backbone(name: str) -> None:
    if name not in BACKBONES and name not in OWN_BACKBONES:
        raise ValueError(f"unknown backbone {name!r}: choose one of {sorted([*BACKBONES, *OWN_BACKBONES])}")


def _load_weights(name: str, weights: str) -> dict:
    try:
        enum = get_model_weights(name)[weights] if weights != "DEFAULT" else get_model_weights(name).DEFAULT
    except KeyError:
        names = ["DEFAULT"] + [w.name for w in get_model_weights(name)]
        raise ValueError(f"backbone {name!r} has no weights {weights!r}: use one of {names} or null") from None
    hub_dir = os.path.join(torch.hub.get_dir(), "checkpoints")
    target = os.path.join(hub_dir, os.path.basename(enum.url))
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(10)
    try:
        return enum.get_state_dict(progress=False)
    except Exception as err:  # no network, proxy, corrupt cache...
        raise RuntimeError(
            f"could not load the ImageNet weights {enum} for backbone {name!r} ({type(err).__name__}: "
            f"{err}). Download {enum.url} and save it as {target} (the torch hub cache; set "
            f"TORCH_HOME to move it), or set model.init_args.net.init_args.weights: null to train "
            f"from scratch."
        ) from err
    finally:
        socket.setdefaulttimeout(previous)


def build_trunk(
    name: str, weights: str | None = None, attention: str | None = None,
    attention_args: dict | None = None,
) -> Trunk:
    """Build the convolutional trunk ``name`` (see the table above) with optional weights, and
    optionally the attention block ``attention`` (a key of ``raccn.layers.ATTENTION``, built
    with ``attention_args``) inserted where its paper puts it (``raccn.models.trunk_attention``;
    after the weights are loaded)."""
    check_backbone(name)
    if attention is not None and attention not in ATTENTION:
        raise ValueError(f"unknown attention block {attention!r}: choose one of "
                         f"{sorted(ATTENTION)} or null")
    if name in OWN_BACKBONES:
        if weights is not None:
            raise ValueError(f"backbone {name!r} has no pretrained weights: set "
                             f"model.init_args.net.init_args.weights: null, or pick a torchvision "
                             f"backbone ({sorted(BACKBONES)}) for {weights!r}")
        trunk = OWN_BACKBONES[name]()
    else:
        model = get_model(name, weights=None)
        if weights is not None:
            model.load_state_dict(_load_weights(name, weights))
        trunk = BACKBONES[name](model)
    if attention is not None:
        add_attention(trunk.features, trunk.taps[16][0], attention, **(attention_args or {}))
    return trunk
