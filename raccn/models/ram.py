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
from raccn.ops.glimpse import GlimpseSource

INIT_LOCS = ("random", "center")
INITS = ("torch", "relu")
LOGITS_GRAD = ("all", "last")


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

    @torch.no_grad()
    def relu_init_(self) -> None:
        """The ``init="relu"`` initialisation (see the class docstring), in place."""
        for layer in self.glimpse_net.modules():
            if isinstance(layer, nn.Linear):
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
                nn.init.zeros_(layer.bias)
        for name, param in self.core.cell.named_parameters():
            if name.startswith("weight_ih"):
                nn.init.kaiming_normal_(param, nonlinearity="relu")
            elif name.startswith("weight_hh"):
                nn.init.orthogonal_(param)
            else:  # bias_ih, bias_hh
                nn.init.zeros_(param)

    def first_location(self, images: Tensor) -> Tensor:
        """l_0 (Tensor[B, 2]) for images (Tensor[B, C, H, W])."""
        B = images.shape[0]
        if self.init_loc == "center":
            return images.new_zeros(B, 2)
        return torch.rand(B, 2, device=images.device, dtype=images.dtype) * 2.0 - 1.0

    def forward(
        self,
        images: Tensor,
        deterministic: bool = False,
        source: GlimpseSource | None = None,
        logits_grad: str = "all",
    ) -> RAMOutput:
        """
        Args:
            images (Tensor[B, C, H, W]): input images.
            deterministic: follow the policy mean instead of sampling (for inspection).
            source (GlimpseSource, optional): ``self.glimpse_net.prepare(images)``, made here when
                None (a caller that compiles the forward passes it in, made eagerly: see
                ``raccn.ops.prepare_glimpses``).
            logits_grad: ``"all"`` records the classifier's graph at every step. ``"last"``
                records it for the last step's logits ``logits[:, -1]`` only, the one the paper's
                loss reads (``RAMLitModule`` trains this way): the earlier logits, for per-glimpse
                accuracy and pictures, are the same values without a graph, which saves their
                classifier backward and the zero gradients it would send into the core.

        Returns:
            RAMOutput with per-step logits, locations, log-probabilities and baselines.
        """
        if logits_grad not in LOGITS_GRAD:
            raise ValueError(f"logits_grad must be one of {LOGITS_GRAD}, got {logits_grad!r}")
        l_t = self.first_location(images)
        if source is None:
            source = self.glimpse_net.prepare(images)  # shared by the T glimpses
        state = None
        hidden, locations, samples = [], [l_t], []
        for t in range(self.glimpses):
            state = self.core(self.glimpse_net(images, l_t, source), state)
            hidden.append(state[0])
            if t + 1 < self.glimpses:  # the action: drawn here, its log π below for all steps
                l_t, raw = self.locator.sample(state[0], deterministic)
                locations.append(l_t)
                samples.append(raw)
        if samples:  # heads of the acting states h_1..h_{T-1}, time-major (contiguous), one call each
            acting = torch.stack(hidden[:-1])  # (T-1, B, hidden_size)
            log_pi = self.locator.log_prob(acting, torch.stack(samples)).t().contiguous()
            baselines = self.baseline(acting).t().contiguous()
        else:
            log_pi = baselines = images.new_zeros(images.shape[0], 0)
        if logits_grad == "all" or not samples or not torch.is_grad_enabled():
            logits = self.classifier(torch.stack(hidden, dim=1))
        else:  # the earlier steps' logits from the acting states, without a graph
            with torch.no_grad():
                early = self.classifier(acting).transpose(0, 1)
            logits = torch.cat([early, self.classifier(hidden[-1])[:, None]], dim=1)
        return RAMOutput(logits, torch.stack(locations, dim=1), log_pi, baselines)
