"""What each attention mechanism of the zoo costs on the RA-CNN quick start: parameters,
multiply-adds per image, training step time relative to the plain quick start, in one process.

    OMP_NUM_THREADS=1 python benchmarks/zoo_cost.py --threads 1
    python benchmarks/zoo_cost.py --rows plain se stn agcnn --rounds 5

Rows: ``plain`` (configs/racnn_quickstart.yaml), each ``configs/zoo/<name>.yaml`` layered on it
(the blocks, the STN cropper) and ``agcnn`` (configs/zoo/agcnn.yaml, a whole config), every
network built by the command line's parser exactly as ``train.py fit`` builds it (randomly
initialised), fed random images at the data module's canvas size and batch size.

- ``params``: every parameter of the network.
- ``macs_per_image``: one evaluation-mode forward of the batch under
  ``torch.utils.flop_counter.FlopCounterMode``, which counts convolutions, matrix products
  (``einsum`` included) and attention in FLOPs, 2 per multiply-add: MACs = FLOPs / 2, divided by
  the batch size; plus what it cannot see, SASA's ``q·k`` and weighted sum written as
  element-wise products summed (``NOT_COUNTED``, also given alone as
  ``macs_not_seen_by_counter``). Other element-wise work, pooling, interpolation and
  ``grid_sample`` are not counted.
- ``step_ratio``: RA-CNN rows, a classification-phase step (forward of both scales with the
  APN's box detached, per-scale + fused cross-entropy, backward, a step of the configured
  classification optimiser); ``rank_step_ratio``: a ranking-phase step (trunks and classifiers
  fixed in eval mode, ranking loss, backward to the APNs, a step of the APN optimiser). AG-CNN:
  each stage's step (``AGCNNLitModule.stage_logits``, the other branches fixed in eval mode,
  cross-entropy, backward, a step of the configured optimiser), ``step_ratio`` their mean
  weighted by the config's stage lengths (a run's average step). Every step time is divided by
  the plain classification step timed in the same round; rounds alternate over the rows; the
  ratio is the median over rounds (host drift between rounds cancels).

One JSON line per row on stdout; the table in Markdown on stderr.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from raccn.cli import main as cli_main
from raccn.layers import LocalSelfAttention2d
from raccn.lit import AGCNNLitModule
from raccn.lit.agcnn_module import STAGES
from raccn.lit.staged_training import eval_mode
from raccn.losses import ranking_loss

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(ROOT, "configs", "racnn_quickstart.yaml")
ZOO = os.path.join(ROOT, "configs", "zoo")


def all_rows() -> list[str]:
    names = sorted(os.path.basename(f)[:-5] for f in glob.glob(os.path.join(ZOO, "*.yaml")))
    return ["plain", *[n for n in names if n != "agcnn"], "agcnn"]


def build(row: str, root: str, overrides: list[str]):
    """The LightningModule, data module and trainer of ``row``, as ``train.py fit`` builds them."""
    configs = {"plain": [QUICKSTART], "agcnn": [os.path.join(ZOO, "agcnn.yaml")]}.get(
        row, [QUICKSTART, os.path.join(ZOO, f"{row}.yaml")])
    args = [a for c in configs for a in ("--config", c)]
    warnings.filterwarnings("ignore", "LightningCLI's args parameter")  # this script's own argv
    cli = cli_main([*args, "--trainer.logger=false", f"--trainer.default_root_dir={root}", *overrides], run=False)
    return cli.model, cli.datamodule, cli.trainer


def timed(fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def racnn_steps(model, images, target) -> dict[str, Callable[[], None]]:
    net = model.net
    cls_params = [*net.trunks.parameters(), *net.classifiers.parameters(),
                  *(net.fuse.parameters() if net.fuse is not None else [])]
    opt_cls, opt_apn = model.cls_optimizer(cls_params), model.apn_optimizer(net.apns.parameters())

    def cls_step():
        opt_cls.zero_grad(set_to_none=True)
        out = net(images, detach_boxes=True)
        loss = sum(F.cross_entropy(z, target) for z in out.logits) + F.cross_entropy(out.fused_logits, target)
        loss.backward()
        opt_cls.step()

    def rank_step():
        fixed = [net.trunks, net.classifiers]
        for m in fixed:
            m.requires_grad_(False)
        opt_apn.zero_grad(set_to_none=True)
        with eval_mode(*fixed):
            ranking_loss(net(images).logits, target, model.hparams.margin).backward()
        opt_apn.step()
        for m in fixed:
            m.requires_grad_(True)

    return {"step": cls_step, "rank_step": rank_step}


def agcnn_steps(model: AGCNNLitModule, images, target) -> dict[str, Callable[[], None]]:
    net = model.net

    def stage_step(stage: str) -> Callable[[], None]:
        params = [p for m in net.branches(stage) for p in m.parameters()]
        optimizer = model.optimizer(params)
        fixed = [m for s in STAGES if s != stage for m in net.branches(s)]

        def step():
            net.requires_grad_(False)
            for p in params:
                p.requires_grad_(True)
            optimizer.zero_grad(set_to_none=True)
            with eval_mode(*fixed):
                F.cross_entropy(model.stage_logits(stage, images), target).backward()
            optimizer.step()
            net.requires_grad_(True)
        return step

    return {f"{s}_step": stage_step(s) for s in STAGES}


# Multiply-adds FlopCounterMode does not see: SASA's logits q·k and its weighted sum of the values
# are element-wise products summed (over the k x k shifted views of k and v), C_out k^2 per pixel
# each; its relative logits q·r are einsums (2 C_out k per pixel), which it sees.
# module class -> f(module, input) -> multiply-adds of one call.
NOT_COUNTED = {
    LocalSelfAttention2d: lambda m, x: 2 * m.query.out_channels * m.kernel_size**2 * x[0, 0].numel() * len(x),
}


def macs(net, images) -> tuple[float, float]:
    """Multiply-adds per image of one evaluation-mode forward of ``images`` (Tensor[B, C, H, W]):
    ``(counted, not_counted)``, FlopCounterMode's FLOPs / 2 and those of ``NOT_COUNTED``."""
    extra = []
    hooks = [m.register_forward_hook(lambda m, args, out: extra.append(NOT_COUNTED[type(m)](m, args[0])))
             for m in net.modules() if type(m) in NOT_COUNTED]
    try:
        with torch.no_grad(), eval_mode(net), FlopCounterMode(display=False) as counter:
            net(images)
    finally:
        for h in hooks:
            h.remove()
    return counter.get_total_flops() / 2 / len(images), sum(extra) / len(images)


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", nargs="+", default=None, help="subset of rows (default: plain, every zoo config)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=None, help="default: the config's batch_size")
    p.add_argument("--image", type=int, default=None, help="image side; default: the data's canvas_size")
    p.add_argument("--override", nargs="*", default=[],
                   help="command-line overrides given to every config (e.g. for a tiny test run)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    rows = a.rows or all_rows()
    if "plain" not in rows:
        rows = ["plain", *rows]
    steps, info = {}, {}
    with tempfile.TemporaryDirectory() as root:
        for row in rows:
            torch.manual_seed(0)
            model, data, trainer = build(row, root, a.override)
            B, S = a.batch or data.hparams.batch_size, a.image or data.hparams.canvas_size
            g = torch.Generator().manual_seed(0)
            images = torch.rand(B, 3, S, S, generator=g)
            target = torch.randint(0, model.net.num_classes, (B,), generator=g)
            model.net.train()
            steps[row] = (agcnn_steps if isinstance(model, AGCNNLitModule) else racnn_steps)(model, images, target)
            weights = None
            if isinstance(model, AGCNNLitModule):  # steps per stage in the config's run
                total = math.ceil(data.hparams.train_size / B) * trainer.max_epochs
                weights = {f"{s}_step": model.schedule.length(i, total) for i, s in enumerate(STAGES)}
            counted, not_counted = macs(model.net, images)
            info[row] = {"params": sum(p.numel() for p in model.net.parameters()),
                         "macs_per_image": counted + not_counted, "macs_not_seen_by_counter": not_counted,
                         "batch": B, "image": S, "weights": weights}
            for fn in steps[row].values():  # warm-up
                fn()
        times = {row: {k: [] for k in steps[row]} for row in rows}
        for _ in range(a.rounds):
            for row in rows:  # alternating: every row once per round
                for kind, fn in steps[row].items():
                    times[row][kind].append(timed(fn))
    plain = times["plain"]["step"]
    results = []
    for row in rows:
        ratios = {k: [t / ref for t, ref in zip(v, plain)] for k, v in times[row].items()}
        weights = info[row].pop("weights")
        if weights:  # AG-CNN: a run's average step
            w = sum(weights.values())
            ratios["step"] = [sum(weights[k] * ratios[k][r] for k in weights) / w for r in range(a.rounds)]
        out = {"benchmark": "zoo_cost", "row": row, **info[row], "threads": a.threads, "rounds": a.rounds}
        out |= {f"{k}_ratio": round(statistics.median(v), 3) for k, v in ratios.items()}
        out |= {f"{k}_s": round(statistics.median(v), 3) for k, v in times[row].items()}
        out["plain_step_s"] = round(statistics.median(plain), 3)
        results.append(out)
        print(json.dumps(out), flush=True)
    print_table(results)
    return results


def print_table(results: list[dict]) -> None:
    lines = ["| row | parameters (M) | MACs / image (M) | step / plain step | other steps / plain step |",
             "| --- | ---: | ---: | ---: | --- |"]
    for r in results:
        others = ", ".join(f"{k[:-6]} {v:.2f}" for k, v in r.items() if k.endswith("_ratio") and k != "step_ratio")
        lines.append(f"| {r['row']} | {r['params'] / 1e6:.3f} | {r['macs_per_image'] / 1e6:.1f} | "
                     f"{r['step_ratio']:.2f} | {others} |")
    print("\n".join(lines), file=sys.stderr)


if __name__ == "__main__":
    main()
