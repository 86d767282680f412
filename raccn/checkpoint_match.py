"""Does a checkpoint passed to ``test``/``predict``/``fit --ckpt_path`` fit the run's model and data?

LightningCLI re-applies a checkpoint's saved hyper-parameters, its model class included, over the
config's, so a checkpoint of another model would silently replace the configured model (and then
fail far from the cause, on channels or a state-dict shape). These checks run first and name both
sides: the model class and network class against the config's, and the number of classes the
checkpoint was trained for against the data's.
"""

from __future__ import annotations

import os
from typing import Any

import torch

__all__ = ["CheckpointMismatchError", "check_model_classes", "check_num_classes", "read_hparams"]


class CheckpointMismatchError(ValueError):
    """A checkpoint of another model, network or number of classes than the run's."""


def read_hparams(path: str | os.PathLike) -> dict[str, Any]:
    """The ``hyper_parameters`` of a Lightning checkpoint (memory-mapped: the weights are not
    read); ``ValueError`` naming the file if it is not a loadable checkpoint."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # torch raises many types on a damaged or foreign file
        raise ValueError(
            f"{path} is not a readable checkpoint ({type(e).__name__}: {e}); pass a .ckpt written "
            "by train.py (e.g. runs/<run>/version_<n>/checkpoints/last.ckpt)."
        ) from e
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ValueError(f"{path} is not a Lightning checkpoint (no 'state_dict').")
    return dict(ckpt.get("hyper_parameters") or {})


def _class_path(config: Any) -> str | None:
    """``class_path`` of a config node (a jsonargparse Namespace or a dict), or None."""
    if config is None:
        return None
    get = config.get if hasattr(config, "get") else lambda key: getattr(config, key, None)
    return get("class_path")


def check_model_classes(path: str | os.PathLike, hparams: dict[str, Any], model_config: Any) -> None:
    """``CheckpointMismatchError`` naming both classes when the checkpoint's Lightning module
    (``_class_path``) or its network (``net.class_path``) differs from the configured one.
    Checkpoints that saved no class path (built in Python) are not checked."""
    pairs = [("model", hparams.get("_class_path"), _class_path(model_config))]
    init_args = model_config.get("init_args") if hasattr(model_config, "get") else None
    saved_net = hparams.get("net") if isinstance(hparams.get("net"), dict) else None
    if saved_net is not None and init_args is not None:
        pairs.append(("network (model.init_args.net)", saved_net.get("class_path"),
                      _class_path(init_args.get("net"))))
    for what, saved, configured in pairs:
        if saved and configured and saved.rsplit(".", 1)[-1] != configured.rsplit(".", 1)[-1]:
            raise CheckpointMismatchError(
                f"{path} holds a {saved} {what}, but the config asks for {configured}. Pass the "
                f"config the checkpoint was trained with (its {what} class is {saved}), or a "
                f"checkpoint of a {configured}."
            )


def check_num_classes(path: str | os.PathLike, hparams: dict[str, Any], data: Any) -> None:
    """``CheckpointMismatchError`` naming both counts when the checkpoint's network was built for
    another number of classes than the data module ``data`` has."""
    net = hparams.get("net") if isinstance(hparams.get("net"), dict) else {}
    saved = (net.get("init_args") or {}).get("num_classes", hparams.get("num_classes"))
    have = getattr(data, "num_classes", None)
    if saved is None or have is None or int(saved) == int(have):
        return
    raise CheckpointMismatchError(
        f"{path} was trained for {saved} classes, but the data ({type(data).__name__}, "
        f"data_dir={getattr(data, 'data_dir', '?')!r}) has {have}. Use the data the checkpoint "
        "was trained on, or train a new model on this data (without --ckpt_path)."
    )
