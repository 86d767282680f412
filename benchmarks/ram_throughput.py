"""RAM training and evaluation throughput (images/s), data already in memory, and where a step goes.

    python benchmarks/ram_throughput.py                                   # 28x28, 6 glimpses of 8x8
    python benchmarks/ram_throughput.py --image 60 --patch 12 --scales 3  # 60x60, 3 scales of 12x12
    python benchmarks/ram_throughput.py --mode eval --mc 10               # evaluation, M rollouts
    python benchmarks/ram_throughput.py --mode eval --model dram --mc 10  # DRAM, 54x54 RGB, 5 digits

Training (``--mode train``), in this process, on one in-memory batch set (random images; the
content does not change the cost):

- ``plain_ips``: a bare PyTorch loop (no Trainer) of ``RAMLitModule.training_loss`` (forward and
  hybrid loss), backward and Adam step
  (``fused=True``, as in ``configs/ram_*.yaml``);
- ``lightning_ips``: ``RAMLitModule`` with the same optimiser under ``pl.Trainer.fit`` (no
  logger, no checkpoints, no progress bar, no validation) on a ``DataLoader`` over the batches in
  memory, read a batch at a time (``__getitems__``) as the package's data modules read theirs,
  timed from the first to the last measured batch by a callback;
- the share of the plain step spent in the glimpse op (``prepare_glimpses`` once and its T
  forward calls, as in the model; nothing upstream of it needs a gradient), in the recurrent core
  (T forward+backward steps) and, for Lightning, the extra time per step over the plain loop
  (``lightning_overhead``).

``--compile`` measures both with the forward and loss through ``torch.compile`` (as
``RAMLitModule(compile=True)`` does: the glimpse planes eagerly, then two graphs, the forward and
the loss; compiling happens in the warm-up steps, outside the timing).

Evaluation (``--mode eval``): ``RAMLitModule.predict_proba`` (M Monte Carlo rollouts, softmax
averaged) under ``torch.no_grad``, images/s.

DRAM evaluation (``--model dram --mode eval``; there is no DRAM training mode yet):
``DeepRecurrentAttentionModel.predict_proba(images, mc=M)`` (the M rollouts as one forward over
the repeated batch, under ``torch.no_grad``), images/s, on random images. The defaults follow the
paper's SVHN multi-digit setup (Ba et al. 2015, after Goodfellow et al. 2014: 54x54 crops of the
colour house-number images, up to 5 digits, so 10 digits + EOS = 11 outputs per slot) scaled for
a CPU: S=5 slots x N=3 glimpses (T=15), each 2 scales of 12x12 (12 and 24 pixels),
glimpse ConvNet 32-32-64 channels (5x5, 3x3, 3x3), glimpse features and both LSTMs 256 wide,
context network on a 32x32 downsampled image with 16-32-64 channels. ``--image --channels
--patch --scales --hidden --digits --glimpses-per-digit --conv-channels --context
--context-channels --glimpse-dim`` change them.

Prints one JSON line; medians over ``--repeats`` rounds.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EMAWeightAveraging
from torch.utils.data import DataLoader

from raccn.datamodules.synthetic import TranslatedClutteredDataset, collate_canvases
from raccn.lit import RAMLitModule
from raccn.models import DRAM, RecurrentAttentionModel
from raccn.ops import glimpse
from raccn.runtime import skip_futile_nvml_probe, tune_cpu_allocator


def build(args) -> RAMLitModule:
    net = RecurrentAttentionModel(
        num_classes=10, in_channels=1, glimpses=args.glimpses, patch_size=args.patch, scales=args.scales,
        scale_factor=2.0, glimpse_hidden=128, glimpse_dim=256, hidden_size=args.hidden, core=args.core,
        std=0.17, init_loc="random",
    )
    return RAMLitModule(net, mc_samples=args.mc, optimizer=fused_adam, compile=getattr(args, "compile", False))


def fused_adam(params) -> torch.optim.Adam:
    """The configs' optimiser (``configs/ram_*.yaml``: ``fused: true``), Adam at the paper's lr."""
    return torch.optim.Adam(params, lr=1e-3, fused=True)


def build_dram(args) -> DRAM:
    return DRAM(
        num_classes=10, in_channels=args.channels, max_digits=args.digits,
        glimpses_per_digit=args.glimpses_per_digit, patch_size=args.patch, scales=args.scales,
        scale_factor=2.0, conv_channels=args.conv_channels, glimpse_dim=args.glimpse_dim,
        hidden_size=args.hidden, context_size=args.context, context_channels=args.context_channels,
        std=0.17,
    )


def dram_eval(args) -> dict:
    """DRAM evaluation images/s (``predict_proba`` with ``--mc`` rollouts), one result dict."""
    torch.manual_seed(0)
    model = build_dram(args).eval()
    images = torch.rand(args.batch, args.channels, args.image, args.image)

    def evaluate() -> None:
        model.predict_proba(images, mc=args.mc)  # no_grad inside

    secs = [timed(evaluate, args.steps) for _ in range(args.repeats)]
    return {"bench": "dram_eval", "batch": args.batch, "image": args.image, "channels": args.channels,
            "patch": args.patch, "scales": args.scales, "digits": args.digits,
            "glimpses_per_digit": args.glimpses_per_digit, "glimpses": model.glimpses,
            "conv_channels": list(args.conv_channels), "glimpse_dim": args.glimpse_dim,
            "hidden": args.hidden, "context": args.context, "context_channels": list(args.context_channels),
            "mc": args.mc, "threads": args.threads, "torch": torch.__version__,
            "machine": platform.processor() or platform.machine(),
            "eval_ips": round(args.batch / statistics.median(secs))}


# Per-model defaults of the shared options (None on the command line = take these).
DEFAULTS = {
    "ram": {"image": 28, "channels": 1, "patch": 8, "scales": 1, "hidden": 256},
    "dram": {"image": 54, "channels": 3, "patch": 12, "scales": 2, "hidden": 256},
}


def channel_list(text: str) -> tuple[int, ...]:
    return tuple(int(c) for c in text.split(","))


def timed(fn, steps: int) -> float:
    """Seconds per call of ``fn`` over ``steps`` calls (after 3 warm-up calls)."""
    for _ in range(3):
        fn()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - t0) / steps


def plain_step_fn(module: RAMLitModule, images: torch.Tensor, target: torch.Tensor, compile: bool = False):
    """One bare training step (no Trainer): ``RAMLitModule``'s training loss (compiled as
    ``compile=True`` compiles it), backward, fused Adam step."""
    opt = fused_adam(module.parameters())
    loss_fn = module.compiled_training_loss if compile else module.training_loss

    def step() -> None:
        loss = loss_fn(images, target).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


class _StepTimer(pl.Callback):
    """Wall time from the start of batch ``skip`` to the end of the last batch."""

    def __init__(self, skip: int) -> None:
        self.skip, self.t0, self.t1, self.n = skip, None, None, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.skip:
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx >= self.skip:
            self.t1, self.n = time.perf_counter(), batch_idx - self.skip + 1


def lightning_seconds_per_step(args, images: torch.Tensor, target: torch.Tensor) -> float:
    module = build(args)
    n = args.steps + 3
    # the plain-MNIST path of the data modules: canvas = image, read a batch at a time
    data = TranslatedClutteredDataset(images[:, 0].repeat(n, 1, 1), target.repeat(n), canvas_size=args.image)
    loader = DataLoader(data, batch_size=args.batch, shuffle=False, num_workers=0, collate_fn=collate_canvases)
    timer = _StepTimer(skip=3)
    trainer = pl.Trainer(
        max_steps=n, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
        callbacks=[timer] + ([EMAWeightAveraging(decay=args.ema)] if args.ema else []), num_sanity_val_steps=0,
    )
    trainer.fit(module, train_dataloaders=loader)
    return (timer.t1 - timer.t0) / timer.n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=("train", "eval"), default="train")
    p.add_argument("--model", choices=("ram", "dram"), default="ram",
                   help="ram (default) or dram (Ba et al. 2015; --mode eval only)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--image", type=int, default=None, help="image side (ram 28, dram 54)")
    p.add_argument("--channels", type=int, default=None, help="image channels (dram only: 3, SVHN colour)")
    p.add_argument("--patch", type=int, default=None, help="glimpse patch side (ram 8, dram 12)")
    p.add_argument("--scales", type=int, default=None, help="patches per glimpse (ram 1, dram 2)")
    p.add_argument("--glimpses", type=int, default=6, help="ram only; dram: --digits x --glimpses-per-digit")
    p.add_argument("--core", default="rnn", help="ram only (dram: two LSTMs)")
    p.add_argument("--hidden", type=int, default=None,
                   help="core width (ram 256, paper 256, configs/ram_mnist.yaml 512; dram 256, both LSTMs)")
    p.add_argument("--digits", type=int, default=5, help="dram: label slots S (SVHN: 5)")
    p.add_argument("--glimpses-per-digit", type=int, default=3, help="dram: glimpses N per label")
    p.add_argument("--conv-channels", type=channel_list, default=(32, 32, 64),
                   help="dram: glimpse ConvNet channels, comma-separated")
    p.add_argument("--glimpse-dim", type=int, default=256, help="dram: width of the glimpse feature g_n")
    p.add_argument("--context", type=int, default=32, help="dram: side of the context network's coarse image")
    p.add_argument("--context-channels", type=channel_list, default=(16, 32, 64),
                   help="dram: context ConvNet channels, comma-separated")
    p.add_argument("--ema", type=float, default=0.0, help="add Lightning's EMAWeightAveraging with this decay")
    p.add_argument("--mc", type=int, default=1, help="Monte Carlo rollouts (eval)")
    p.add_argument("--steps", type=int, default=50, help="timed steps per round")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-lightning", action="store_true", help="skip the Trainer measurement")
    p.add_argument("--compile", action="store_true",
                   help="ram training: torch.compile the forward and loss (RAMLitModule(compile=True)); "
                        "compiling happens in the warm-up steps, outside the timing")
    args = p.parse_args()
    for name, value in DEFAULTS[args.model].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.model == "ram" and args.channels != 1:
        p.error("--channels is for --model dram (the RAM benchmark uses grey images)")
    if args.model == "dram" and args.mode != "eval":
        p.error("--model dram measures evaluation only: add --mode eval")
    tune_cpu_allocator()
    skip_futile_nvml_probe()
    torch.set_num_threads(args.threads)
    if args.model == "dram":
        print(json.dumps(dram_eval(args)))
        return
    torch.manual_seed(0)
    images = torch.rand(args.batch, 1, args.image, args.image)
    target = torch.randint(0, 10, (args.batch,))
    module = build(args)
    result = {"bench": f"ram_{args.mode}", "batch": args.batch, "image": args.image, "patch": args.patch,
              "scales": args.scales, "glimpses": args.glimpses, "core": args.core, "hidden": args.hidden,
              "ema": args.ema, "compile": args.compile, "threads": args.threads,
              "torch": torch.__version__, "machine": platform.processor() or platform.machine()}
    if args.mode == "eval":
        module.eval()
        result["mc"] = args.mc

        def evaluate() -> None:
            with torch.no_grad():
                module.predict_proba(images)

        secs = [timed(evaluate, args.steps) for _ in range(args.repeats)]
        result["eval_ips"] = round(args.batch / statistics.median(secs))
        print(json.dumps(result))
        return

    step = plain_step_fn(module, images, target, args.compile)
    plain = [timed(step, args.steps) for _ in range(args.repeats)]

    # components of the plain step
    net = module.net
    locs = torch.rand(args.glimpses, args.batch, 2) * 2 - 1
    gn = net.glimpse_net

    def glimpse_calls() -> None:  # as in the model: the per-batch part once, then T glimpses
        source = gn.prepare(images)
        for t in range(args.glimpses):
            glimpse(images, locs[t], gn.patch_size, gn.scales, gn.scale_factor, source)

    g_in = torch.randn(args.glimpses, args.batch, net.core.cell.input_size)

    def core_calls() -> None:
        state = None
        hs = []
        for t in range(args.glimpses):
            state = net.core(g_in[t], state)
            hs.append(state[0])
        torch.stack(hs).sum().backward()

    t_glimpse = statistics.median(timed(glimpse_calls, args.steps) for _ in range(args.repeats))
    t_core = statistics.median(timed(core_calls, args.steps) for _ in range(args.repeats))
    t_plain = statistics.median(plain)
    result.update({
        "plain_ips": round(args.batch / t_plain),
        "plain_step_ms": round(1e3 * t_plain, 3),
        "glimpse_share": round(t_glimpse / t_plain, 3),
        "core_share": round(t_core / t_plain, 3),
    })
    if not args.no_lightning:
        light = [lightning_seconds_per_step(args, images, target) for _ in range(args.repeats)]
        t_light = statistics.median(light)
        result.update({
            "lightning_ips": round(args.batch / t_light),
            "lightning_step_ms": round(1e3 * t_light, 3),
            "lightning_overhead": round((t_light - t_plain) / t_light, 3),
        })
    print(json.dumps(result))


if __name__ == "__main__":
    main()
