"""Insert a plug-in attention block (``raccn.layers``, by name) into a trunk where its paper puts it.

``PLACEMENT[name]`` of :mod:`raccn.layers` decides where; a "stage" is a ResNet layer
(``layer1`` .. ``layer4``) or, in the VGG trunks, the convolutions between two max-pools.

| placement | blocks | ResNet trunk | VGG trunks |
| --- | --- | --- | --- |
| ``residual`` | SE, CBAM | in every residual block, after the last BN of the residual branch, before the addition | after every stage |
| ``stride16`` | non-local | in the stride-16 stage (res4), before its last residual block | after the stride-16 stage |
| ``last`` | DANet, CCNet | after the last stage | after the last stage |
| ``stages`` | residual attention | after each stage but the last; the k-th module's mask down-samples ``S - 1 - k`` times (S stages; the paper's 3, 2, 1) | same |
| ``conv3x3`` | AA-Conv, SASA | replacing every 3×3 convolution (same in/out channels and stride) except one on the RGB input (the stem) | same |

The block wraps the module it follows (``m -> nn.Sequential(m, block)``), so the trunk's
top-level modules, hence its ``taps``, ``channels`` and ``stride``, are unchanged and pretrained
weights are loaded before the insertion. Blocks whose residual scale starts at zero (non-local,
DANet, CCNet) leave the trunk's output unchanged at initialisation.
"""

from __future__ import annotations

from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from raccn.layers import PLACEMENT, build_attention

__all__ = ["add_attention"]

_RESIDUAL = (BasicBlock, Bottleneck)


def _stage_ends(features: nn.Sequential) -> list[tuple[int, int]]:
    """``(index, channels)`` of the top-level module that ends each stage, in order."""
    children = list(features)
    if any(isinstance(m, nn.Sequential) and isinstance(m[-1], _RESIDUAL) for m in children):
        return [(i, _width(m)) for i, m in enumerate(children)
                if isinstance(m, nn.Sequential) and isinstance(m[-1], _RESIDUAL)]
    ends, channels = [], None
    for i, m in enumerate(children):
        if isinstance(m, nn.Conv2d):
            channels = m.out_channels
        before_pool = i + 1 < len(children) and isinstance(children[i + 1], nn.MaxPool2d)
        if channels is not None and (before_pool or i + 1 == len(children)):
            ends.append((i, channels))
    return ends


def _width(stage: nn.Sequential) -> int:
    block = stage[-1]
    return block.bn3.num_features if isinstance(block, Bottleneck) else block.bn2.num_features


def _wrap(features: nn.Sequential, index: int, block: nn.Module) -> None:
    features[index] = nn.Sequential(features[index], block)


def add_attention(features: nn.Sequential, stride16_index: int, name: str, **kwargs) -> int:
    """Insert the block ``name`` into ``features`` in place (see the table above).

    Args:
        features (nn.Sequential): a trunk of :mod:`raccn.models.backbones`.
        stride16_index (int): n of the trunk's stride-16 tap (``features[:n]`` is that map).
        name (str): a key of ``raccn.layers.ATTENTION``.
        **kwargs: passed to every block built.

    Returns:
        int: number of blocks inserted (or 3×3 convolutions replaced).
    """
    if name not in PLACEMENT:
        raise ValueError(f"unknown attention block {name!r}: choose one of {sorted(PLACEMENT)}")
    placement, ends = PLACEMENT[name], _stage_ends(features)
    residual = [m for m in features.modules() if isinstance(m, _RESIDUAL)]
    if placement == "residual" and residual:
        for b in residual:
            last = "bn3" if isinstance(b, Bottleneck) else "bn2"
            bn = getattr(b, last)
            setattr(b, last, nn.Sequential(bn, build_attention(name, bn.num_features, **kwargs)))
        return len(residual)
    if placement == "residual":
        for i, c in ends:
            _wrap(features, i, build_attention(name, c, **kwargs))
        return len(ends)
    if placement == "stride16":
        found = [(i, c) for i, c in ends if i == stride16_index - 1]
        if not found:
            raise ValueError(f"{name!r} goes after the stride-16 stage, but module "
                             f"{stride16_index - 1} of this trunk does not end a stage")
        (i, c), = found
        stage = features[i]
        block = build_attention(name, c, **kwargs)
        if isinstance(stage, nn.Sequential) and isinstance(stage[-1], _RESIDUAL):
            features[i] = nn.Sequential(*stage[:-1], block, stage[-1])  # before the last block
        else:
            _wrap(features, i, block)
        return 1
    if placement == "last":
        i, c = ends[-1]
        _wrap(features, i, build_attention(name, c, **kwargs))
        return 1
    if placement == "stages":
        for k, (i, c) in enumerate(ends[:-1]):
            depth = {"depth": len(ends) - 1 - k} if name == "residual_attention" else {}
            _wrap(features, i, build_attention(name, c, **(depth | kwargs)))
        return len(ends) - 1
    # conv3x3: replace in place, found through the parents
    count = 0
    for parent in list(features.modules()):
        for child_name, conv in list(parent.named_children()):
            if (isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3) and conv.groups == 1
                    and conv.dilation == (1, 1) and conv.in_channels != 3):
                setattr(parent, child_name, build_attention(
                    name, conv.in_channels, out_channels=conv.out_channels,
                    stride=conv.stride[0], **kwargs))
                count += 1
    return count
