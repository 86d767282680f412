"""An embedded house-number set in SVHN format 1, for the DRAM quick start and CI: no download.

RGB multi-digit numbers rendered from material that ships with scikit-learn: its 1,797 bundled
8x8 handwritten digits (``load_digits``), upscaled and sharpened into glyphs of random height
and width, coloured to contrast with what lies under them, on random crops of its two sample
photos (``load_sample_images``: china.jpg, flower.jpg) at random scales, half of the time on a
plain plate, with noise and blur. Test numbers use digits held out of the training ones.

The set is written once, as SVHN is distributed (``train/`` and ``test/`` with ``1.png``, ...
and a MATLAB v7.3 ``digitStruct.mat`` holding every digit's box and label), so it is read by
exactly the loader of real SVHN (:class:`~datamodules.svhn.SVHNDataModule`). Image ``i`` of a
split depends only on ``(render_seed, split, i)``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter
from pytorch_lightning.utilities import rank_zero_info
from sklearn.datasets import load_digits, load_sample_images

from raccn.datamodules.digit_struct import DigitStruct, save_cache, write_digit_struct
from raccn.datamodules.svhn import SVHNDataModule

RENDER_VERSION = 1
MARKER = "embedded_house_numbers.json"
SPLIT_CODES = {"train": 0, "test": 1}
HELD_OUT_DIGITS = 360  # of the 1,797 scikit-learn digits, used by test numbers only


def _material() -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[np.ndarray]]:
    """Glyph pools per split ``(images ndarray[n, 8, 8] float in [0, 1], digits ndarray[n])``
    and the background photos (ndarray[H, W, 3] float in [0, 1])."""
    digits = load_digits()
    order = np.random.default_rng(1234).permutation(len(digits.target))
    test, train = order[:HELD_OUT_DIGITS], order[HELD_OUT_DIGITS:]
    images = digits.images / 16.0
    pools = {"train": (images[train], digits.target[train]),
             "test": (images[test], digits.target[test])}
    photos = [np.asarray(p, dtype=np.float64) / 255.0 for p in load_sample_images().images]
    return pools, photos


def _glyph(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """An 8x8 digit as a sharp coverage mask ndarray[height, width] in [0, 1]."""
    big = Image.fromarray(image.astype(np.float32), mode="F").resize((width, height),
                                                                   Image.BICUBIC)
    return np.clip((np.asarray(big) - 0.3) * 2.5, 0.0, 1.0)


def _background(rng: np.random.Generator, photos: list[np.ndarray], h: int, w: int) -> np.ndarray:
    """A random crop of a random photo at a random scale, resized to ndarray[h, w, 3]."""
    photo = photos[rng.integers(len(photos))]
    scale = rng.uniform(0.4, 2.0)  # photo pixels per output pixel
    ch = min(photo.shape[0], max(2, round(h * scale)))
    cw = min(photo.shape[1], max(2, round(w * scale)))
    top, left = rng.integers(photo.shape[0] - ch + 1), rng.integers(photo.shape[1] - cw + 1)
    crop = Image.fromarray((photo[top : top + ch, left : left + cw] * 255).astype(np.uint8))
    return np.asarray(crop.resize((w, h), Image.BILINEAR), dtype=np.float64) / 255.0


def _contrasting(rng: np.random.Generator, under: np.ndarray) -> np.ndarray:
    """A random colour (ndarray[3]) whose luminance differs from ``under``'s by >= 0.35."""
    lum = float(under @ [0.299, 0.587, 0.114])
    hue = rng.uniform(0, 1, 3)
    hue = hue / max(hue @ [0.299, 0.587, 0.114], 1e-3)  # luminance 1
    target = rng.uniform(0, max(lum - 0.35, 0.0)) if lum > 0.5 else rng.uniform(min(lum + 0.35, 1.0), 1.0)
    return np.clip(hue * target, 0, 1)


def render_number(rng: np.random.Generator, glyphs: np.ndarray, digits: np.ndarray,
                  photos: list[np.ndarray], lengths: tuple[int, int]
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One house number.

    Returns:
        ``(image ndarray[H, W, 3] uint8, boxes ndarray[L, 4] float64, labels ndarray[L])``:
        boxes ``(left, top, width, height)`` of each digit's ink in 0-based pixels, labels in
        SVHN's coding (1..9, 10 for the digit 0), left to right.
    """
    L = int(rng.integers(lengths[0], lengths[1] + 1))
    gh = int(rng.integers(18, 31))
    picks = rng.integers(len(digits), size=L)
    masks = [_glyph(glyphs[k], gh + int(rng.integers(-1, 2)), round(gh * rng.uniform(0.55, 0.8)))
             for k in picks]
    gaps = rng.integers(-1, max(gh // 4, 1) + 1, size=L)  # gaps[0] unused
    jitter = rng.integers(-(gh // 16), gh // 16 + 1, size=L)
    margin = np.round(gh * rng.uniform([0.2, 0.15, 0.2, 0.15], [1.0, 0.6, 1.0, 0.6])).astype(int)
    xs = np.cumsum([0] + [m.shape[1] + g for m, g in zip(masks[:-1], gaps[1:])]) + margin[0]
    ys = margin[1] + jitter - jitter.min()
    H = int(max(y + m.shape[0] for y, m in zip(ys, masks)) + margin[3])
    W = int(xs[-1] + masks[-1].shape[1] + margin[2])
    image = _background(rng, photos, H, W)
    if rng.random() < 0.5:  # a plain plate behind the digits
        pad = max(2, gh // 6)
        y0, x0 = max(0, int(ys.min()) - pad), max(0, int(xs[0]) - pad)
        plate = rng.uniform(0, 1, 3) * rng.uniform(0.5, 1.0)
        image[y0 : H - margin[3] + pad, x0 : W - margin[2] + pad] = plate + rng.normal(0, 0.02, 3)
    alpha = np.zeros((H, W))
    boxes = []
    for x, y, m in zip(xs, ys, masks):
        alpha[y : y + m.shape[0], x : x + m.shape[1]] = np.maximum(
            alpha[y : y + m.shape[0], x : x + m.shape[1]], m)
        rows, cols = np.flatnonzero(m.max(axis=1) > 0.3), np.flatnonzero(m.max(axis=0) > 0.3)
        boxes.append([x + cols[0], y + rows[0], cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1])
    under = image[alpha > 0.3].mean(axis=0) if (alpha > 0.3).any() else image.mean(axis=(0, 1))
    colour = _contrasting(rng, under)
    image = image * (1 - alpha[..., None]) + colour * alpha[..., None]
    image += rng.normal(0, rng.uniform(0, 0.03), image.shape)
    out = Image.fromarray((np.clip(image, 0, 1) * 255).round().astype(np.uint8))
    out = out.filter(ImageFilter.GaussianBlur(rng.uniform(0, 0.8)))
    labels = np.where(digits[picks] == 0, 10, digits[picks])
    return np.asarray(out), np.array(boxes, dtype=np.float64), labels.astype(np.float64)


def render_split(folder: Path, split: str, count: int, render_seed: int,
                 lengths: tuple[int, int]) -> None:
    """Write ``count`` numbers of ``split`` into ``folder`` in SVHN format 1 (PNGs and
    ``digitStruct.mat``, plus the parse's cache, which is exactly what was written)."""
    pools, photos = _material()
    glyphs, digits = pools[split]
    folder.mkdir(parents=True, exist_ok=True)
    names, counts, boxes, labels = [], [], [], []
    for i in range(count):
        rng = np.random.default_rng([render_seed, SPLIT_CODES[split], i])
        image, b, y = render_number(rng, glyphs, digits, photos, lengths)
        names.append(f"{i + 1}.png")
        Image.fromarray(image).save(folder / names[-1], compress_level=1)
        counts.append(len(y))
        boxes.append(b)
        labels.append(y)
    ds = DigitStruct(names, np.array(counts, dtype=np.int64), np.concatenate(boxes),
                     np.concatenate(labels))
    write_digit_struct(folder / "digitStruct.mat", ds)
    save_cache(folder / "digitStruct.mat", ds)


class EmbeddedHouseNumbersDataModule(SVHNDataModule):
    """The embedded house numbers (module docstring), rendered into ``data_dir`` on first use
    (``prepare_data``; a few tens of seconds) and then read by :class:`SVHNDataModule`, whose
    arguments it takes too (batches, splits, preprocessing, ``max_length``).

    ``data_dir`` holds the marker ``embedded_house_numbers.json``; with the same rendering
    arguments and all files present nothing is rendered again; otherwise ``train/`` and
    ``test/`` are rendered anew. A folder with SVHN data this module did not write is never
    touched (``FileExistsError``).

    Args:
        data_dir (str): where the set is (or is to be) written.
        train_size (int): numbers in ``train/`` (the validation split is carved from them).
        test_size (int): numbers in ``test/``.
        min_digits, max_digits (int): digits per rendered number, uniform; numbers longer than
            ``max_length`` would be left out by the loader (counted), so keep
            ``max_digits <= max_length``.
        render_seed (int): seed of the rendering.
        preload (bool): keep the decoded crops in memory (see ``SVHNDataModule``); on by
            default, the set is small (12 KB per number).
        **kwargs: the other arguments of :class:`SVHNDataModule`.
    """

    def __init__(
        self,
        data_dir: str = "data/house_numbers",
        train_size: int = 8000,
        test_size: int = 2000,
        min_digits: int = 1,
        max_digits: int = 3,
        render_seed: int = 0,
        preload: bool = True,
        **kwargs,
    ) -> None:
        if train_size < 2 or test_size < 1:
            raise ValueError(f"train_size={train_size}, test_size={test_size}: need >= 2 and "
                             ">= 1 numbers (the quick start uses 8000 and 2000).")
        if not 1 <= min_digits <= max_digits:
            raise ValueError(f"min_digits={min_digits}, max_digits={max_digits}: need "
                             "1 <= min_digits <= max_digits (e.g. 1 and 3).")
        super().__init__(data_dir=data_dir, preload=preload, **kwargs)
        self.render = {"version": RENDER_VERSION, "render_seed": render_seed,
                       "sizes": {"train": train_size, "test": test_size},
                       "digits": [min_digits, max_digits]}
        if max_digits > self.max_length:
            rank_zero_info(f"max_digits={max_digits} > max_length={self.max_length}: the longer "
                           "numbers will be left out (counted).")

    def is_rendered(self) -> bool:
        """True if ``data_dir`` holds this very set, complete."""
        marker = self.root / MARKER
        if not marker.is_file():
            return False
        try:
            written = json.loads(marker.read_text())
        except (OSError, ValueError):
            return False
        return written == {**self.render, "complete": True} and all(
            (self.root / split / "digitStruct.mat").is_file()
            and sum(1 for _ in (self.root / split).glob("*.png")) == n
            for split, n in self.render["sizes"].items()
        )

    def prepare_data(self) -> None:
        """Render the set unless it is there, then parse/cache as ``SVHNDataModule``."""
        if not self.is_rendered():
            marker = self.root / MARKER
            ours = marker.is_file()
            if not ours and any((self.root / s / "digitStruct.mat").exists() for s in SPLIT_CODES):
                raise FileExistsError(
                    f"{self.root} holds SVHN-format data that EmbeddedHouseNumbersDataModule did "
                    f"not write (no {MARKER}); point --data.init_args.data_dir at an empty or new "
                    "folder for the embedded set, or read that data with SVHNDataModule."
                )
            self.root.mkdir(parents=True, exist_ok=True)
            marker.write_text(json.dumps({**self.render, "complete": False}))
            lengths = tuple(self.render["digits"])
            for split, n in self.render["sizes"].items():
                shutil.rmtree(self.root / split, ignore_errors=True)
                rank_zero_info(f"Rendering {n} embedded house numbers into {self.root / split}.")
                render_split(self.root / split, split, n, self.render["render_seed"], lengths)
            marker.write_text(json.dumps({**self.render, "complete": True}))
        super().prepare_data()

    def setup(self, stage: str | None = None) -> None:
        """As ``SVHNDataModule``; the set must have been rendered by ``prepare_data``."""
        if not self.setup_predict(stage) and self.train_set is None and not self.is_rendered():
            raise RuntimeError(
                f"the embedded house numbers are not (completely) rendered in {self.root}; call "
                "prepare_data() first (the Trainer does)."
            )
        super().setup(stage)
