"""RA-CNN training step vs the plain forward+backward of its trunks, parameters, peak memory.

    python benchmarks/racnn_speed.py --backbone vgg19 --sizes 448 224 224 --batch 2
    python benchmarks/racnn_speed.py --backbone resnet18 --sizes 448 224 224 --batch 8

In one process: (a) the reference, each scale's trunk alone (global pooling + linear + CE) run
forward+backward on random inputs of that scale's size, summed over the scales; (b) one step of
the RA-CNN model in the classification phase (forward through all scales with APNs and zooms,
sum of per-scale + fused CE, backward) and in the ranking phase (forward, ranking loss, backward
to the APNs through the frozen trunks). Medians over ``--repeats`` alternating rounds.
Peak memory is the process's peak RSS (``ru_maxrss``); run once per configuration.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time

import torch
import torch.nn.functional as F

from raccn.losses import ranking_loss
from raccn.models import RACNN
from raccn.runtime import tune_cpu_allocator


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--backbone", default="vgg19")
    p.add_argument("--sizes", type=int, nargs="+", default=[448, 224, 224])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--classes", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--channels_last", action="store_true", help="RACNN(channels_last=True)")
    p.add_argument("--mmap-large-blocks", action="store_true",
                   help="leave glibc's mmap of blocks > 32 MB on (tune_cpu_allocator(mmap_max=None))")
    a = p.parse_args()
    tune_cpu_allocator(mmap_max=None if a.mmap_large_blocks else 0)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = RACNN(a.classes, backbone=a.backbone, weights=None, num_scales=len(a.sizes), input_sizes=a.sizes,
                  channels_last=a.channels_last)
    B, y = a.batch, torch.randint(0, a.classes, (a.batch,))
    images = torch.rand(B, 3, a.sizes[0], a.sizes[0])
    inputs = [torch.rand(B, 3, s, s) for s in a.sizes]
    trainable = lambda mods: sum(p.numel() for m in mods for p in m.parameters())

    def trunks_only():
        for s, x in enumerate(inputs):
            model.zero_grad(set_to_none=True)
            f = model.trunk_map(s, x, "last").mean((2, 3))  # in the model's memory format
            F.cross_entropy(model.classifiers[s](f), y).backward()

    def cls_step():
        model.zero_grad(set_to_none=True)
        out = model(images, detach_boxes=True)
        loss = sum(F.cross_entropy(z, y) for z in out.logits) + F.cross_entropy(out.fused_logits, y)
        loss.backward()

    def rank_step():
        for m in (model.trunks, model.classifiers):
            m.requires_grad_(False)
        model.zero_grad(set_to_none=True)
        out = model(images)
        ranking_loss(out.logits, y).backward()
        for m in (model.trunks, model.classifiers):
            m.requires_grad_(True)

    for fn in (trunks_only, cls_step, rank_step):  # warm-up
        fn()
    ref, cls, rank = [], [], []
    for _ in range(a.repeats):
        ref.append(timed(trunks_only))
        cls.append(timed(cls_step))
        rank.append(timed(rank_step))
    ref_s, cls_s, rank_s = (statistics.median(v) for v in (ref, cls, rank))
    paired = [c / r for c, r in zip(cls, ref)]  # each step over the reference measured just before it
    params = sum(p.numel() for p in model.parameters())
    print(json.dumps({
        "benchmark": "racnn_speed", "backbone": a.backbone, "sizes": a.sizes, "batch": B,
        "threads": a.threads, "channels_last": a.channels_last, "mmap_large_blocks": a.mmap_large_blocks, "trunks_fwd_bwd_s": round(ref_s, 3), "cls_step_s": round(cls_s, 3),
        "rank_step_s": round(rank_s, 3), "cls_ratio": round(cls_s / ref_s, 3),
        "rank_ratio": round(rank_s / ref_s, 3),
        "cls_ratio_rounds": [round(x, 3) for x in paired],  # host drift between rounds cancels
        "cls_ratio_paired_median": round(statistics.median(paired), 3),
        "params_M": round(params / 1e6, 2),
        "cls_phase_trained_M": round(trainable([model.trunks, model.classifiers]) / 1e6 + (trainable([model.fuse]) / 1e6 if model.fuse is not None else 0), 2),
        "apn_trained_M": round(trainable([model.apns]) / 1e6, 2),
        "peak_rss_GiB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "s_per_image_cls": round(cls_s / B, 3), "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
