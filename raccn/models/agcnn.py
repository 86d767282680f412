"""Attention Guided CNN (AG-CNN), Guan, Huang, Zhong, Zheng, Zheng, Yang, "Diagnose like a
Radiologist: Attention Guided Convolutional Neural Network for Thorax Disease Classification", 2018.

The non-learned crop beside RA-CNN's learned APN. Global branch: a trunk on the whole image and a
linear classifier on its pooled last map ``f`` (Tensor[B, C, h, w]). Heat map (§3.2, Eq. 1):
``H(x, y) = max_k |f_k(x, y)|``, min-max normalised to [0, 1] per image; mask ``M = H > τ``
(paper: τ = 0.7); the bounding box of the largest connected component of ``M``
(:func:`raccn.ops.components.largest_component_boxes`, batched) in image pixels crops the image,
resized to ``local_size`` (``torchvision.ops.roi_align``) for the local branch (its own trunk and
classifier). Fusion branch: a linear classifier on the concatenated pooled features of both
branches. The paper thresholds the heat map upsampled to the image; here it is thresholded at the
trunk's resolution and the box scaled by the stride (one cell = ``stride`` pixels), which is what
keeps the labelling cheap. With ``global_size``, the global branch sees the images area-averaged
to that side and the crop is cut from the images at their own resolution (as RA-CNN's
``input_sizes[0]``), so the local branch can read detail the global view has averaged away. The
crop is a hard, non-differentiable selection: no gradient reaches the global branch through it. The three training stages of the paper (global, then local with the
global branch fixed, then fusion with both fixed) are the training module's: see ``branches``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import roi_align

from raccn.models.backbones import build_trunk
from raccn.ops.components import largest_component_boxes

BRANCHES = ("global", "local", "fusion")


class GlobalBranchOutput(NamedTuple):
    features: Tensor  #: Tensor[B, C_g, h, w], the global trunk's last map
    logits: Tensor  #: Tensor[B, K]


class AGCNNOutput(NamedTuple):
    global_logits: Tensor  #: Tensor[B, K]
    local_logits: Tensor  #: Tensor[B, K]
    fused_logits: Tensor  #: Tensor[B, K]
    boxes: Tensor  #: Tensor[B, 4] (x0, y0, x1, y1) in image pixels, the local branch's crop
    heatmap: Tensor  #: Tensor[B, h, w], H min-max normalised to [0, 1]
    crops: Tensor  #: Tensor[B, C, local_size, local_size], the local branch's input


class AGCNN(nn.Module):
    """Args:
        num_classes: K. The other arguments are keyword-only.
        backbone: trunk name of both branches (``raccn.models.backbones``, e.g. resnet18,
            small_vgg_bn, ``timm:<model>``; paper: ResNet-50 / DenseNet-121).
        weights: weights of both trunks (see ``build_trunk``) or None.
        local_size: side of the local branch's input (paper: 224).
        global_size: side of the global branch's input, or None (paper: the images as they are).
            Images larger than it are area-averaged to it; their crops are cut at full resolution.
        threshold: τ in [0, 1) (paper: 0.7).
        connectivity: 8 or 4, of the mask's connected components.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        backbone: str = "resnet18",
        weights: str | None = None,
        local_size: int = 224,
        global_size: int | None = None,
        threshold: float = 0.7,
        connectivity: int = 8,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes!r}")
        if not 0 <= threshold < 1:
            raise ValueError(f"threshold must be in [0, 1) (paper: 0.7), got {threshold!r}")
        if connectivity not in (4, 8):
            raise ValueError(f"connectivity must be 4 or 8, got {connectivity!r}")
        if not isinstance(local_size, int) or local_size < 1:
            raise ValueError(f"local_size must be a positive integer (pixels), got {local_size!r}")
        if global_size is not None and (not isinstance(global_size, int) or global_size < 1):
            raise ValueError(f"global_size must be a positive integer (pixels) or null, got {global_size!r}")
        if weights == "None":  # a command-line null inside model.init_args.net arrives so (jsonargparse)
            weights = None
        self.num_classes, self.local_size, self.global_size = num_classes, local_size, global_size
        self.threshold, self.connectivity = float(threshold), connectivity
        g, loc = build_trunk(backbone, weights), build_trunk(backbone, weights)
        self.global_trunk, self.local_trunk = g.features, loc.features
        self.global_classifier = nn.Linear(g.channels, num_classes)
        self.local_classifier = nn.Linear(loc.channels, num_classes)
        self.fusion_classifier = nn.Linear(g.channels + loc.channels, num_classes)

    def branches(self, name: str) -> list[nn.Module]:
        """The modules a training stage updates: ``"global"`` (trunk + classifier), ``"local"``
        (trunk + classifier) or ``"fusion"`` (the fusion classifier)."""
        if name not in BRANCHES:
            raise ValueError(f"branch must be one of {BRANCHES}, got {name!r}")
        return {"global": [self.global_trunk, self.global_classifier],
                "local": [self.local_trunk, self.local_classifier],
                "fusion": [self.fusion_classifier]}[name]

    def heatmap(self, features: Tensor) -> Tensor:
        """Eq. (1): Tensor[B, C, h, w] -> Tensor[B, h, w], max_k |f_k|, min-max normalised per image
        (a constant map gives zeros)."""
        heat = features.abs().amax(1)  # (B, h, w)
        low = heat.amin(dim=(1, 2), keepdim=True)
        high = heat.amax(dim=(1, 2), keepdim=True)
        return (heat - low) / (high - low).clamp(min=torch.finfo(heat.dtype).tiny)

    def crop_boxes(self, heat: Tensor, height: int, width: int) -> Tensor:
        """Box of the largest component of ``heat > threshold`` (Tensor[B, h, w]) in pixels of a
        ``height x width`` image -> Tensor[B, 4] (x0, y0, x1, y1); one cell is
        ``width / w x height / h`` pixels; an empty mask gives the whole image."""
        h, w = heat.shape[-2:]
        cells = largest_component_boxes(heat.detach() > self.threshold, self.connectivity)
        scale = cells.new_tensor([width / w, height / h, width / w, height / h])
        return cells.to(heat.dtype) * scale

    def global_view(self, images: Tensor) -> Tensor:
        """The global branch's input: Tensor[B, C, H, W] -> the images, or with ``global_size``
        G their area average Tensor[B, C, G, G] (when they are larger; smaller is an error)."""
        if images.dim() != 4:
            raise ValueError(f"images must be Tensor[B, C, H, W], got {tuple(images.shape)}")
        G = self.global_size
        if G is None or tuple(images.shape[-2:]) == (G, G):
            return images
        if min(images.shape[-2:]) < G:
            raise ValueError(f"images are {tuple(images.shape[-2:])} but the global branch's input is "
                             f"{G}x{G} (global_size): give larger images or a smaller global_size")
        return F.interpolate(images, size=(G, G), mode="area")

    def global_branch(self, images: Tensor) -> GlobalBranchOutput:
        """The global branch alone (training stage I needs nothing else): images
        (Tensor[B, C, H, W]) -> GlobalBranchOutput."""
        fg = self.global_trunk(self.global_view(images))  # (B, C_g, h, w)
        return GlobalBranchOutput(fg, self.global_classifier(fg.mean(dim=(2, 3))))

    def forward(self, images: Tensor) -> AGCNNOutput:
        """images (Tensor[B, C, H, W]) -> AGCNNOutput; boxes and crops in pixels of ``images``."""
        H, W = images.shape[-2:]
        g = self.global_branch(images)
        fg = g.features  # (B, C_g, h, w)
        heat = self.heatmap(fg.detach())
        boxes = self.crop_boxes(heat, H, W)  # (B, 4)
        index = torch.arange(len(boxes), device=boxes.device, dtype=boxes.dtype)[:, None]
        crops = roi_align(images, torch.cat([index, boxes.to(images.dtype)], 1),
                          (self.local_size, self.local_size), aligned=True)  # bilinear, averaged
        fl = self.local_trunk(crops)  # (B, C_l, h', w')
        dg, dl = fg.mean(dim=(2, 3)), fl.mean(dim=(2, 3))  # global average pooling
        return AGCNNOutput(
            g.logits, self.local_classifier(dl),
            self.fusion_classifier(torch.cat([dg, dl], 1)), boxes, heat, crops,
        )
