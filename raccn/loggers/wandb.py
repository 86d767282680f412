"""Weights & Biases logging that never blocks and never crashes for want of an account.

Lightning's ``WandbLogger`` calls ``wandb.init`` online by default: without an API key that
raises ("No API key configured"), and with a key but no network it waits for the server.
:class:`WandbLogger` here decides the mode before ``wandb.init`` runs:

- ``WANDB_MODE`` set in the environment (``offline``, ``disabled``, ``online``): obeyed.
- ``offline=True``: offline.
- no credentials (no ``WANDB_API_KEY`` and no entry for the W&B host in ``~/.netrc``): offline,
  with a message saying where the run is written and how to upload it (``wandb sync``).
- otherwise online, with ``init_timeout`` seconds to reach the server; if ``wandb.init`` fails
  (no network, server down), it falls back to offline with a warning instead of failing the run.

Offline runs live under ``<save_dir>/wandb/offline-run-*``; ``wandb sync <that folder>`` uploads
them later.
"""

from __future__ import annotations

import netrc
import os
from typing import Any
from urllib.parse import urlparse

from lightning_fabric.utilities.rank_zero import rank_zero_info, rank_zero_warn
from pytorch_lightning.loggers import WandbLogger as _LightningWandbLogger
from pytorch_lightning.loggers.logger import rank_zero_experiment

__all__ = ["WandbLogger", "wandb_credentials_available"]


def wandb_credentials_available() -> bool:
    """True if an API key is configured (``WANDB_API_KEY`` or a ``.netrc`` entry for the host
    of ``WANDB_BASE_URL``, default: wandb's own default server)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    import wandb

    base_url = os.environ.get("WANDB_BASE_URL") or wandb.Settings().base_url
    host = urlparse(base_url).hostname or "api.wandb.ai"
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


class WandbLogger(_LightningWandbLogger):
    """Lightning's ``WandbLogger`` (same arguments) that goes offline by itself when it has to.

    Args:
        init_timeout: seconds ``wandb.init`` may wait for the server when online.
        (others): see ``pytorch_lightning.loggers.WandbLogger``; ``project`` defaults to "raccn".
    """

    def __init__(self, *args: Any, project: str | None = None, init_timeout: float = 15.0, **kwargs: Any) -> None:
        super().__init__(*args, project=project or os.environ.get("WANDB_PROJECT", "raccn"), **kwargs)
        self._init_timeout = float(init_timeout)

    def resolved_mode(self) -> str:
        """``"online"``, ``"offline"`` or ``"disabled"``: the mode ``wandb.init`` will get."""
        env = os.environ.get("WANDB_MODE")
        if env:
            return {"dryrun": "offline", "run": "online"}.get(env, env)
        if self._offline or self._wandb_init.get("mode") == "offline":
            return "offline"
        return "online" if wandb_credentials_available() else "offline"

    @property
    @rank_zero_experiment
    def experiment(self):
        if self._experiment is not None:
            return self._experiment
        import wandb

        mode = self.resolved_mode()
        self._wandb_init["mode"] = mode
        if mode == "offline" and not os.environ.get("WANDB_MODE") and not self._offline:
            rank_zero_info(
                "W&B: no API key found (WANDB_API_KEY or `wandb login`), logging offline under "
                f"{os.path.join(self.save_dir or '.', 'wandb')}; upload later with `wandb sync <run folder>`."
            )
        if mode == "online":
            self._wandb_init.setdefault("settings", wandb.Settings(init_timeout=self._init_timeout))
            try:
                return super().experiment
            except Exception as err:  # noqa: BLE001 - wandb raises many types (CommError, UsageError, timeouts)
                rank_zero_warn(f"W&B could not start online ({type(err).__name__}: {err}); logging offline instead.")
                self._experiment = None
                self._wandb_init["mode"] = "offline"
        return super().experiment
