"""Glimpse op vs a straightforward per-sample Python loop of slicing and pooling.

    python benchmarks/glimpse_speed.py [--batch 128] [--image 60] [--size 12] [--scales 3]

Both run in this process, on the same batch, with locations on pixel boundaries (where the
two are equal, which is checked). Prints one JSON line with the median time of each (ms) and
the speed-up; ``--no-tune-allocator`` measures with glibc's default allocator settings.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from raccn.ops import glimpse
from raccn.runtime import tune_cpu_allocator


def loop_glimpse(images: torch.Tensor, loc: torch.Tensor, size: int, scales: int, factor: int) -> torch.Tensor:
    """The reference: one sample at a time, zero-pad, slice, average-pool (integer geometry)."""
    B, _, H, W = images.shape
    pad = size * factor ** (scales - 1)
    out = []
    for b in range(B):
        padded = F.pad(images[b], (pad, pad, pad, pad))
        cx = (float(loc[b, 0]) + 1) / 2 * W
        cy = (float(loc[b, 1]) + 1) / 2 * H
        patches = []
        for j in range(scales):
            side, k = size * factor**j, factor**j
            x0, y0 = round(cx - side / 2) + pad, round(cy - side / 2) + pad
            patch = padded[:, y0 : y0 + side, x0 : x0 + side]
            patches.append(F.avg_pool2d(patch, k) if k > 1 else patch)
        out.append(torch.stack(patches))
    return torch.stack(out)


def median_ms(fn, repeats: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--image", type=int, default=60)
    p.add_argument("--size", type=int, default=12)
    p.add_argument("--scales", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds; medians over all")
    p.add_argument("--no-tune-allocator", action="store_true")
    a = p.parse_args()
    tuned = False if a.no_tune_allocator else tune_cpu_allocator()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    images = torch.rand(a.batch, 1, a.image, a.image)
    loc = torch.randint(0, a.image, (a.batch, 2)).float() / a.image * 2 - 1  # pixel boundaries
    ref = loop_glimpse(images, loc, a.size, a.scales, 2)
    ours = glimpse(images, loc, a.size, a.scales, 2.0)
    err = (ref - ours).abs().max().item()
    assert err < 1e-5, f"op and loop disagree by {err}"
    loops, ops = [], []
    with torch.no_grad():
        for _ in range(a.rounds):
            loops.append(median_ms(lambda: loop_glimpse(images, loc, a.size, a.scales, 2), 20))
            ops.append(median_ms(lambda: glimpse(images, loc, a.size, a.scales, 2.0), 200))
    loop_ms, op_ms = statistics.median(loops), statistics.median(ops)
    print(json.dumps({
        "benchmark": "glimpse_speed", "batch": a.batch, "image": a.image, "size": a.size,
        "scales": a.scales, "threads": a.threads, "allocator_tuned": tuned,
        "loop_ms": round(loop_ms, 3), "op_ms": round(op_ms, 3), "speedup": round(loop_ms / op_ms, 2),
        "max_abs_diff": err, "torch": torch.__version__, "machine": platform.machine(),
    }))


if __name__ == "__main__":
    main()
