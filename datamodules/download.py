"""Downloading a data set only when there is network, without ever hanging.

A short probe first (a TCP connection to the server, in a daemon thread so that a stuck DNS
lookup cannot block); only if it answers does the download itself run, with a time-out on every
socket operation, so a stalled transfer fails instead of hanging while a slow one can finish.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from urllib.parse import urlsplit


def unreachable(url: str, timeout: float = 5.0) -> str | None:
    """``None`` if a TCP connection to ``url``'s server opens within ``timeout`` seconds, else a
    one-line reason. Never raises and returns after at most about ``timeout`` seconds."""
    parts = urlsplit(url)
    host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    if not host:
        return f"{url!r} names no server"
    outcome: list[str | None] = [f"no answer from {host} within {timeout:g} s"]

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome[0] = None
        except Exception as e:  # noqa: BLE001 - any failure means "unreachable"
            outcome[0] = f"cannot reach {host}: {type(e).__name__}: {e}"

    thread = threading.Thread(target=connect, name="download-probe", daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return outcome[0]


def download_if_online(
    fetch: Callable[[], object],
    url: str,
    probe_timeout: float = 5.0,
    socket_timeout: float = 30.0,
) -> str | None:
    """Run ``fetch`` (e.g. a torchvision data set built with ``download=True``) if ``url``'s
    server answers (:func:`unreachable`), each socket operation timing out after
    ``socket_timeout`` seconds. Never raises.

    Returns:
        ``None`` once ``fetch`` returned, else a one-line reason why nothing was downloaded.
    """
    reason = unreachable(url, probe_timeout)
    if reason is not None:
        return f"no network ({reason})"
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(socket_timeout)
    try:
        fetch()
    except Exception as e:  # noqa: BLE001 - any failure just means "not downloaded"
        return f"{type(e).__name__}: {' '.join(str(e).split())[:400]}"
    finally:
        socket.setdefaulttimeout(previous)
    return None
