"""Finding, fetching and loading the four MNIST IDX files.

Files are looked for in torchvision's layout ``<data_dir>/MNIST/raw/`` first, then directly in
``<data_dir>/``; each may be raw or gzipped (``.gz`` is read directly, nothing is written next
to it, so read-only folders work).
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import NamedTuple

from torch import Tensor

from raccn.datamodules.idx import IdxFormatError, read_idx

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
FILE_NAMES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)
SOURCES = ("http://yann.lecun.com/exdb/mnist/", "https://ossci-datasets.s3.amazonaws.com/mnist/")


class MNISTArrays(NamedTuple):
    """MNIST in memory: images Tensor[N, 28, 28] uint8, labels Tensor[N] int64 in 0..9."""

    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor


def candidate_folders(data_dir: str | Path) -> tuple[Path, Path]:
    """Where the files are looked for, in order: ``<data_dir>/MNIST/raw``, ``<data_dir>``."""
    root = Path(data_dir).expanduser().resolve()
    return root / "MNIST" / "raw", root


def find_mnist_files(data_dir: str | Path) -> dict[str, Path]:
    """Map each found file name (without ``.gz``) to its path; missing names are left out."""
    found = {}
    for name in FILE_NAMES:
        for folder in candidate_folders(data_dir):
            hits = [p for p in (folder / name, folder / f"{name}.gz") if p.is_file()]
            if hits:
                found[name] = hits[0]  # prefer the uncompressed file
                break
    return found


def require_mnist_files(data_dir: str | Path) -> dict[str, Path]:
    """Like :func:`find_mnist_files` but raise ``FileNotFoundError`` unless all four exist."""
    found = find_mnist_files(data_dir)
    missing = [name for name in FILE_NAMES if name not in found]
    if missing:
        raw, root = candidate_folders(data_dir)
        raise FileNotFoundError(
            f"MNIST not found: missing {', '.join(missing)} (each raw or with .gz) in {raw}/ "
            f"or {root}/.\nExpected the four files {', '.join(FILE_NAMES)} in one of those "
            f"folders.\nGet them from {SOURCES[0]} or the torchvision mirror {SOURCES[1]} "
            f"(e.g. {SOURCES[1]}{missing[0]}.gz) and put them in {raw}/, or point the data "
            "module at the folder that holds them with --data.init_args.data_dir=<folder>."
        )
    return found


def try_download(
    data_dir: str | Path, socket_timeout: float = 5.0, deadline: float = 60.0
) -> str | None:
    """Try torchvision's MNIST download into ``<data_dir>/MNIST/raw``; never raise, never hang.

    Each socket operation times out after ``socket_timeout`` seconds and the whole attempt is
    abandoned after ``deadline`` seconds (it runs in a daemon thread, so a stuck DNS lookup
    cannot block the caller).

    Returns:
        ``None`` on success, else a one-line reason for the failure.
    """
    outcome: list[str | None] = ["download did not finish within the deadline"]

    def download() -> None:
        try:
            from torchvision.datasets import MNIST

            for train in (True, False):
                MNIST(root=str(Path(data_dir).expanduser()), train=train, download=True)
            outcome[0] = None
        except Exception as e:  # noqa: BLE001 - any failure just means "not downloaded"
            detail = " ".join(str(e).split())  # one line; torchvision lists every mirror
            outcome[0] = f"{type(e).__name__}: {detail[:400]}"

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(socket_timeout)
    try:
        thread = threading.Thread(target=download, name="mnist-download", daemon=True)
        thread.start()
        thread.join(deadline)
    finally:
        socket.setdefaulttimeout(previous)
    return outcome[0]


def ensure_mnist_files(data_dir: str | Path, download: bool) -> dict[str, Path]:
    """The four files' paths; if some are missing and ``download``, try to download them first
    (:func:`try_download`). ``FileNotFoundError`` (with the download's failure) if still
    missing."""
    if len(find_mnist_files(data_dir)) == 4 or not download:
        return require_mnist_files(data_dir)
    reason = try_download(data_dir)
    try:
        return require_mnist_files(data_dir)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{e}\nAutomatic download failed: {reason}") from None


def load_mnist(data_dir: str | Path) -> MNISTArrays:
    """Read the four files into memory (about 55 MB); errors name the offending file."""
    paths = require_mnist_files(data_dir)
    arrays = []
    for images_name, labels_name in ((TRAIN_IMAGES, TRAIN_LABELS), (TEST_IMAGES, TEST_LABELS)):
        images = read_idx(paths[images_name], ndim=3)
        labels = read_idx(paths[labels_name], ndim=1).long()
        if images.shape[1:] != (28, 28):
            raise IdxFormatError(
                f"{paths[images_name]}: images are {tuple(images.shape[1:])}, MNIST digits are "
                "28x28; this is not an MNIST image file."
            )
        if images.shape[0] != labels.shape[0]:
            raise IdxFormatError(
                f"{paths[images_name]} holds {images.shape[0]} images but "
                f"{paths[labels_name]} holds {labels.shape[0]} labels; one of them is from "
                "another set or truncated, fetch both again."
            )
        if labels.numel() and int(labels.max()) > 9:
            raise IdxFormatError(
                f"{paths[labels_name]}: label {int(labels.max())} outside 0..9; not MNIST labels."
            )
        arrays += [images, labels]
    return MNISTArrays(*arrays)
