"""Recurrent Attention CNN (RA-CNN), Fu, Zheng, Mei, "Look Closer to See Better", CVPR 2017.

Scale s (1..N) classifies its input x_s with a CNN trunk and a linear classifier on the
globally pooled last conv features; for s < N its APN proposes a square (tx, ty, tl) on x_s and
the next input is the attended, amplified crop x_{s+1} = zoom(x_s, box_s, input_sizes[s+1], k)
(``raccn.ops.zoom``: sigmoid boxcar mask + bilinear resampling, differentiable w.r.t. the box;
or, with ``cropper="stn"``, a spatial transformer's affine grid + bilinear sampling,
``raccn.ops.stn_zoom``, differentiable through the sampling grid).
Fusion: L2-normalised descriptors of all scales concatenated into a linear layer (paper), or the
average of the scales' softmax outputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from raccn.models.apn import AttentionProposalNetwork
from raccn.models.backbones import build_trunk
from raccn.ops.stn_zoom import stn_zoom
from raccn.ops.zoom import zoom

FUSIONS = ("concat", "softmax")
CROPPERS = ("boxcar", "stn")
# names of the trunk maps ``RACNN.trunk_map`` returns -> their stride (None: the trunk's last map)
TRUNK_MAPS = {"last": None, "stride16": 16, "stride8": 8}


class RACNNOutput(NamedTuple):
    logits: list[Tensor]  #: per scale (all but the last with ``boxes_only``), Tensor[B, K]
    fused_logits: Tensor | None  #: Tensor[B, K] (log-probabilities for ``fusion="softmax"``); None with ``boxes_only``
    boxes: list[Tensor]  #: per APN (N-1), Tensor[B, 3] (tx, ty, tl) in pixels of that scale's input
    inputs: list[Tensor]  #: per scale, Tensor[B, C, S_s, S_s]; inputs[0] is scale 1's view of the image
    features: list[Tensor]  #: per scale, last conv features Tensor[B, C', h_s, w_s]; APN s reads them
    #: image pixels per pixel of scale 1's input (``S / input_sizes[0]``; 1 when they match)
    view_scale: float = 1.0


class RACNN(nn.Module):
    """Args:
        num_classes: K. The other arguments are keyword-only.
        backbone: trunk name (``raccn.models.backbones``: vgg19, resnet18, small_vgg_bn, or any
            convolutional timm model as ``timm:<model>``, e.g. ``timm:efficientnet_b0``), or one
            name per scale (e.g. a cheaper trunk at the last scale, which has no APN); one name
            with ``shared_trunk``.
        weights: torchvision weights name (e.g. ``"DEFAULT"``), for timm trunks ``"DEFAULT"`` or
            a timm pretrained tag, or None.
        attention: a plug-in attention block (``raccn.layers.ATTENTION``: se, cbam, non_local,
            danet, ccnet, aa_conv, sasa, residual_attention) inserted into every trunk where
            its paper puts it (``raccn.models.trunk_attention``), or None (the paper).
        attention_args: keyword arguments of that block (e.g. ``{reduction: 8}``).
        num_scales: N >= 2 (paper: 3).
        input_sizes: side of each scale's input; crops are amplified to ``input_sizes[s]``.
            Paper: [448, 224, 224]. Images of side ``S = input_sizes[0]`` go to scale 1 as they
            are (the paper). Larger images are scale 1's input area-averaged to
            ``input_sizes[0]``, and scale 2's crop is cut from the images at their own
            resolution (the APN's box scaled by ``S / input_sizes[0]``): zooming then reads
            detail that scale 1's view has averaged away.
        shared_trunk: one trunk for all scales instead of one per scale (paper: separate).
        apn_hidden, apn_pool, min_side_fraction: see ``AttentionProposalNetwork``.
        cropper: how a box becomes the next scale's input: ``"boxcar"`` (paper; the sigmoid
            boxcar mask, then bilinear resampling, ``raccn.ops.zoom``) or ``"stn"`` (a spatial
            transformer, Jaderberg et al. 2015: affine grid + bilinear sampling, box gradients
            through the sampling positions only, ``raccn.ops.stn_zoom``). Same box
            ``(tx, ty, tl)`` either way.
        k: steepness of the boxcar mask (paper: 10); unused by the ``stn`` cropper.
        grid_grad: let box gradients flow through the sampling grid too (``raccn.ops.zoom``);
            the ``stn`` cropper always does (it has no mask), whatever this says.
        fusion: ``"concat"`` (paper) or ``"softmax"``.
        channels_last: run the trunks in ``torch.channels_last`` memory format (weights and
            inputs; the maps they return are channels-last too). Same results up to rounding;
            on CPU oneDNN's convolutions are faster that way (``benchmarks/racnn_speed.py
            --channels_last``, docs/RESULTS.md).
    """

    def __init__(
        self,
        num_classes: int,
        *,
        backbone: str | list[str] = "vgg19",
        weights: str | None = None,
        attention: str | None = None,
        attention_args: dict | None = None,
        num_scales: int = 3,
        input_sizes: list[int] | tuple[int, ...] = (448, 224, 224),
        shared_trunk: bool = False,
        apn_hidden: int = 512,
        apn_pool: int = 7,
        min_side_fraction: float = 1.0 / 3.0,
        cropper: str = "boxcar",
        k: float = 10.0,
        grid_grad: bool = False,
        fusion: str = "concat",
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        if num_scales < 2:
            raise ValueError(f"num_scales must be >= 2 (paper: 3), got {num_scales!r}")
        if len(input_sizes) != num_scales or min(input_sizes) < 1:
            raise ValueError(
                f"input_sizes must list one positive side per scale ({num_scales}), got {list(input_sizes)}"
            )
        if not (k > 0 and math.isfinite(k)):
            raise ValueError(f"k (boxcar steepness) must be > 0 and finite (paper: 10), got {k!r}")
        if cropper not in CROPPERS:
            raise ValueError(f"cropper must be one of {CROPPERS} (paper: boxcar), got {cropper!r}")
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes!r}")
        if weights == "None":  # a command-line null inside model.init_args.net arrives so (jsonargparse)
            weights = None
        if attention == "None":
            attention = None
        self.num_classes, self.num_scales = num_classes, num_scales
        self.input_sizes = [int(s) for s in input_sizes]
        self.min_side_fraction, self.k = float(min_side_fraction), float(k)
        self.grid_grad, self.fusion, self.cropper = grid_grad, fusion, cropper
        names = [backbone] * num_scales if isinstance(backbone, str) else list(backbone)
        if len(names) != num_scales or (shared_trunk and len(set(names)) > 1):
            raise ValueError(
                f"backbone must be one name or one per scale ({num_scales}; one name with "
                f"shared_trunk), got {backbone!r}"
            )
        built = [build_trunk(n, weights, attention, attention_args)
                 for n in (names[:1] if shared_trunk else names)]
        trunks = built * num_scales if shared_trunk else built  # per scale
        self.trunks = nn.ModuleList(t.features for t in built)
        self.taps = [dict(t.taps) | {"last": (len(t.features), t.channels)} for t in trunks]
        self.classifiers = nn.ModuleList(nn.Linear(t.channels, num_classes) for t in trunks)
        self.apns = nn.ModuleList(
            AttentionProposalNetwork(trunks[s].channels, apn_hidden, apn_pool, min_side_fraction)
            for s in range(num_scales - 1)
        )
        channels = sum(t.channels for t in trunks)
        self.fuse = nn.Linear(channels, num_classes) if fusion == "concat" else None
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.trunks.to(memory_format=self.memory_format)

    def crop(self, images: Tensor, boxes: Tensor, out_size: int) -> Tensor:
        """The configured cropper: the squares ``boxes`` (Tensor[B, 3], (tx, ty, tl) in pixels of
        ``images``, Tensor[B, C, H, W]) amplified to Tensor[B, C, out_size, out_size]."""
        if self.cropper == "stn":
            return stn_zoom(images, boxes, out_size)
        return zoom(images, boxes, out_size, k=self.k, grid_grad=self.grid_grad)

    def trunk(self, s: int) -> nn.Module:
        return self.trunks[min(s, len(self.trunks) - 1)]

    def trunk_map(self, s: int, x: Tensor, name: str = "last") -> Tensor:
        """Scale s's trunk on x (Tensor[B, 3, S, S]) up to the map ``name`` (a key of
        ``TRUNK_MAPS``: ``"last"``, or ``"stride16"`` / ``"stride8"``, the trunk's last map at
        that stride r; see ``raccn.models.backbones``) -> Tensor[B, C_r, S/r, S/r]."""
        if name not in TRUNK_MAPS:
            raise ValueError(f"trunk map must be one of {tuple(TRUNK_MAPS)}, got {name!r}")
        stride = TRUNK_MAPS[name]
        n, _ = self.taps[s]["last" if stride is None else stride]
        return self.trunk(s)[:n](x.contiguous(memory_format=self.memory_format))

    def forward(
        self,
        images: Tensor,
        detach_boxes: bool = False,
        crop_boxes: Callable[[int, Tensor, int], Tensor] | None = None,
        boxes_only: bool = False,
    ) -> RACNNOutput:
        """
        Args:
            images (Tensor[B, C, S, S]): scale-1 input (square).
            detach_boxes: crop with detached boxes (classification phase: the classification
                loss then reaches no APN and no earlier trunk through the crops).
            crop_boxes: optional ``f(s, box, L) -> Tensor[B, 3]`` giving the box actually used to
                crop scale s's input (``box`` the APN's (tx, ty, tl) on that L x L input), e.g.
                random or jittered boxes for training the finer scales' classifiers; ``boxes``
                in the output stay the APN's.
            boxes_only: stop once the last APN has proposed its box and the last scale's input
                is cut (for phases that train only the APNs on targets): the last scale's trunk
                and classifier do not run, so ``logits`` and ``features`` hold N-1 entries
                and ``fused_logits`` is None.

        Returns:
            RACNNOutput; ``boxes`` keep their graph to the APNs either way.
        """
        if images.dim() != 4 or images.shape[-1] != images.shape[-2]:
            raise ValueError(f"images must be square Tensor[B, C, S, S], got {tuple(images.shape)}")
        S, L = images.shape[-1], self.input_sizes[0]
        if S < L:
            raise ValueError(
                f"images are {S}x{S} but scale 1's input is {L}x{L} (input_sizes[0]): give images "
                f"of at least that size, or set input_sizes[0] <= {S}"
            )
        x = images if S == L else F.interpolate(images, size=(L, L), mode="area")
        logits, boxes, inputs, features, descriptors = [], [], [x], [], []
        for s in range(self.num_scales - 1 if boxes_only else self.num_scales):
            f = self.trunk(s)(x.contiguous(memory_format=self.memory_format))  # (B, C', h, w)
            d = f.mean(dim=(2, 3))  # (B, C') global average pooling
            features.append(f)
            descriptors.append(d)
            logits.append(self.classifiers[s](d))
            if s + 1 < self.num_scales:
                box = self.apns[s](f, x.shape[-1])
                boxes.append(box)
                crop = box.detach() if detach_boxes else box
                if crop_boxes is not None:
                    crop = crop_boxes(s, crop, x.shape[-1])
                source = x
                if s == 0 and S != L:  # cut scale 2 from the full-resolution images
                    source, crop = images, crop * (S / L)
                x = self.crop(source, crop, self.input_sizes[s + 1])
                inputs.append(x)
        if boxes_only:
            fused = None
        elif self.fuse is not None:
            fused = self.fuse(torch.cat([F.normalize(d, dim=1) for d in descriptors], dim=1))
        else:
            fused = torch.stack([z.softmax(-1) for z in logits]).mean(0).log()
        return RACNNOutput(logits, fused, boxes, inputs, features, S / L)
