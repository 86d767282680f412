"""Recurrent Attention Model (RAM), Mnih, Heess, Graves, Kavukcuoglu, NIPS 2014.

One box of the paper's figure per module: glimpse network f_g, core f_h, location policy f_l,
baseline b and action network f_a. For t = 1..T::

    g_t = f_g(x, l_{t-1});   h_t = f_h(h_{t-1}, g_t);   logits_t = f_a(h_t)
    l_t ~ π(· | h_t) = N(f_l(h_t), σ²)     (for t < T),   b_t = b(h_t)

l_0 is the first glimpse's location (uniform random or the centre). The loss is in
``raccn.losses.ram_loss``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from raccn.models.action_network import ActionNetwork
from raccn.models.baseline_network import BaselineNetwork
from raccn.models.core_network import CoreNetwork
from raccn.models.glimpse_network import GlimpseNetwork
from raccn.models.location_network import LocationNetwork
from raccn.models.relu_init import INITS, relu_init_

INIT_LOCS = ("random", "center")


class RAMOutput(NamedTuple):
    logits: Tensor  #: Tensor[B, T, K] action-network logits after each glimpse
    locations: Tensor  #: Tensor[B, T, 2] glimpse centres (x, y) in [-1, 1], l_0..l_{T-1}
    log_pi: Tensor  #: Tensor[B, T-1] log π of the sampled l_1..l_{T-1}
    baselines: Tensor  #: Tensor[B, T-1] b_1..b_{T-1}, the reward estimates for those actions


class RecurrentAttentionModel(nn.Module):
    """RAM with a multi-resolution glimpse sensor.

    Args:
        num_classes: K.
        in_channels: image channels.
        glimpses: T, the number of glimpses (>= 1).
        patch_size: glimpse patch side in pixels.
        scales: patches per glimpse.
        scale_factor: patch j covers ``patch_size * scale_factor**j`` pixels.
        glimpse_hidden: width of h_g and h_l.
        glimpse_dim: width of g_t.
        hidden_size: width of the core state h_t.
        core: ``"rnn"`` (paper) or ``"lstm"``.
        std: fixed std of the location policy (> 0).
        init_loc: where the first glimpse looks: ``"random"`` (uniform) or ``"center"``.
        policy_grad_to_core: let the REINFORCE gradient reach the core and glimpse network
            (paper) instead of training the location layer alone (see ``LocationNetwork``).
        init: weight initialisation. ``"torch"``: PyTorch's defaults everywhere. ``"relu"``:
            the glimpse network's layers and the core's input weights Kaiming-normal for ReLU
            (fan-in), the core's recurrent weights orthogonal, their biases zero, so the
            activations keep their scale through the layers and the glimpses; the policy,
            baseline and classifier heads keep PyTorch's defaults (a small policy layer keeps
            the first glimpses near the policy's start). It learns faster (docs/RESULTS.md).
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        glimpses: int = 6,
        patch_size: int = 8,
        scales: int = 1,
        scale_factor: float = 2.0,
        glimpse_hidden: int = 128,
        glimpse_dim: int = 256,
        hidden_size: int = 256,
        core: str = "rnn",
        std: float = 0.17,
        init_loc: str = "random",
        policy_grad_to_core: bool = False,
        init: str = "torch",
    ) -> None:
        super().__init__()
        if not isinstance(glimpses, int) or glimpses < 1:
            raise ValueError(f"glimpses must be an integer >= 1 (paper: 6 on MNIST), got {glimpses!r}")
        if init_loc not in INIT_LOCS:
            raise ValueError(f"init_loc must be one of {INIT_LOCS}, got {init_loc!r}")
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        self.num_classes, self.in_channels = num_classes, in_channels
        self.glimpses, self.init_loc = glimpses, init_loc
        self.glimpse_net = GlimpseNetwork(
            in_channels, patch_size, scales, scale_factor, glimpse_hidden, glimpse_hidden, glimpse_dim
        )
        self.core = CoreNetwork(glimpse_dim, hidden_size, core)
        self.locator = LocationNetwork(hidden_size, std, policy_grad_to_core)
        self.baseline = BaselineNetwork(hidden_size)
        self.classifier = ActionNetwork(hidden_size, num_classes)
        if init == "relu":
            self.relu_init_()

    def relu_init_(self) -> None:
        """The ``init="relu"`` initialisation (see the class docstring), in place."""
        relu_init_([self.glimpse_net], [self.core])

    def first_location(self, images: Tensor) -> Tensor:
        """l_0 (Tensor[B, 2]) for images (Tensor[B, C, H, W])."""
        B = images.shape[0]
        if self.init_loc == "center":
            return images.new_zeros(B, 2)
        return torch.rand(B, 2, device=images.device, dtype=images.dtype) * 2.0 - 1.0

    def forward(self, images: Tensor, deterministic: bool = False) -> RAMOutput:
        """
        Args:
            images (Tensor[B, C, H, W]): input images.
            deterministic: follow the policy mean instead of sampling (for inspection).

        Returns:
            RAMOutput with per-step logits, locations, log-probabilities and baselines.
        """
        # The sensor's per-batch part (box-filtered images), shared by the T glimpses. First, so
        # that under torch.compile, where it runs eagerly, the rest of the forward is one graph.
        source = self.glimpse_net.prepare(images)
        l_t = self.first_location(images)
        state = None
        hidden, locations, log_pis, baselines = [], [l_t], [], []
        for t in range(self.glimpses):
            state = self.core(self.glimpse_net(images, l_t, source), state)
            hidden.append(state[0])
            if t + 1 < self.glimpses:  # the action l_t and the reward estimate for it
                l_t, log_pi, _ = self.locator(state[0], deterministic)
                locations.append(l_t)
                log_pis.append(log_pi)
                baselines.append(self.baseline(state[0]))
        logits = self.classifier(torch.stack(hidden, dim=1))  # (B, T, K)
        if self.glimpses == 1:  # no action was taken: no policy terms
            none = images.new_zeros(len(images), 0)
            return RAMOutput(logits, l_t[:, None], none, none)
        return RAMOutput(logits, torch.stack(locations, 1), torch.stack(log_pis, 1), torch.stack(baselines, 1))
