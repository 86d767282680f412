"""Context network of DRAM (Ba, Mnih, Kavukcuoglu, ICLR 2015, §3): a coarse look at the image.

    I_coarse = AreaDownsample(x, context_size)
    c_I      = tanh(Linear(ReLU(conv_3(ReLU(conv_2(ReLU(conv_1(I_coarse))))))))

c_I is the initial hidden state of the top (location) LSTM r^(2), so the emission network
applied to it chooses the first glimpse. The bottom (classification) LSTM r^(1) starts from zeros
(paper: otherwise the classifier can read the coarse image and skip the glimpses).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from raccn.models.conv_stack import conv_stack, is_positive_int


def as_size(size: int | Sequence[int], name: str) -> tuple[int, int]:
    """``size`` as ``(height, width)``; ``ValueError`` naming ``name`` unless positive integers."""
    pair = (size, size) if isinstance(size, int) else tuple(size) if isinstance(size, Sequence) else ()
    if len(pair) != 2 or not all(is_positive_int(s) for s in pair):
        raise ValueError(
            f"{name} must be a positive integer or a pair (height, width) of them, got {size!r}"
        )
    return pair


class ContextNetwork(nn.Module):
    """Coarse image -> initial state of the location LSTM.

    The convolutions have kernels 5, 3, 3, ... (one per entry of ``channels``), stride 2 and
    "same" padding, each followed by ReLU; the feature map is flattened into a linear layer.
    The output goes through tanh because it stands for an LSTM hidden state, which lies in
    (-1, 1).

    Args:
        in_channels: image channels C.
        out_dim: width of c_I (the location LSTM's hidden size).
        context_size: side ``(height, width)`` (or one int for a square) of the downsampled image.
        channels: output channels of the convolutions (paper: 3 layers).
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_dim: int = 256,
        context_size: int | Sequence[int] = 32,
        channels: Sequence[int] = (16, 32, 64),
    ) -> None:
        super().__init__()
        self.context_size = as_size(context_size, "context_size")
        self.convs = conv_stack(in_channels, channels, 2, "context_channels")
        h, w = self.context_size
        for _ in channels:  # stride 2, "same" padding
            h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1
        self.fc = nn.Linear(channels[-1] * h * w, out_dim)

    def forward(self, images: Tensor) -> Tensor:
        """
        Args:
            images (Tensor[B, C, H, W]): whole images, any size, brought to ``context_size``
                by ``F.adaptive_avg_pool2d`` (each output cell the mean of whole input pixels
                over a bin; the bins overlap when the sizes do not divide, e.g. 54 -> 32, so it
                is not an exact area average; smaller images are upsampled by replication).

        Returns:
            Tensor[B, out_dim]: c_I, in (-1, 1).
        """
        coarse = F.adaptive_avg_pool2d(images, self.context_size)  # (B, C, h, w)
        return torch.tanh(self.fc(self.convs(coarse).flatten(1)))
