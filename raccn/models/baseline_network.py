"""Baseline network (Mnih et al. 2014, §3.2): b_t = Linear(h_t), a learned reward estimate.

It reads the detached core state, so it is trained by its own regression loss only and
reduces the variance of REINFORCE through the advantage R - b_t.
"""

from __future__ import annotations

from torch import Tensor, nn


class BaselineNetwork(nn.Module):
    """Args: hidden_size: width of h_t."""

    def __init__(self, hidden_size: int = 256) -> None:
        super().__init__()
        self.fc = nn.Linear(hidden_size, 1)

    def forward(self, h_t: Tensor) -> Tensor:
        """h_t (Tensor[..., hidden_size], e.g. [B, H] or [B, T, H]) -> b_t (Tensor[...])."""
        return self.fc(h_t.detach()).squeeze(-1)
