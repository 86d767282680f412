"""Weights & Biases logging that never blocks and never crashes for want of an account.

Lightning's ``WandbLogger`` calls ``wandb.init`` online by default: without an API key that
raises ("No API key configured"), and with a key but no network it waits for the server.
:class:`WandbLogger` here decides the mode before ``wandb.init`` runs:

- ``WANDB_MODE`` set in the environment (``offline``, ``disabled``, ``online``): obeyed.
- ``offline=True``: offline.
- no credentials (no ``WANDB_API_KEY`` and no entry for the W&B host in ``~/.netrc``): offline,
  with a message saying where the run is written and how to upload it (``wandb sync``).
- otherwise online, once a TCP connection to the server (``WANDB_BASE_URL``) opens within
  ``probe_timeout`` seconds; else offline at once, with a warning (wandb's own retries against a
  refused or unroutable server take about 45 s). ``wandb.init`` then has ``init_timeout`` seconds;
  if it fails (the server answers but misbehaves), it falls back to offline with a warning
  instead of failing the run.

Offline runs live under ``<save_dir>/wandb/offline-run-*``; ``wandb sync <that folder>`` uploads
them later.
"""

from __future__ import annotations

import netrc
import os
import socket
import threading
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

    host = urlparse(_base_url()).hostname or "api.wandb.ai"
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def _base_url() -> str:
    import wandb

    return os.environ.get("WANDB_BASE_URL") or wandb.Settings().base_url


def server_unreachable(base_url: str, timeout: float) -> str | None:
    """Why a TCP connection to the host and port of ``base_url`` does not open within
    ``timeout`` seconds (name lookup included: it runs in a daemon thread, so a stuck DNS lookup
    cannot hold the caller), or ``None`` if it opens."""
    url = urlparse(base_url)
    host, port = url.hostname or "api.wandb.ai", url.port or (80 if url.scheme == "http" else 443)
    outcome: list[str | None] = [f"no connection to {host}:{port} within {timeout:g} s"]

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome[0] = None
        except OSError as e:
            outcome[0] = f"{host}:{port}: {e}"

    thread = threading.Thread(target=connect, name="wandb-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return outcome[0]


class WandbLogger(_LightningWandbLogger):
    """Lightning's ``WandbLogger`` (same arguments) that goes offline by itself when it has to.

    Args:
        init_timeout: seconds ``wandb.init`` may wait for the server when online.
        probe_timeout: seconds a TCP connection to the server may take to open before the run
            goes offline without trying ``wandb.init``.
        (others): see ``pytorch_lightning.loggers.WandbLogger``; ``project`` defaults to "raccn".
    """

    def __init__(self, *args: Any, project: str | None = None, init_timeout: float = 15.0,
                 probe_timeout: float = 5.0, **kwargs: Any) -> None:
        super().__init__(*args, project=project or os.environ.get("WANDB_PROJECT", "raccn"), **kwargs)
        self._init_timeout = float(init_timeout)
        self._probe_timeout = float(probe_timeout)

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
        unreachable = server_unreachable(_base_url(), self._probe_timeout) if mode == "online" else None
        if unreachable:
            rank_zero_warn(
                f"W&B server unreachable ({unreachable}); logging offline under "
                f"{os.path.join(self.save_dir or '.', 'wandb')}; upload later with `wandb sync <run folder>`."
            )
            mode = self._wandb_init["mode"] = "offline"
        if mode == "online":
            self._wandb_init.setdefault("settings", wandb.Settings(init_timeout=self._init_timeout))
            try:
                return super().experiment
            except Exception as err:  # noqa: BLE001 - wandb raises many types (CommError, UsageError, timeouts)
                rank_zero_warn(f"W&B could not start online ({type(err).__name__}: {err}); logging offline instead.")
                self._experiment = None
                self._wandb_init["mode"] = "offline"
        return super().experiment
