"""Tiny SVHN folders in both real formats.

Format 1: ``train/`` and ``test/`` with PNGs and a MATLAB v7.3 ``digitStruct.mat`` written with
h5py in MATLAB's layout (:func:`datamodules.digit_struct.write_digit_struct`; single-box
entries store their fields inline, multi-box ones as references). Every PNG is a ramp: red =
x, green = y, blue = 100, so any crop can be checked against the region it came from.

Format 2: ``train_32x32.mat``/``test_32x32.mat`` as ``scipy.io.savemat`` writes them and
torchvision reads them: ``X`` uint8 (32, 32, 3, N), ``y`` uint8 (N, 1) in 1..10.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
import scipy.io
from PIL import Image

from raccn.datamodules.digit_struct import DigitStruct, write_digit_struct


class Number(NamedTuple):
    """One fixture image: ``size`` (width, height), ``boxes`` [(left, top, width, height)],
    ``labels`` as stored (1..10)."""

    size: tuple[int, int]
    boxes: list[tuple[float, float, float, float]]
    labels: list[float]


def digits_of(number: Number) -> str:
    return "".join(str(int(v) % 10) for v in number.labels)


TRAIN = [
    Number((60, 40), [(20, 10, 12, 20)], [10]),  # one box: fields stored inline; "0"
    Number((80, 50), [(10, 12, 10, 20), (22, 10, 10, 22), (34, 12, 10, 20)], [1, 9, 10]),  # "190"
    Number((60, 40), [(-4, 8, 12, 20), (10, 8, 12, 20)], [3, 4]),  # first box partly outside
    Number((70, 45), [(15, 10, 11, 21), (28, 11, 11, 21)], [5, 6]),
    Number((50, 40), [(18, 9, 13, 22)], [7]),
    Number((90, 50), [(10, 10, 10, 25), (21, 10, 10, 25), (32, 10, 10, 25), (43, 10, 10, 25)],
           [8, 2, 2, 1]),
    Number((66, 44), [(30, 12, 12, 20)], [2]),
    Number((72, 48), [(12, 14, 12, 19), (26, 14, 12, 19)], [9, 9]),
]
TEST = [
    Number((64, 40), [(24, 10, 14, 21)], [4]),
    Number((80, 44), [(20, 12, 12, 20), (34, 12, 12, 20)], [6, 10]),
    Number((58, 42), [(11, 7, 12, 24), (24, 7, 12, 24), (37, 7, 12, 24)], [3, 1, 5]),
]


def ramp(size: tuple[int, int]) -> Image.Image:
    """RGB image ``size = (width, height)``: red = x, green = y, blue = 100."""
    w, h = size
    x, y = np.meshgrid(np.arange(w), np.arange(h))
    return Image.fromarray(np.stack([x, y, np.full_like(x, 100)], axis=-1).astype(np.uint8))


def digit_struct(numbers: list[Number]) -> DigitStruct:
    return DigitStruct(
        [f"{i + 1}.png" for i in range(len(numbers))],
        np.array([len(n.labels) for n in numbers], dtype=np.int64),
        np.array([b for n in numbers for b in n.boxes], dtype=np.float64).reshape(-1, 4),
        np.array([v for n in numbers for v in n.labels], dtype=np.float64),
    )


def write_folder(folder: Path, numbers: list[Number]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, number in enumerate(numbers):
        ramp(number.size).save(folder / f"{i + 1}.png")
    write_digit_struct(folder / "digitStruct.mat", digit_struct(numbers))


def write_svhn(root: Path, train: list[Number] = TRAIN, test: list[Number] = TEST) -> Path:
    """Format 1 under ``root``; returns ``root``."""
    write_folder(root / "train", train)
    write_folder(root / "test", test)
    return root


def write_cropped(root: Path, split: str, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """Format 2: ``<root>/<split>_32x32.mat`` with random images and labels 1..10 (label 10
    first, so the digit 0 is there). Returns ``(X (32, 32, 3, n), y (n,), md5)``."""
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
    y = rng.integers(1, 11, n).astype(np.uint8)
    y[0] = 10
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{split}_32x32.mat"
    scipy.io.savemat(path, {"X": X, "y": y.reshape(n, 1)})
    return X, y, hashlib.md5(path.read_bytes()).hexdigest()
