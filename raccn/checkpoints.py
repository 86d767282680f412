"""Make a small, publishable checkpoint: keep the weights and hyper-parameters, drop the rest.

    python -m raccn.checkpoints runs/ram_mnist/version_0/checkpoints/best-epoch=083.ckpt checkpoints/ram_mnist.ckpt

Keeps ``state_dict``, ``hyper_parameters`` (and the data module's), ``epoch``, ``global_step`` and
the Lightning version, which is all ``train.py test --ckpt_path`` needs; drops optimiser and
scheduler states, loop and callback states. Writes the result atomically (temporary file, then
rename) and never overwrites the source.

``--inject-net raccn.models.RecurrentAttentionModel`` also moves a checkpoint saved while the
Lightning module still took its network's arguments itself into the layout of a module that
receives its network (``inject_net_hparams``); the weights, already under ``net.*``, stay as
they are.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
from collections.abc import Sequence

import torch

__all__ = ["inject_net_hparams", "strip_checkpoint"]

KEEP = ("state_dict", "hyper_parameters", "datamodule_hyper_parameters", "epoch", "global_step",
        "pytorch-lightning_version", "hparams_name", "datamodule_hparams_name")


def inject_net_hparams(hparams: dict, net_class_path: str, key: str = "net") -> dict:
    """Saved hyper-parameters of a Lightning module that took its network's arguments itself,
    in the layout of one that receives the network (LightningCLI's ``class_path``/``init_args``).

    Args:
        hparams: the checkpoint's ``hyper_parameters`` (flat: the network's arguments beside the
            training settings).
        net_class_path: import path of the network class, e.g. ``raccn.models.RecurrentAttentionModel``.
        key: the module's argument that receives the network.

    Returns:
        a new dict: the arguments of the network's signature under ``key`` as ``{"class_path",
        "init_args"}`` (every argument, its current default where the checkpoint has none, as
        LightningCLI saves them), the other entries unchanged. Raises ``ValueError`` when
        ``hparams`` already has ``key`` or names none of the network's arguments.
    """
    if key in hparams:
        raise ValueError(f"the hyper-parameters already have {key!r}: nothing to inject")
    module_name, _, class_name = net_class_path.rpartition(".")
    signature = inspect.signature(getattr(importlib.import_module(module_name), class_name))
    names = [n for n, p in signature.parameters.items() if p.kind is p.POSITIONAL_OR_KEYWORD]
    if not any(n in hparams for n in names):
        raise ValueError(f"the hyper-parameters name none of {net_class_path}'s arguments {names}")
    init_args = {n: hparams.get(n, signature.parameters[n].default) for n in names}
    rest = {k: v for k, v in hparams.items() if k not in names}
    return {**rest, key: {"class_path": net_class_path, "init_args": init_args}}


def strip_checkpoint(src: str, dst: str, drop_hparams: Sequence[str] = (), inject_net: str | None = None) -> dict:
    """Write the weights-only copy of checkpoint ``src`` to ``dst``; returns what was written.

    ``drop_hparams``: model hyper-parameters to remove (e.g. an option the model no longer has
    that was saved at its neutral value; ``train.py test --ckpt_path`` re-applies the saved
    hyper-parameters and rejects unknown ones). ``inject_net``: the network's class path, to
    move the hyper-parameters into the injected layout (``inject_net_hparams``)."""
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
    if inject_net:
        small["hyper_parameters"] = inject_net_hparams(small.get("hyper_parameters", {}), inject_net)
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
    p.add_argument("--inject-net", metavar="CLASS_PATH", help="the network's class path: move its arguments "
                   "under `net` (see inject_net_hparams)")
    a = p.parse_args(argv)
    strip_checkpoint(a.src, a.dst, a.drop_hparam, a.inject_net)
    print(f"{a.src} ({os.path.getsize(a.src) / 1e6:.2f} MB) -> {a.dst} ({os.path.getsize(a.dst) / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
