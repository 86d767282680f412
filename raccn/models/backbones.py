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
| ``timm:<model>`` | timm's ``features_only`` chain of modules up to its last feature map (``timm_trunk``) | from ``feature_info`` | the last reduction | the last feature map at reduction 16 | at reduction 8 |

``weights`` is a torchvision weights name (``"DEFAULT"``, ``"IMAGENET1K_V1"``, ...) or ``None``
(random initialisation). Weights are read from the torch hub cache
(``$TORCH_HOME/hub/checkpoints``) or downloaded; when neither works the error says which file to
put where. For ``timm:<model>`` it is ``"DEFAULT"`` or a timm pretrained tag (``"a1_in1k"``),
read from or downloaded to the same cache.

``attention`` (a name of ``raccn.layers.ATTENTION``) inserts a plug-in attention block where its
paper puts it (every residual block for SE/CBAM, res4 for non-local, after the last stage for
DANet/CCNet, replacing 3×3 convolutions for AA-Conv/SASA; see ``raccn.models.trunk_attention``);
not into timm trunks (their block types differ; timm has models with blocks built in, e.g.
``timm:seresnet33ts``).
"""

from __future__ import annotations

import os
import socket
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NamedTuple

import timm
import torch
from timm.layers import Format
from timm.models import FeatureDictNet, FeatureHookNet, get_pretrained_cfg, split_model_name_tag
from timm.models._features import FeatureGetterNet
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
    if name not in BACKBONES and name not in OWN_BACKBONES and not name.startswith(TIMM_PREFIX):
        raise ValueError(f"unknown backbone {name!r}: choose one of "
                         f"{sorted([*BACKBONES, *OWN_BACKBONES])} or {TIMM_PREFIX}<timm model>")


@contextmanager
def _network_timeout(seconds: float = 10.0) -> Iterator[None]:
    """Fail a stalled download after ``seconds`` instead of hanging (socket default timeout)."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _weights_error(what: str, name: str, url: str, target: str, err: Exception) -> RuntimeError:
    return RuntimeError(
        f"could not load the ImageNet weights {what} for backbone {name!r} ({type(err).__name__}: "
        f"{err}). Download {url} and save it as {target} (the torch hub cache; set "
        f"TORCH_HOME to move it), or set model.init_args.net.init_args.weights: null to train "
        f"from scratch."
    )


def _load_weights(name: str, weights: str) -> dict:
    try:
        enum = get_model_weights(name)[weights] if weights != "DEFAULT" else get_model_weights(name).DEFAULT
    except KeyError:
        names = ["DEFAULT"] + [w.name for w in get_model_weights(name)]
        raise ValueError(f"backbone {name!r} has no weights {weights!r}: use one of {names} or null") from None
    target = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(enum.url))
    try:
        with _network_timeout():
            return enum.get_state_dict(progress=False)
    except Exception as err:  # no network, proxy, corrupt cache...
        raise _weights_error(str(enum), name, enum.url, target, err) from err


TIMM_PREFIX = "timm:"


def _timm_pretrained_cfg(arch: str, tag: str | None, name: str):
    """timm's pretrained config of ``arch.tag`` (the default tag when ``tag`` is None)."""
    try:
        cfg = get_pretrained_cfg(arch if tag is None else f"{arch}.{tag}")
    except RuntimeError:  # "Invalid pretrained tag"
        cfg = None
    if cfg is None or not (cfg.url or cfg.hf_hub_id):
        tags = timm.list_pretrained(f"{arch}.*")
        raise ValueError(
            f"backbone {name!r} has no pretrained weights {tag or 'DEFAULT'!r}: use DEFAULT or one "
            f"of timm's tags {[t.split('.', 1)[1] for t in tags]}, or null"
            if tags else f"backbone {name!r} has no pretrained weights in timm: set "
            f"model.init_args.net.init_args.weights: null"
        )
    return cfg


def _timm_weights_file(name: str, arch: str, tag: str | None) -> tuple[str, str]:
    """``(tag, path)``: the checkpoint of ``arch.tag`` in the torch hub cache, downloaded there
    (from the Hugging Face hub, as timm, else timm's URL) when absent; the error names the file to put
    where. One file in one place, as for the torchvision trunks, instead of timm's retrying
    Hugging Face client (which takes about a minute to give up offline)."""
    cfg = _timm_pretrained_cfg(arch, tag, name)
    if cfg.hf_hub_id:  # where timm itself reads it from
        hub_file = cfg.hf_hub_filename or "model.safetensors"
        url = f"https://huggingface.co/{cfg.hf_hub_id}/resolve/main/{hub_file}"
        filename = f"{arch}.{cfg.tag}{os.path.splitext(hub_file)[1]}"
    else:
        url, filename = cfg.url, os.path.basename(cfg.url)
    target = os.path.join(torch.hub.get_dir(), "checkpoints", filename)
    if not os.path.isfile(target):
        try:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with _network_timeout():
                torch.hub.download_url_to_file(url, target, progress=False)
        except Exception as err:  # no network, proxy, read-only cache...
            raise _weights_error(f"{arch}.{cfg.tag}", name, url, target, err) from err
    return cfg.tag, target


def timm_trunk(name: str, weights: str | None = None) -> Trunk:
    """The trunk ``timm:<model>`` (``<model>`` any timm model whose features timm extracts as a
    chain of modules, e.g. ``resnet18``, ``efficientnet_b0``, ``convnext_atto``).

    ``timm.create_model(model, features_only=True)`` gives the model's modules up to its last
    feature map in execution order (``FeatureListNet``; for models with their own features class,
    e.g. EfficientNet, timm's ``feature_cls="list"`` alternative); they become
    ``Trunk.features`` and ``feature_info`` (module, channels, reduction of each feature map)
    gives ``taps``: for each stride the last map at that stride. ``weights``: None (random
    initialisation), ``"DEFAULT"`` (timm's default pretrained tag, or the one in the name,
    ``timm:resnet18.a1_in1k``) or a timm tag (``"a1_in1k"``); the checkpoint is read from the
    torch hub cache or downloaded there, and the error says which file to put where.
    """
    arch, tag = split_model_name_tag(name[len(TIMM_PREFIX):])
    tag = tag or None
    if not timm.is_model(arch):
        close = timm.list_models(f"*{arch}*")[:10]
        raise ValueError(f"unknown timm model {arch!r} in backbone {name!r}"
                         + (f": did you mean one of {close}?" if close else ""))
    if weights is not None and weights != "DEFAULT":
        if tag is not None and weights != tag:
            raise ValueError(f"backbone {name!r} names the weights {tag!r} but weights is "
                             f"{weights!r}: set weights: DEFAULT, or drop the tag from the name")
        tag = weights
    try:  # timm's own feature extractor, randomly initialised
        net = timm.create_model(arch, features_only=True)
    except Exception as err:
        raise ValueError(f"timm has no feature extractor for {arch!r} ({type(err).__name__}: {err}): "
                         f"pick a convolutional timm model (resnet*, efficientnet*, convnext*, regnet*)") from err
    if isinstance(net, (FeatureHookNet, FeatureGetterNet)):
        raise ValueError(  # noqa: TRY004 (a bad config value, not a bad argument type)
            f"timm extracts {arch!r}'s features with {type(net).__name__} (hooks or a getter), not "
            f"as a chain of modules RA-CNN can cut at a stride: pick a convolutional timm model "
            f"(resnet*, efficientnet*, mobilenetv3*, convnext*, regnet*)"
        )
    kwargs: dict = {}
    if not isinstance(net, FeatureDictNet):  # a model's own features class (efficientnet, ...):
        kwargs["feature_cfg"] = {"feature_cls": "list", "flatten_sequential": True}  # timm's chain
    if weights is not None:
        tag, path = _timm_weights_file(name, arch, tag)
        kwargs |= {"pretrained": True, "pretrained_cfg_overlay": {"file": path}}
    if kwargs:
        net = timm.create_model(arch if tag is None else f"{arch}.{tag}", features_only=True, **kwargs)
    if not isinstance(net, FeatureDictNet) or net.output_fmt != Format.NCHW:
        raise ValueError(f"timm gives {arch!r}'s features as {type(net).__name__} "
                         f"({net.output_fmt}), not a chain of NCHW maps: pick a convolutional timm model")
    info = net.feature_info
    by_index = {str(i): (c, r) for i, c, r in zip(info.out_indices, info.channels(), info.reduction())}
    names = list(net.keys())
    taps = {}
    for module_name, index in net.return_layers.items():
        channels, reduction = by_index[index]
        taps[reduction] = (names.index(module_name) + 1, channels)  # the last map at each stride
    features = nn.Sequential(OrderedDict(net.items()))
    channels, stride = info.channels()[-1], info.reduction()[-1]
    return Trunk(features, channels, stride, taps)


def build_trunk(
    name: str, weights: str | None = None, attention: str | None = None,
    attention_args: dict | None = None,
) -> Trunk:
    """Build the convolutional trunk ``name`` (see the table above) with optional weights, and
    optionally the attention block ``attention`` (a key of ``raccn.layers.ATTENTION``, built
    with ``attention_args``) inserted where its paper puts it (``raccn.models.trunk_attention``;
    after the weights are loaded)."""
    if name.startswith(TIMM_PREFIX):
        if attention is not None:
            raise ValueError(
                f"attention blocks are inserted into the torchvision and own trunks only, not "
                f"{name!r}: set attention: null, or pick a timm model with the block built in "
                f"(e.g. timm:seresnet33ts)"
            )
        return timm_trunk(name, weights)
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
