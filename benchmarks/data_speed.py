"""MNIST batch building: one item at a time vs the batched ``__getitems__`` path.

    python benchmarks/data_speed.py [--data-dir ../shared/data/mnist] [--batch 128] [--threads 1]

For each variant (plain 28x28; translated and cluttered on a ``--canvas`` canvas, cluttered with
``--distractors`` patches of 8x8) the real MNIST files are loaded by ``MNISTDataModule`` and,
in this process, a batch of random indices is built the two ways a ``DataLoader`` with
``num_workers=0`` can build it, i.e. the time a training step waits for its batch:

- ``item_ms``: ``default_collate([dataset[i] for i in indices])`` (a loader over a data set
  without ``__getitems__``; each item is the batch of one);
- ``batched_ms``: ``collate_canvases(dataset.__getitems__(indices))`` (the loader now);
- ``loader_ms``: one batch of the data module's own ``DataLoader``, sampler included.

``train`` is the training split (placements drawn on every read), ``test`` the test split
(fixed placements, computed once per process: ``table_ms``, not part of ``batched_ms``). The
two ways are checked to give the same batches (test split; train split under the same seed).
Medians over ``--rounds`` rounds that alternate the two ways; prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable

import torch
from torch.utils.data import default_collate

from raccn.datamodules import MNISTDataModule
from raccn.datamodules.synthetic import TranslatedClutteredDataset, collate_canvases
from raccn.runtime import tune_cpu_allocator


def per_item(ds: TranslatedClutteredDataset, indices: list[int]) -> list[torch.Tensor]:
    return default_collate([ds[i] for i in indices])


def batched(ds: TranslatedClutteredDataset, indices: list[int]) -> list[torch.Tensor]:
    return collate_canvases(ds.__getitems__(indices))


def ms_per_call(fn: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e3


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def measure(dm: MNISTDataModule, split: str, args: argparse.Namespace) -> dict[str, float]:
    ds = {"train": dm.train_set, "test": dm.test_set}[split]
    indices = torch.randperm(len(ds))[: args.batch].tolist()
    start = time.perf_counter()
    batched(ds, indices[:1])  # fixed splits: builds the placement table
    table_ms = (time.perf_counter() - start) * 1e3
    torch.manual_seed(1)
    want = per_item(ds, indices)
    torch.manual_seed(1)
    if not same(want, batched(ds, indices)):
        raise AssertionError(f"{dm.variant} {split}: batched and per-item batches differ")
    items, batches = [], []
    for _ in range(args.rounds):
        idx = torch.randperm(len(ds))[: args.batch].tolist()
        items.append(ms_per_call(lambda idx=idx: per_item(ds, idx), args.item_calls))
        batches.append(ms_per_call(lambda idx=idx: batched(ds, idx), args.batched_calls))
    item_ms, batched_ms = statistics.median(items), statistics.median(batches)
    result = {
        "item_ms": round(item_ms, 3),
        "batched_ms": round(batched_ms, 3),
        "speedup": round(item_ms / batched_ms, 1),
    }
    if split == "train":
        loader = dm.train_dataloader()
        rounds = []
        for _ in range(args.rounds):
            it = iter(loader)
            rounds.append(ms_per_call(lambda it=it: next(it), args.batched_calls))
        result["loader_ms"] = round(statistics.median(rounds), 3)
    else:
        result["table_ms"] = round(table_ms, 1)
    return result


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data-dir", default="../shared/data/mnist", help="the four MNIST idx files")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--canvas", type=int, default=60)
    p.add_argument("--distractors", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=7, help="alternating rounds; medians over all")
    p.add_argument("--item-calls", type=int, default=10, help="per-item batches per round")
    p.add_argument("--batched-calls", type=int, default=50, help="batched batches per round")
    p.add_argument("--no-tune-allocator", action="store_true")
    args = p.parse_args()
    tuned = False if args.no_tune_allocator else tune_cpu_allocator()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    result = {
        "benchmark": "data_speed",
        "batch": args.batch,
        "canvas": args.canvas,
        "distractors": args.distractors,
        "threads": args.threads,
        "allocator_tuned": tuned,
    }
    for variant in MNISTDataModule.VARIANTS:
        dm = MNISTDataModule(
            args.data_dir,
            batch_size=args.batch,
            variant=variant,
            canvas_size=args.canvas,
            num_distractors=args.distractors,
            download=False,
        )
        dm.prepare_data()
        dm.setup("fit")
        result[variant] = {split: measure(dm, split, args) for split in ("train", "test")}
    result.update(torch=torch.__version__, machine=platform.machine())
    print(json.dumps(result))


if __name__ == "__main__":
    main()
