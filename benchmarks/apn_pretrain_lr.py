"""How far APN pre-training moves the box with a given optimiser, at several feature scales.

    python benchmarks/apn_pretrain_lr.py                      # VGG-19 at 448 px, as the paper configs
    python benchmarks/apn_pretrain_lr.py --feature-scales 100 1000

The APN of scale 1 (``RACNN``'s, as configured in ``configs/racnn_cub.yaml``: 512 hidden units on
conv5_4 pooled to 7x7) is pre-trained for ``--steps`` steps on the features of a fixed batch,
toward the module's own pre-training targets (the square of half the input side centred on the
peak of the channel-summed map; ``RACNNLitModule.pretrain_targets``), with each optimiser in
turn, from the same start. The trunk runs once, without ImageNet weights (none can be had here),
so its features are ``--feature-scales`` times those of a randomly initialised trunk: SGD's steps
grow with the square of the feature scale, Adam's do not, and pretrained features are larger
than random ones by an unknown factor. The images: a textured square at a random place on a
flat background, so that the peak (the target) differs per image.

One JSON line per (feature scale, optimiser): ``loss_start``, ``loss_end`` (the pre-training MSE
on boxes / input side) and ``box_error_px`` (mean |box - target| over tx, ty, tl, in pixels of
the input, after the last step).
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

from raccn.lit import RACNNLitModule
from raccn.models import RACNN

OPTIMISERS = {
    "sgd1e-6": lambda p: torch.optim.SGD(p, lr=1e-6, momentum=0.9),  # the paper's APN learning rate
    "sgd1e-5": lambda p: torch.optim.SGD(p, lr=1e-5, momentum=0.9),
    "sgd1e-4": lambda p: torch.optim.SGD(p, lr=1e-4, momentum=0.9),
    "sgd1e-3": lambda p: torch.optim.SGD(p, lr=1e-3, momentum=0.9),
    "adam1e-5": lambda p: torch.optim.Adam(p, lr=1e-5),
    "adam1e-4": lambda p: torch.optim.Adam(p, lr=1e-4),  # configs/racnn_{cub,dogs,cars}.yaml
}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="vgg19")
    p.add_argument("--size", type=int, default=448, help="scale 1's input side (paper: 448)")
    p.add_argument("--apn-hidden", type=int, default=512)
    p.add_argument("--apn-pool", type=int, default=7)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=500, help="the paper configs' apn_pretrain_steps")
    p.add_argument("--feature-scales", type=float, nargs="+", default=[0.1, 1.0, 10.0, 100.0, 1000.0])
    p.add_argument("--optimisers", nargs="+", default=list(OPTIMISERS), choices=list(OPTIMISERS))
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    L = a.size
    net = RACNN(200, backbone=a.backbone, weights=None, num_scales=2, input_sizes=[L, L // 2],
                apn_hidden=a.apn_hidden, apn_pool=a.apn_pool)
    m = RACNNLitModule(net, apn_pretrain_steps=a.steps, apn_pretrain_side=0.5).eval()
    g = torch.Generator().manual_seed(1)
    images, side = torch.zeros(a.batch, 3, L, L), L // 4
    for b in range(a.batch):
        i, j = torch.randint(0, L - side, (2,), generator=g).tolist()
        images[b, :, i:i + side, j:j + side] = torch.rand(3, side, side, generator=g)
    with torch.no_grad():
        out = m.net(images, detach_boxes=True, boxes_only=True)
    features, targets = out.features[0], m.pretrain_targets(out)[0]
    apn = m.net.apns[0]
    start = {k: v.clone() for k, v in apn.state_dict().items()}
    for scale in a.feature_scales:
        scaled = features * scale
        for name in a.optimisers:
            apn.load_state_dict(start)
            opt = OPTIMISERS[name](apn.parameters())
            losses = []
            for _ in range(a.steps):
                loss = F.mse_loss(apn(scaled, L) / L, targets / L)
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(loss.item())
            with torch.no_grad():
                error = (apn(scaled, L) - targets).abs().mean().item()
            print(json.dumps({
                "benchmark": "apn_pretrain_lr", "backbone": a.backbone, "size": L, "steps": a.steps,
                "feature_scale": scale, "feature_mean": round(float(features.mean()) * scale, 5),
                "optimiser": name, "loss_start": round(losses[0], 5), "loss_end": round(losses[-1], 6),
                "box_error_px": round(error, 1),
            }), flush=True)


if __name__ == "__main__":
    main()
