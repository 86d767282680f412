"""Action (classification) network f_a (Mnih et al. 2014, §4): logits = Linear(h_t)."""

from __future__ import annotations

from torch import Tensor, nn


class ActionNetwork(nn.Module):
    """Args: hidden_size: width of h_t; num_classes: K."""

    def __init__(self, hidden_size: int = 256, num_classes: int = 10) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes!r}")
        self.fc = nn.Linear(hidden_size, num_classes)

    def forward(self, h_t: Tensor) -> Tensor:
        """h_t (Tensor[..., hidden_size]) -> logits (Tensor[..., K]); softmax is in the loss."""
        return self.fc(h_t)
