"""A plain multi-digit CNN (after Goodfellow, Bulatov, Ibarz, Arnoud, Shet, "Multi-digit Number
Recognition from Street View Imagery using Deep Convolutional Neural Networks", ICLR 2014): the
baseline DRAM (Ba et al., ICLR 2015) is measured against, reading the whole image at once.

    f      = AdaptiveAvgPool_{grid}(block_L(... block_1(x)))     block = conv, maxpool 2, [BN], ReLU
    h      = ReLU(Linear(flatten(f)))
    logits = (Linear_1(h), ..., Linear_S(h))                     one head per label slot

The alphabet is DRAM's: K = num_classes + 1 labels per slot, the last (index ``num_classes``)
"end of sequence" (EOS), so targets, loss, metrics and reports are DRAM's
(``raccn.losses.dram_loss``, ``raccn.lit.DRAMLitModule``). Goodfellow et al.'s separate length
head is the EOS label here. The conv stack is the same at any image size and its last map is
average-pooled to a fixed ``grid`` before the flatten, so the parameters do not depend on the
image and the multiply-adds grow with its pixels; the grid keeps where each feature was (left to
right), which the slots need to tell the digits apart.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from raccn.models.context_network import as_size
from raccn.models.conv_stack import is_positive_int
from raccn.models.dram import DRAMOutput


class SequenceCNN(nn.Module):
    """Conv stack and S linear heads over the whole image; no glimpses.

    Each block is a convolution (kernel 5 for the first, 3 for the rest, "same" padding), a
    2x2 max-pool (stride 2, floor), an optional batch norm and ReLU, so a side ``n`` becomes
    ``n // 2`` per block. Pooling before the batch norm and ReLU (ReLU and max commute) runs
    them on a quarter of the pixels; on a CPU these memory-bound passes cost more than the
    small convolutions (docs/RESULTS.md).

    Args:
        num_classes: number of real labels; K = num_classes + 1 logits per slot, the last EOS.
        in_channels: image channels C.
        max_digits: S, the number of label slots.
        channels: output channels of each block (non-empty).
        grid: side (or (height, width)) the last feature map is average-pooled to before the
            flatten (``F.adaptive_avg_pool2d``; the identity when the map already has that size).
        hidden_size: width of the fully connected layer h.
        batch_norm: a batch norm after each convolution (it trains a CNN from scratch in fewer
            steps; Goodfellow et al. used maxout and dropout instead).
        channels_last: run the conv stack in ``torch.channels_last`` memory format (weights
            and input), as ``raccn.models.RACNN`` can; same results up to rounding, and on a CPU
            oneDNN's convolutions and pools are faster that way (docs/RESULTS.md).
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        max_digits: int = 5,
        channels: Sequence[int] = (32, 64, 64, 128),
        grid: int | Sequence[int] = 6,
        hidden_size: int = 256,
        batch_norm: bool = True,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        for value, name in ((num_classes, "num_classes"), (in_channels, "in_channels"),
                            (max_digits, "max_digits"), (hidden_size, "hidden_size")):
            if not is_positive_int(value):
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        channels = tuple(channels) if isinstance(channels, Sequence) else ()
        if not channels or not all(is_positive_int(c) for c in channels):
            raise ValueError(f"channels must be a non-empty list of positive integers, one per "
                             f"conv block, got {channels!r}")
        self.num_classes, self.in_channels, self.max_digits = num_classes, in_channels, max_digits
        self.grid = as_size(grid, "grid")
        layers: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(zip((in_channels, *channels[:-1]), channels)):
            k = 5 if i == 0 else 3
            layers += [nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=not batch_norm), nn.MaxPool2d(2)]
            if batch_norm:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.ReLU())
        self.features = nn.Sequential(*layers)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.features.to(memory_format=self.memory_format)
        self.fc = nn.Linear(channels[-1] * self.grid[0] * self.grid[1], hidden_size)
        self.heads = nn.Linear(hidden_size, max_digits * (num_classes + 1))  # S heads side by side
        self.min_side = 2 ** len(channels)  # smaller images pool to nothing

    @property
    def eos_index(self) -> int:
        """Index of the end-of-sequence label (the last of the K = num_classes + 1 logits)."""
        return self.num_classes

    def forward(self, images: Tensor, deterministic: bool = False) -> DRAMOutput:
        """
        Args:
            images (Tensor[B, C, H, W]): input images, H and W >= 2 ** len(channels).
            deterministic: ignored (nothing is sampled); DRAM's signature.

        Returns:
            DRAMOutput with ``logits`` Tensor[B, S, K] and no glimpses (T = 0): ``locations``
            Tensor[B, 0, 2], ``log_pi`` and ``baselines`` Tensor[B, 0], so that DRAM's hybrid
            loss is the cross-entropy alone.
        """
        if images.dim() != 4 or images.shape[1] != self.in_channels or min(images.shape[-2:]) < self.min_side:
            raise ValueError(
                f"images must be Tensor[B, C, H, W] with C = in_channels = {self.in_channels} and "
                f"H, W >= {self.min_side} (one halving per conv block), got shape {tuple(images.shape)}"
            )
        f = self.features(images.contiguous(memory_format=self.memory_format))
        f = F.adaptive_avg_pool2d(f, self.grid)  # (B, C_L, *grid)
        h = F.relu(self.fc(f.flatten(1)))  # (B, hidden)
        B = images.shape[0]
        logits = self.heads(h).view(B, self.max_digits, self.num_classes + 1)  # (B, S, K)
        none = logits.new_zeros(B, 0)
        return DRAMOutput(logits, logits.new_zeros(B, 0, 2), none, none)

    @torch.no_grad()
    def predict_proba(self, images: Tensor, mc: int = 1) -> Tensor:
        """Tensor[B, S, K]: softmax over the K labels per slot (``mc`` is ignored: nothing is
        sampled; DRAM's signature)."""
        return self(images).logits.softmax(dim=-1)
