"""DRAM training throughput with ``configs/dram_svhn.yaml``'s model on the CPU, and where a step goes.

    python benchmarks/dram_svhn_profile.py --threads 1

The network is the config's (``model.init_args.net``: 54x54 RGB, 5 slots x 3 glimpses = 15
glimpses of 2 scales of 12x12, glimpse ConvNet 64-64-128, LSTMs 512, context network on 32x32),
with ``DRAMLitModule``'s settings and Adam at the config's lr; random in-memory images and
random 1-5 digit targets (the content does not change the cost). One JSON line:

- ``plain_ips``: a bare loop of ``DRAMLitModule.training_loss`` (forward, hybrid loss), backward
  and Adam step, batch ``--batch`` (128);
- ``lightning_ips``: the same module under ``pl.Trainer.fit`` (no logger, checkpoints, progress
  bar or validation), fed the same batches already made (a ``DataLoader`` over the list of
  batches, ``batch_size=None``: no collation), timed from the start of batch 3 to the end of
  the last by a callback; ``lightning_share`` = (Lightning step - plain step) / Lightning step;
- the shares of the plain step, each part timed alone on inputs of the step's shapes, forward
  and backward where the step back-propagates through it, medians over ``--repeats`` rounds
  (timing, not the profiler: autograd runs the backward outside any ``record_function`` scope,
  so a profiler's labels would hold the forward only): ``glimpse_op_share``
  (``prepare_glimpses`` once and the 15 ``raccn.ops.glimpse`` calls; forward only: neither the
  images nor the sampled locations need a gradient), ``glimpse_convnet_share`` (the glimpse
  network's ConvNet, "what" and "where" layers on 15 glimpses, forward and backward),
  ``context_share`` (the context network, forward and backward), ``lstm_share`` (15 steps of the
  classification LSTM and 14 of the location LSTM, forward and backward), ``optimizer_share``
  (one Adam step) and ``parts_sum`` (their sum over the plain step; the rest is the emission,
  baseline and classification heads, the loss and the bookkeeping between the parts).

Each of ``--repeats`` rounds times the plain step, then each part, then the Lightning step
(``--steps`` steps each, after 3 warm-up steps), and the shares are taken within a round, so
that a host whose speed drifts (a shared machine) moves a round's numerator and denominator
together; the medians over the rounds are reported, with ``lightning_share_rounds``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
from pathlib import Path

import pytorch_lightning as pl
import torch
import yaml
from ram_throughput import _StepTimer, timed
from torch.utils.data import DataLoader

from raccn.lit import DRAMLitModule
from raccn.models import DRAM
from raccn.ops import glimpse
from raccn.runtime import skip_futile_nvml_probe, tune_cpu_allocator

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "dram_svhn.yaml"


def build(overrides: dict | None = None) -> DRAMLitModule:
    """The config's ``DRAMLitModule`` (10 classes, Adam at the config's lr) with ``overrides`` of
    the net's settings."""
    with open(CONFIG) as fh:
        model = yaml.safe_load(fh)["model"]["init_args"]
    net = DRAM(num_classes=10, **{**model["net"]["init_args"], **(overrides or {})})
    lr = model["optimizer"]["init_args"]["lr"]
    module = DRAMLitModule(net, reward=model["reward"], mc_samples=model["mc_samples"],
                           policy_lr_factor=model["policy_lr_factor"],
                           optimizer=lambda p: torch.optim.Adam(p, lr=lr))
    return module


def batch_of(net: DRAM, batch: int, side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images Tensor[B, C, side, side] and targets Tensor[B, S] of 1..S digits then EOS."""
    S = net.max_digits
    lengths = torch.randint(1, S + 1, (batch,))
    digits = torch.randint(0, net.num_classes, (batch, S))
    return torch.rand(batch, net.in_channels, side, side), torch.where(torch.arange(S) < lengths[:, None], digits, net.eos_index)


def part_timers(net: DRAM, images: torch.Tensor) -> dict:
    """Callables timing each part of a step alone (module docstring), on the step's shapes."""
    B, T, gn = images.shape[0], net.glimpses, net.glimpse_net
    locs = torch.rand(T, B, 2) * 2 - 1

    def glimpse_op() -> None:
        source = gn.prepare(images)
        for t in range(T):
            glimpse(images, locs[t], gn.patch_size, gn.scales, gn.scale_factor, source)

    with torch.no_grad():
        source = gn.prepare(images)
        rhos = [glimpse(images, locs[t], gn.patch_size, gn.scales, gn.scale_factor, source) for t in range(T)]

    def glimpse_convnet() -> None:
        torch.stack([gn.fuse(rhos[t], locs[t]) for t in range(T)]).sum().backward()

    def context() -> None:
        net.context_net(images).sum().backward()

    hidden = net.core.cell.hidden_size
    g_in = torch.randn(T, B, net.core.cell.input_size)
    c_I = torch.randn(B, hidden)

    def lstms() -> None:
        r1, r2, outs = None, (c_I, torch.zeros_like(c_I)), []
        for t in range(T):
            r1 = net.core(g_in[t], r1)
            outs.append(r2[0])
            if t < T - 1:
                r2 = net.location_core(r1[0], r2)
        (torch.stack(outs).sum() + r1[0].sum()).backward()

    return {"glimpse_op": glimpse_op, "glimpse_convnet": glimpse_convnet, "context": context, "lstm": lstms}


def lightning_seconds_per_step(args, batches: list) -> float:
    module = build(args.net)
    timer = _StepTimer(skip=3)
    trainer = pl.Trainer(
        max_steps=len(batches), accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
        callbacks=[timer],
    )
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))
    return (timer.t1 - timer.t0) / timer.n


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--image", type=int, default=54, help="image side (the config's data.image_size)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per round")
    p.add_argument("--repeats", type=int, default=3, help="rounds (medians are reported)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--net", type=json.loads, default=None,
                   help='JSON overrides of the config\'s net settings (tests: small widths), e.g. \'{"hidden_size": 64}\'')
    p.add_argument("--no-lightning", action="store_true", help="skip the Trainer measurement")
    args = p.parse_args(argv)
    tune_cpu_allocator()
    skip_futile_nvml_probe()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    module = build(args.net)
    net = module.net.train()
    images, targets = batch_of(net, args.batch, args.image)
    optimizer = module.configure_optimizers()  # no scheduler: the optimiser itself

    def step() -> None:
        loss = module.training_loss(images, targets).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    parts = {**part_timers(net, images), "optimizer": optimizer.step}
    batches = [batch_of(net, args.batch, args.image) for _ in range(args.steps + 3)]
    rounds = []  # per round: the plain step, each part, the Lightning step, one after the other
    for _ in range(args.repeats):
        r = {"plain": timed(step, args.steps)}
        r.update({name: timed(fn, args.steps) for name, fn in parts.items()})
        if not args.no_lightning:
            r["lightning"] = lightning_seconds_per_step(args, batches)
        rounds.append(r)
    t_plain = statistics.median(r["plain"] for r in rounds)
    result = {"bench": "dram_svhn_profile", "config": CONFIG.name, "batch": args.batch, "image": args.image,
              "channels": net.in_channels, "glimpses": net.glimpses,
              "params": sum(p.numel() for p in net.parameters()), "threads": args.threads,
              "repeats": args.repeats, "steps": args.steps,
              "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
              "plain_ips": round(args.batch / t_plain, 1), "plain_step_ms": round(1e3 * t_plain, 1)}
    # shares: each round's part over the same round's plain step, then the median over rounds
    result.update({f"{name}_share": round(statistics.median(r[name] / r["plain"] for r in rounds), 3)
                   for name in parts})
    result["parts_sum"] = round(statistics.median(sum(r[n] for n in parts) / r["plain"] for r in rounds), 3)
    if not args.no_lightning:
        t_light = statistics.median(r["lightning"] for r in rounds)
        result.update({"lightning_ips": round(args.batch / t_light, 1), "lightning_step_ms": round(1e3 * t_light, 1),
                       "lightning_share": round(statistics.median(1 - r["plain"] / r["lightning"] for r in rounds), 3),
                       "lightning_share_rounds": [round(1 - r["plain"] / r["lightning"], 3) for r in rounds]})
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
