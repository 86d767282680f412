"""The small ConvNets of DRAM (glimpse "what" pathway, context network): kernels 5, 3, 3, ...,
"same" padding, ReLU after each convolution."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


def is_positive_int(value) -> bool:
    """True for an ``int`` (not a ``bool``) ``>= 1``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def conv_stack(in_channels: int, channels: Sequence[int], stride: int, name: str) -> nn.Sequential:
    """``len(channels)`` convolutions, kernel 5 for the first and 3 for the rest, each with
    "same" padding (``k // 2``), the given ``stride`` and a ReLU.

    A map of side ``n`` comes out with side ``(n - 1) // stride + 1`` after each convolution.

    Args:
        in_channels: channels of the input.
        channels: output channels of each convolution, non-empty, all ``>= 1``; ``ValueError``
            naming ``name`` otherwise.
        stride: stride of every convolution.
        name: the config name of ``channels``, for the error message.
    """
    channels = tuple(channels) if isinstance(channels, Sequence) else ()
    if not channels or not all(is_positive_int(c) for c in channels):
        raise ValueError(
            f"{name} must be a non-empty list of positive integers, one per convolution "
            f"(paper: 3 layers), got {channels!r}"
        )
    layers: list[nn.Module] = []
    for i, (c_in, c_out) in enumerate(zip((in_channels, *channels[:-1]), channels)):
        k = 5 if i == 0 else 3
        layers += [nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2), nn.ReLU()]
    return nn.Sequential(*layers)
