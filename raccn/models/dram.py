"""Deep Recurrent Attention Model (DRAM), Ba, Mnih, Kavukcuoglu, "Multiple Object Recognition
with Visual Attention", ICLR 2015.

The model reads a sequence of up to S labels (e.g. the digits of a house number), N glimpses
per label, T = S * N glimpses in all. One module per box of the paper's figure: context network
C, glimpse network G, two stacked LSTMs (r^(1) classification, r^(2) location), emission
network E (the Gaussian location policy), baseline b and classification network::

    r2_0 = (C(x), 0);  r1_0 = 0
    for n = 1..T:
        l_n ~ π(· | r2_{n-1}) = N(E(r2_{n-1}), σ²),   b_n = b(r2_{n-1})
        g_n = G(x, l_n)
        r1_n = LSTM_1(g_n, r1_{n-1});   r2_n = LSTM_2(r1_n, r2_{n-1})
        if n = s * N:  logits_s = Linear(r1_n)        (label s, s = 1..S)

Every location, the first included, is an action of the policy (the context network drives the
first one), so there are T log-probabilities and T baselines. r^(1) starts from zeros, as in the
paper, so the classifier cannot read the coarse image directly; it does see the locations
(through G's "where" pathway), which the context network chooses. The label alphabet has
K = num_classes + 1 entries: the last, index ``num_classes``, is "end of sequence" (EOS); a
sequence shorter than S is followed by EOS (``raccn.losses.dram_loss``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from raccn.models.action_network import ActionNetwork
from raccn.models.baseline_network import BaselineNetwork
from raccn.models.context_network import ContextNetwork
from raccn.models.conv_stack import is_positive_int
from raccn.models.core_network import CoreNetwork
from raccn.models.dram_glimpse_network import DRAMGlimpseNetwork
from raccn.models.location_network import LocationNetwork
from raccn.models.relu_init import INITS, relu_init_


class DRAMOutput(NamedTuple):
    logits: Tensor  #: Tensor[B, S, K] label logits, one vector per slot; K - 1 is EOS
    locations: Tensor  #: Tensor[B, T, 2] glimpse centres (x, y) in [-1, 1], l_1..l_T, detached
    log_pi: Tensor  #: Tensor[B, T] log π of every sampled location l_1..l_T
    baselines: Tensor  #: Tensor[B, T] b_1..b_T, the reward estimates for those actions


def _positive_int(value: int, name: str, hint: str) -> int:
    if not is_positive_int(value):
        raise ValueError(f"{name} must be an integer >= 1 ({hint}), got {value!r}")
    return value


class DeepRecurrentAttentionModel(nn.Module):
    """DRAM for sequences of up to ``max_digits`` labels.

    Args:
        num_classes: number of real labels; the model outputs K = num_classes + 1 logits per
            slot, the last one for EOS.
        in_channels: image channels C.
        max_digits: S, the number of label slots (a sequence of S labels needs no EOS).
        glimpses_per_digit: N, glimpses before each label is emitted; T = S * N.
        patch_size: glimpse patch side in pixels.
        scales: patches per glimpse.
        scale_factor: patch j covers ``patch_size * scale_factor**j`` pixels.
        conv_channels: channels of the glimpse ConvNet (paper: 3 layers).
        glimpse_dim: width of g_n.
        hidden_size: width of both LSTMs (and of the context vector).
        context_size: side (or (height, width)) of the coarse image seen by the context network.
        context_channels: channels of the context ConvNet (paper: 3 layers).
        std: fixed std of the location policy, in [-1, 1] units (> 0).
        policy_grad_to_core: let the REINFORCE gradient flow from r^(2) on into r^(1) and the
            glimpse network (paper's end-to-end training). By default it trains the emission
            network, r^(2) and the context network only (r^(1)_n enters r^(2) detached), and the
            classification loss alone trains r^(1), the glimpse network and the classifier.
        init: weight initialisation. ``"torch"``: PyTorch's defaults everywhere. ``"relu"``:
            the glimpse and context networks' layers Kaiming-normal for ReLU, both LSTMs' input
            weights Kaiming-normal, their recurrent weights orthogonal, biases zero; the
            emission, baseline and classification heads keep PyTorch's defaults
            (``raccn.models.relu_init``, as RAM's). It learns faster on the embedded house
            numbers (the DRAM quick start).
        subtract_image_mean: subtract each image's mean (one number per image, over its
            channels and pixels) before the context and glimpse networks read it: Goodfellow et
            al.'s SVHN preprocessing ("we preprocess by subtracting the mean of each image"),
            which Ba et al. follow. Done here rather than in the data so that the pictures show
            the image as it is and ``predict`` on raw files needs no matching transform.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        max_digits: int = 5,
        glimpses_per_digit: int = 3,
        patch_size: int = 12,
        scales: int = 2,
        scale_factor: float = 2.0,
        conv_channels: Sequence[int] = (64, 64, 128),
        glimpse_dim: int = 256,
        hidden_size: int = 256,
        context_size: int | Sequence[int] = 32,
        context_channels: Sequence[int] = (16, 32, 64),
        std: float = 0.17,
        policy_grad_to_core: bool = False,
        init: str = "torch",
        subtract_image_mean: bool = False,
    ) -> None:
        super().__init__()
        _positive_int(num_classes, "num_classes", "real labels; EOS is added as class num_classes")
        _positive_int(in_channels, "in_channels", "1 for grey, 3 for RGB")
        self.max_digits = _positive_int(max_digits, "max_digits", "S, label slots; SVHN: 5")
        self.glimpses_per_digit = _positive_int(
            glimpses_per_digit, "glimpses_per_digit", "N, glimpses before each label"
        )
        _positive_int(glimpse_dim, "glimpse_dim", "width of g_n")
        _positive_int(hidden_size, "hidden_size", "LSTM width")
        self.num_classes, self.in_channels = num_classes, in_channels
        self.glimpses = self.max_digits * self.glimpses_per_digit  # T
        self.policy_grad_to_core = bool(policy_grad_to_core)
        self.subtract_image_mean = bool(subtract_image_mean)
        self.context_net = ContextNetwork(in_channels, hidden_size, context_size, context_channels)
        self.glimpse_net = DRAMGlimpseNetwork(
            in_channels, patch_size, scales, scale_factor, conv_channels, glimpse_dim
        )
        self.core = CoreNetwork(glimpse_dim, hidden_size, "lstm")  # r^(1), classification
        self.location_core = CoreNetwork(hidden_size, hidden_size, "lstm")  # r^(2), location
        # r^(2) is only read by the policy, so the policy gradient must reach it: the emission
        # network never detaches its input here; policy_grad_to_core decides at r^(1)_n instead.
        self.locator = LocationNetwork(hidden_size, std, grad_to_core=True)
        self.baseline = BaselineNetwork(hidden_size)
        self.classifier = ActionNetwork(hidden_size, num_classes + 1)
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        if init == "relu":
            relu_init_([self.glimpse_net, self.context_net], [self.core, self.location_core])

    @property
    def eos_index(self) -> int:
        """Index of the end-of-sequence label (the last of the K = num_classes + 1 logits)."""
        return self.num_classes

    def forward(self, images: Tensor, deterministic: bool = False) -> DRAMOutput:
        """
        Args:
            images (Tensor[B, C, H, W]): input images.
            deterministic: follow the policy mean instead of sampling (log_pi is still that of
                the mean under the policy).

        Returns:
            DRAMOutput with per-slot logits and per-glimpse locations, log-probabilities and
            baselines.
        """
        if images.dim() != 4 or images.shape[1] != self.in_channels:
            raise ValueError(
                f"images must be Tensor[B, C, H, W] with C = in_channels = {self.in_channels}, "
                f"got shape {tuple(images.shape)}"
            )
        if self.subtract_image_mean:
            images = images - images.mean(dim=(1, 2, 3), keepdim=True)
        c_I = self.context_net(images)  # (B, hidden)
        r2 = (c_I, torch.zeros_like(c_I))  # (h, c) of the location LSTM
        r1 = None  # the classification LSTM starts from zeros
        source = self.glimpse_net.prepare(images)  # shared by the T glimpses
        locations, log_pis, baselines, label_states = [], [], [], []
        for n in range(1, self.glimpses + 1):
            l_n, log_pi, _ = self.locator(r2[0], deterministic)  # (B, 2), (B,)
            locations.append(l_n)
            log_pis.append(log_pi)
            baselines.append(self.baseline(r2[0]))  # (B,)
            r1 = self.core(self.glimpse_net(images, l_n, source), r1)
            if n % self.glimpses_per_digit == 0:
                label_states.append(r1[0])
            if n < self.glimpses:  # r2_T would choose no glimpse
                r2 = self.location_core(r1[0] if self.policy_grad_to_core else r1[0].detach(), r2)
        return DRAMOutput(
            logits=self.classifier(torch.stack(label_states, dim=1)),  # (B, S, K)
            locations=torch.stack(locations, dim=1),  # (B, T, 2)
            log_pi=torch.stack(log_pis, dim=1),  # (B, T)
            baselines=torch.stack(baselines, dim=1),  # (B, T)
        )

    @torch.no_grad()
    def predict_proba(self, images: Tensor, mc: int = 1) -> Tensor:
        """Label probabilities averaged over ``mc`` Monte Carlo rollouts of the policy.

        The rollouts run as one forward pass over the batch repeated ``mc`` times
        (rollout-major), without gradients.

        Args:
            images (Tensor[B, C, H, W]): input images.
            mc: number of sampled glimpse sequences (>= 1).

        Returns:
            Tensor[B, S, K]: softmax over the K = num_classes + 1 labels (last: EOS) per slot,
            averaged over the rollouts; every row sums to 1.
        """
        _positive_int(mc, "mc", "Monte Carlo rollouts; 1 is a single sampled glimpse sequence")
        B = images.shape[0]
        out = self(images.repeat(mc, 1, 1, 1) if mc > 1 else images)
        return out.logits.softmax(dim=-1).view(mc, B, *out.logits.shape[1:]).mean(dim=0)


DRAM = DeepRecurrentAttentionModel
