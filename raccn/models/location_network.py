"""Location network f_l (Mnih et al. 2014, §4): a Gaussian policy over the next glimpse.

    μ_t = tanh(Linear(h_t)),   l_t ~ N(μ_t, σ² I),   log π(l_t | h_t) kept for REINFORCE.

σ is fixed (a config value). The sampled l_t is detached from the graph (it is an action), so
the location network learns only through the REINFORCE term ``-log π · (R - b)``. With
``grad_to_core=False`` its input h_t is detached too, so the policy gradient does not reach the
core (as in most public PyTorch RAMs; the classification loss alone trains the core); with
``grad_to_core=True`` the REINFORCE gradient flows on through h_t into the core and the glimpse
network, as in the paper's end-to-end hybrid training (and Torch's ``ReinforceNormal``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn


class LocationSample(NamedTuple):
    loc: Tensor  #: Tensor[B, 2] sampled location (x, y), clamped to [-1, 1], detached
    log_pi: Tensor  #: Tensor[B] log-density of the (unclamped) sample under N(mean, std²)
    mean: Tensor  #: Tensor[B, 2] policy mean in [-1, 1]


class LocationNetwork(nn.Module):
    """Gaussian location policy.

    Args:
        hidden_size: width of h_t.
        std: fixed standard deviation of the policy, in the [-1, 1] coordinate units (> 0).
        grad_to_core: let the REINFORCE gradient flow into h_t (and so into the core).
    """

    def __init__(self, hidden_size: int = 256, std: float = 0.17, grad_to_core: bool = False) -> None:
        super().__init__()
        if not std > 0:
            raise ValueError(
                f"location std must be > 0 (it is the policy's exploration noise in [-1, 1] "
                f"units; the paper uses about 0.1-0.2), got {std!r}"
            )
        self.std = float(std)
        self.grad_to_core = bool(grad_to_core)
        self.fc = nn.Linear(hidden_size, 2)

    def forward(self, h_t: Tensor, deterministic: bool = False) -> LocationSample:
        """
        Args:
            h_t (Tensor[B, hidden_size]): core state.
            deterministic: return the mean instead of a sample (log_pi is still computed).

        Returns:
            LocationSample with ``loc`` (Tensor[B, 2]), ``log_pi`` (Tensor[B]), ``mean``.
        """
        mean = torch.tanh(self.fc(h_t if self.grad_to_core else h_t.detach()))
        l_t = mean.detach() if deterministic else torch.normal(mean.detach(), self.std)
        # log N(l_t; mean, σ² I), written out: torch.distributions.Normal gives the same samples
        # and density (tests/test_ram_model.py) at several times the cost in argument checks
        z = (l_t - mean) / self.std
        log_pi = -0.5 * z.square().sum(dim=-1) - 2 * (math.log(self.std) + 0.5 * math.log(2 * math.pi))
        return LocationSample(l_t.clamp(-1.0, 1.0), log_pi, mean)
