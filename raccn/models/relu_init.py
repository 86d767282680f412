"""The ``init="relu"`` initialisation of the glimpse models (RAM, DRAM): weights that keep the
activations' scale through ReLU layers and through the recurrent steps, where PyTorch's defaults
shrink them (and the models learn slower, docs/RESULTS.md)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

INITS = ("torch", "relu")


@torch.no_grad()
def relu_init_(feedforward: Iterable[nn.Module], cores: Iterable[nn.Module]) -> None:
    """In place: every ``nn.Linear`` and ``nn.Conv2d`` inside ``feedforward`` Kaiming-normal
    for ReLU (fan-in) with zero biases; the recurrent cells of ``cores`` (``CoreNetwork``s)
    with Kaiming-normal input weights, orthogonal recurrent weights and zero biases. Heads
    (policy, baseline, classifier) are not passed and keep PyTorch's defaults."""
    for module in feedforward:
        for layer in module.modules():
            if isinstance(layer, (nn.Linear, nn.Conv2d)):
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
                nn.init.zeros_(layer.bias)
    for core in cores:
        for name, param in core.cell.named_parameters():
            if name.startswith("weight_ih"):
                nn.init.kaiming_normal_(param, nonlinearity="relu")
            elif name.startswith("weight_hh"):
                nn.init.orthogonal_(param)
            else:  # bias_ih, bias_hh
                nn.init.zeros_(param)
