"""Metric-versus-time curves from a run's ``metrics.csv``, drawn with PIL (no plotting library).

    python -m raccn.viz.curves runs/ram_mnist/version_0/metrics.csv docs/ram_mnist_curve.png \
        [--y val/error] [--x time/elapsed_s] [--title "..."]

``--x time/elapsed_s`` (logged by ``raccn.callbacks.WallClock``) is shown in minutes; any other
column (e.g. ``epoch``) as it is.
"""

from __future__ import annotations

import argparse
import csv
import math
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

__all__ = ["plot_curve", "plot_lines", "read_series"]

COLOURS = [(30, 90, 200), (220, 80, 30), (40, 150, 60), (150, 60, 170)]


def read_series(path: str, x: str, y: str) -> tuple[list[float], list[float]]:
    """The rows of ``metrics.csv`` where both columns have a value, as two lists."""
    with open(path, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get(x) not in (None, "") and r.get(y) not in (None, "")]
    if not rows:
        raise ValueError(f"{path} has no row with both {x!r} and {y!r}")
    return [float(r[x]) for r in rows], [float(r[y]) for r in rows]


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    step = (hi - lo) / n if hi > lo else 1.0
    return [lo + i * step for i in range(n + 1)]


def _canvas(size: tuple[int, int]) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    img = Image.new("RGB", size, (255, 255, 255))
    d = ImageDraw.Draw(img)
    try:  # Pillow's scalable default font: the bitmap one at its default size all but drops spaces
        d.font = ImageFont.load_default(size=12)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1 or no FreeType: the bitmap font
        pass
    return img, d


def _short(v: float) -> str:
    """1234567 -> "1.2M"."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= scale:
            return f"{v / scale:.3g}{unit}"
    return f"{v:.3g}"


def plot_lines(series: dict[str, tuple[Sequence[float], Sequence[float]]], x_label: str, y_label: str,
               log: bool = False, size: tuple[int, int] = (480, 360)) -> Image.Image:
    """Several named lines (name -> (xs, ys)) on shared axes, linear or log-log (``log``, all
    values > 0), ticks at the data's x values and at 6 y values, a legend. Returns a PIL image."""
    points = [(x, y) for xs, ys in series.values() for x, y in zip(xs, ys)]
    if not points or any(len(xs) != len(ys) for xs, ys in series.values()):
        raise ValueError("every series needs xs and ys of the same length, and one point at least")
    if log and min(min(p) for p in points) <= 0:
        raise ValueError("a log-log plot needs values > 0")
    f = math.log10 if log else float
    xs_all, ys_all = sorted({x for x, _ in points}), [y for _, y in points]
    x0, x1 = f(xs_all[0]), f(xs_all[-1])
    y0, y1 = f(min(ys_all)), f(max(ys_all))
    x1, pad = (x1 if x1 > x0 else x0 + 1.0), 0.08 * ((y1 - y0) or 1.0)
    y0, y1 = y0 - pad, y1 + pad
    W, H = size
    left, right, top, bottom = 60, 15, 40, 45
    px = lambda x: left + (f(x) - x0) / (x1 - x0) * (W - left - right)
    py = lambda y: H - bottom - (f(y) - y0) / (y1 - y0) * (H - top - bottom)
    img, d = _canvas(size)
    d.rectangle([left, top, W - right, H - bottom], outline=(0, 0, 0))
    for x in xs_all:
        d.line([(px(x), H - bottom), (px(x), top)], fill=(225, 225, 225))
        d.text((px(x) - 8, H - bottom + 4), _short(x), fill=(0, 0, 0))
    for t in _ticks(y0, y1):
        y = 10**t if log else t
        d.line([(left, py(y)), (W - right, py(y))], fill=(225, 225, 225))
        d.text((5, py(y) - 6), _short(y), fill=(0, 0, 0))
    for i, (name, (xs, ys)) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        line = [(px(x), py(y)) for x, y in zip(xs, ys)]
        if len(line) > 1:
            d.line(line, fill=colour, width=2)
        for cx, cy in line:
            d.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill=colour)
        key_x = left + 8 + 90 * i  # legend: a line segment and the name
        d.line([(key_x, top - 10), (key_x + 16, top - 10)], fill=colour, width=2)
        d.text((key_x + 20, top - 17), name, fill=colour)
    d.text((left + ((W - left - right) - d.textlength(x_label)) // 2, H - bottom + 22), x_label, fill=(0, 0, 0))
    d.text((5, 6), y_label + ("  (log-log)" if log else ""), fill=(0, 0, 0))
    return img


def plot_curve(xs: Sequence[float], ys: Sequence[float], x_label: str, y_label: str,
               title: str = "", size: tuple[int, int] = (640, 400)) -> Image.Image:
    """A line plot with axes, 6 ticks per axis and labels; points marked. Returns a PIL image."""
    if len(xs) != len(ys) or not xs:
        raise ValueError("xs and ys must be non-empty and of the same length")
    W, H = size
    left, right, top, bottom = 70, 20, 30, 50
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x1 = x0 + 1.0
    pad = 0.05 * (y1 - y0 or 1.0)
    y0, y1 = y0 - pad, y1 + pad
    px = lambda x: left + (x - x0) / (x1 - x0) * (W - left - right)
    py = lambda y: H - bottom - (y - y0) / (y1 - y0) * (H - top - bottom)
    img, d = _canvas(size)
    d.rectangle([left, top, W - right, H - bottom], outline=(0, 0, 0))
    for t in _ticks(x0, x1):
        d.line([(px(t), H - bottom), (px(t), top)], fill=(225, 225, 225))
        d.text((px(t) - 10, H - bottom + 4), f"{t:.0f}" if x1 - x0 > 10 else f"{t:.1f}", fill=(0, 0, 0))
    for t in _ticks(y0, y1):
        d.line([(left, py(t)), (W - right, py(t))], fill=(225, 225, 225))
        d.text((5, py(t) - 6), f"{t:.2f}", fill=(0, 0, 0))
    points = [(px(x), py(y)) for x, y in zip(xs, ys)]
    if len(points) > 1:
        d.line(points, fill=(30, 90, 200), width=2)
    for cx, cy in points:
        d.ellipse([cx - 2, cy - 2, cx + 2, cy + 2], fill=(30, 90, 200))
    label_w = d.textlength(x_label)
    d.text((left + ((W - left - right) - label_w) // 2, H - bottom + 22), x_label, fill=(0, 0, 0))
    d.text((5, 8), f"{y_label}   {title}", fill=(0, 0, 0))
    return img


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("metrics")
    p.add_argument("out")
    p.add_argument("--x", default="time/elapsed_s")
    p.add_argument("--y", default="val/error")
    p.add_argument("--title", default="")
    a = p.parse_args(argv)
    xs, ys = read_series(a.metrics, a.x, a.y)
    x_label = a.x
    if a.x == "time/elapsed_s":
        xs, x_label = [x / 60.0 for x in xs], "wall-clock minutes since fit started"
    plot_curve(xs, ys, x_label, a.y, a.title).save(a.out)
    print(f"{len(xs)} points -> {a.out}")


if __name__ == "__main__":
    main()
