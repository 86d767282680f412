"""What reading a number costs: DRAM against a plain CNN, and how each cost grows with the image.

    python benchmarks/dram_cost.py --plot docs/dram_cost.png

The two networks are those of ``configs/dram_mnist_sequences.yaml`` (``raccn.models.DRAM``) and
``configs/cnn_mnist_sequences.yaml`` (``raccn.models.SequenceCNN``), built from the configs'
``net`` settings with 10 classes, and measured unchanged on square canvases of each
``--canvases`` side (random 1-channel images: the content does not change the cost). DRAM's
glimpses and context image have fixed sizes, so its arithmetic does not depend on the canvas;
the CNN runs the same conv stack over every pixel and average-pools its last map to a fixed grid,
so its parameters are fixed and its arithmetic grows with the pixels.

One JSON line per (model, canvas):

- ``params``: trainable parameters;
- ``macs``: multiply-adds per image of one forward pass (DRAM: one rollout), counted by
  ``torch.utils.flop_counter.FlopCounterMode`` (convolutions, matrix products, the LSTM cells'
  matrix products) as its FLOPs / 2, plus the glimpse op's bilinear sampling, which the counter
  does not count (``F.grid_sample``, used by ``raccn.ops.glimpse``): counted by hand as 4
  multiply-adds per sampled value (``grid_sample_macs``, included in ``macs``). Not counted
  anywhere: element-wise work (activations, pooling, batch norm, the glimpse op's box sums and
  the context network's down-sampling; the last two read every pixel once per image);
- ``train_ips``: training images/s, one step = ``DRAMLitModule.training_loss`` (forward and
  loss: DRAM's hybrid loss; the CNN's has no REINFORCE terms, so it is the cross-entropy),
  backward, Adam step; plain loop, no Trainer;
- ``infer_ips``: inference images/s, ``predict_proba`` (softmax; DRAM one rollout) in eval mode
  under ``torch.no_grad``; ``infer_mc_ips``: DRAM with the config's ``mc_samples`` rollouts
  averaged (what its validation and test run).

Batch ``--batch`` (64), ``--threads`` (1) threads, after one warm-up call ``--rounds`` rounds
of ``--steps`` calls each, the median round. ``--plot PATH`` draws multiply-adds and training
images/s against the canvas side, log-log, as a PNG. ``--cnn`` / ``--dram`` change the
networks' settings (JSON), e.g. ``--models cnn --cnn '{"channels_last": false}'``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from raccn.lit import DRAMLitModule
from raccn.runtime import tune_cpu_allocator

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
MODELS = {"dram": "dram_mnist_sequences.yaml", "cnn": "cnn_mnist_sequences.yaml"}


def grid_sample_flops(input_shape, grid_shape, *args, out_shape=None, **kwargs) -> int:
    """``F.grid_sample``, bilinear: each of the N * C * H_out * W_out values is 4 multiply-adds
    (2 FLOPs each) of 4 neighbours by their weights."""
    N, C, H, W = out_shape
    return 2 * 4 * N * C * H * W


def config_model(name: str, overrides: dict | None = None, num_classes: int = 10) -> tuple[DRAMLitModule, int]:
    """The ``DRAMLitModule`` of a config (net as its ``net`` settings updated by ``overrides``,
    Adam at its lr) and the config's ``mc_samples``."""
    with open(CONFIGS / MODELS[name]) as fh:
        model = yaml.safe_load(fh)["model"]["init_args"]
    module_name, _, cls = model["net"]["class_path"].rpartition(".")
    net = getattr(importlib.import_module(module_name), cls)(
        num_classes=num_classes, **{**model["net"]["init_args"], **(overrides or {})})
    lr = model["optimizer"]["init_args"]["lr"]
    lit = DRAMLitModule(net, mc_samples=model.get("mc_samples", 1), policy_lr_factor=model.get("policy_lr_factor", 1.0),
                        optimizer=lambda p: torch.optim.Adam(p, lr=lr))
    return lit, model.get("mc_samples", 1)


def count_macs(net: torch.nn.Module, images: torch.Tensor) -> tuple[float, float]:
    """(multiply-adds per image, of which the glimpse op's bilinear sampling) of one forward."""
    aten = torch.ops.aten
    counter = FlopCounterMode(display=False, custom_mapping={aten.grid_sampler_2d: grid_sample_flops})
    with torch.no_grad(), counter:
        net.eval()(images, True)
    B = images.shape[0]
    sampled = counter.get_flop_counts()["Global"].get(aten.grid_sampler_2d, 0)
    return counter.get_total_flops() / 2 / B, sampled / 2 / B


def median_seconds(fn, steps: int, rounds: int) -> float:
    """Median over ``rounds`` of the seconds per call of ``fn`` (``steps`` calls per round),
    after one warm-up call."""
    fn()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        times.append((time.perf_counter() - t0) / steps)
    return statistics.median(times)


def measure(name: str, canvas: int, args) -> dict:
    torch.manual_seed(0)
    overrides = args.cnn if name == "cnn" else args.dram
    lit, mc = config_model(name, overrides)
    net = lit.net
    images = torch.rand(args.batch, 1, canvas, canvas)
    lengths = torch.randint(1, net.max_digits + 1, (args.batch,))
    slots = torch.arange(net.max_digits)
    targets = torch.where(slots < lengths[:, None], torch.randint(0, 10, (args.batch, net.max_digits)), net.eos_index)
    macs, sampled = count_macs(net, images[:2])
    optimizer = lit.configure_optimizers()  # no scheduler: the optimiser itself

    def train_step() -> None:
        loss = lit.training_loss(images, targets).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def infer(m: int):
        def run() -> None:
            with torch.no_grad():
                net.predict_proba(images, mc=m)
        return run

    net.train()
    t_train = median_seconds(train_step, args.steps, args.rounds)
    net.eval()
    t_infer = median_seconds(infer(1), args.steps, args.rounds)
    row = {"bench": "dram_cost", "model": name, "config": MODELS[name], "overrides": overrides or {}, "canvas": canvas,
           "params": sum(p.numel() for p in net.parameters()), "macs": round(macs),
           "grid_sample_macs": round(sampled), "train_ips": round(args.batch / t_train, 1),
           "infer_ips": round(args.batch / t_infer, 1)}
    if name == "dram" and mc > 1:
        row["mc"] = mc
        row["infer_mc_ips"] = round(args.batch / median_seconds(infer(mc), args.steps, args.rounds), 1)
    row.update({"batch": args.batch, "threads": args.threads, "steps": args.steps, "rounds": args.rounds,
                "torch": torch.__version__, "machine": platform.processor() or platform.machine()})
    return row


def plot(rows: list[dict], path: str) -> None:
    """Multiply-adds per image and training images/s against the canvas side, log-log."""
    from PIL import Image

    from raccn.viz.curves import plot_lines

    panels = []
    for key, label in (("macs", "multiply-adds per image"), ("train_ips", "training images/s (1 thread)")):
        series = {name.upper(): ([r["canvas"] for r in rows if r["model"] == name],
                                 [r[key] for r in rows if r["model"] == name])
                  for name in dict.fromkeys(r["model"] for r in rows)}
        panels.append(plot_lines(series, "canvas side (px)", label, log=True))
    out = Image.new("RGB", (sum(p.width for p in panels), max(p.height for p in panels)), (255, 255, 255))
    x = 0
    for p in panels:
        out.paste(p, (x, 0))
        x += p.width
    out.save(path)


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["dram", "cnn"])
    p.add_argument("--canvases", nargs="+", type=int, default=[60, 100, 200, 400])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=3, help="calls per timed round")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds (the median is reported)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--plot", default=None, help="write the log-log plot to this PNG")
    p.add_argument("--cnn", type=json.loads, default=None,
                   help='JSON overrides of the CNN config\'s net settings, e.g. \'{"channels_last": false}\'')
    p.add_argument("--dram", type=json.loads, default=None, help="the same for DRAM")
    args = p.parse_args(argv)
    tune_cpu_allocator()
    torch.set_num_threads(args.threads)
    rows = []
    for canvas in args.canvases:
        for name in args.models:
            rows.append(measure(name, canvas, args))
            print(json.dumps(rows[-1]), flush=True)
    if args.plot:
        plot(rows, args.plot)
    return rows


if __name__ == "__main__":
    main()
