"""Make a small, publishable checkpoint: keep the weights and hyper-parameters, drop the rest.

    python -m raccn.checkpoints runs/ram_mnist/version_0/checkpoints/best-epoch=083.ckpt checkpoints/ram_mnist.ckpt

Keeps ``state_dict``, ``hyper_parameters`` (and the data module's), ``epoch``, ``global_step`` and
the Lightning version, which is all ``train.py test --ckpt_path`` needs; drops optimiser and
scheduler states, loop and callback states. Writes the result atomically (temporary file, then
rename) and never overwrites the source.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import torch

__all__ = ["strip_checkpoint"]

KEEP = ("state_dict", "hyper_parameters", "datamodule_hyper_parameters", "epoch", "global_step",
        "pytorch-lightning_version", "hparams_name", "datamodule_hparams_name")


def strip_checkpoint(src: str, dst: str, drop_hparams: Sequence[str] = ()) -> dict:
    """Write the weights-only copy of checkpoint ``src`` to ``dst``; returns what was written.

    ``drop_hparams``: model hyper-parameters to remove (e.g. an option the model no longer has
    that was saved at its neutral value; ``train.py test --ckpt_path`` re-applies the saved
    hyper-parameters and rejects unknown ones)."""
    if os.path.abspath(src) == os.path.abspath(dst):
        raise ValueError("dst must differ from src (the full checkpoint is kept)")
    full = torch.load(src, map_location="cpu", weights_only=False)
    if "state_dict" not in full:
        raise ValueError(f"{src} is not a Lightning checkpoint (no 'state_dict')")
    small = {k: full[k] for k in KEEP if k in full}
    if drop_hparams:
        hp = dict(small.get("hyper_parameters", {}))
        missing = [name for name in drop_hparams if name not in hp]
        if missing:
            raise ValueError(f"{src} has no hyper-parameter(s) {missing}; it has {sorted(hp)}")
        small["hyper_parameters"] = {k: v for k, v in hp.items() if k not in drop_hparams}
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    tmp = dst + ".tmp"
    torch.save(small, tmp)
    os.replace(tmp, dst)
    return small


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--drop-hparam", action="append", default=[], help="model hyper-parameter to remove")
    a = p.parse_args(argv)
    strip_checkpoint(a.src, a.dst, a.drop_hparam)
    print(f"{a.src} ({os.path.getsize(a.src) / 1e6:.2f} MB) -> {a.dst} ({os.path.getsize(a.dst) / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
