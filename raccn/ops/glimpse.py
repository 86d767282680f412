"""Glimpse sensor (retina) of the Recurrent Attention Model.

Mnih, Heess, Graves, Kavukcuoglu, "Recurrent Models of Visual Attention", NIPS 2014, §3.1:
the sensor extracts ``scales`` square patches centred on the location ``l``; patch ``j`` has side
``size * scale_factor**j`` pixels and is brought to ``size x size`` pixels.

Every output pixel is the exact mean of the image over its square (pixels outside the image count
as zero; sub-pixel positions are handled exactly). Two equivalent ways compute it, chosen by the
cell side ``c_j = scale_factor**j`` (pixels per output pixel):

- ``"box"``, when every ``c_j`` is an integer (the paper's factor 2): the mean over a
  ``c x c`` square whose corner sits at a sub-pixel position ``(i + f, k + g)`` is the bilinear
  interpolation, at that position, of the image box-filtered by ``c x c`` at integer positions
  (in 1-D: ``(1-f) box_c[i] + f box_c[i+1]``, both sides being
  ``((1-f) x[i] + x[i+1] + ... + x[i+c-1] + f x[i+c]) / c``). The box sums of all scales
  (``box_planes``, shifted adds) are computed once per image batch; each glimpse is one
  ``F.grid_sample`` per scale of ``size**2`` points per image, in the images' dtype, and the
  samples are divided by ``c * c``. Per glimpse this reads ``scales * size**2 * 4`` values,
  where a dense resampling matrix product reads the whole image for every output row.
- ``"integral"``, for any other factor: the image's summed-area table ``S`` (float64; float32 on
  MPS, which has no float64) is sampled bilinearly at the cells' corners (the integral of the
  piecewise-constant image over ``[0, x] x [0, y]`` is the bilinear interpolation of ``S``) and
  each cell is ``S(x1, y1) - S(x0, y1) - S(x1, y0) + S(x0, y0)`` over its area.

``prepare_glimpses(images, size, scales, scale_factor)`` does the part that does not depend on
the location once (the planes or the table, and the sampling grid's constants), for callers that
take several glimpses of the same images (RAM, DRAM); ``glimpse`` does it itself when not given.
Both paths are differentiable (by autograd, no custom backward) with respect to the images and
the locations, and there is no loop over the batch. On CPU the op makes many short-lived tensors
of a few hundred KB; it is fastest once ``raccn.runtime.tune_cpu_allocator()`` keeps freed
blocks in the process, which ``train.py`` calls and a script of your own may (it changes the
whole process's allocator, so importing this module does not).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["GlimpseSource", "check_glimpse_args", "glimpse", "integral_image", "prepare_glimpses"]


def check_glimpse_args(size: int, scales: int, scale_factor: float) -> None:
    """Raise ``ValueError`` (with the fix) for invalid glimpse-sensor settings."""
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"glimpse size must be a positive integer (pixels), got {size!r}")
    if not isinstance(scales, int) or scales < 1:
        raise ValueError(f"glimpse scales must be an integer >= 1, got {scales!r}")
    if not scale_factor >= 1.0:
        raise ValueError(
            f"glimpse scale_factor must be >= 1 (each scale covers a larger square), "
            f"got {scale_factor!r}"
        )


def _check_images(images: Tensor) -> None:
    if images.dim() != 4:
        raise ValueError(f"images must be Tensor[B, C, H, W], got shape {tuple(images.shape)}")


def integer_cells(scales: int, scale_factor: float) -> list[int] | None:
    """The cell sides ``scale_factor**j`` (j < scales) as integers, or None if one is not."""
    cells = [float(scale_factor) ** j for j in range(scales)]
    if all(abs(c - round(c)) < 1e-9 for c in cells):
        return [round(c) for c in cells]
    return None


def integral_image(images: Tensor) -> Tensor:
    """Summed-area table of a batch of images, with a leading zero row and column.

    Args:
        images (Tensor[B, C, H, W]): images; pixel ``(y, x)`` covers ``[x, x+1) x [y, y+1)``.

    Returns:
        Tensor[B, C, H+1, W+1]: ``S[..., y, x]`` = sum of ``images[..., :y, :x]`` (the integral of
        the image over ``[0, x] x [0, y]``), in float64 (float32 on MPS, which has no float64).
        Differentiable with respect to ``images``.
    """
    _check_images(images)
    dtype = torch.float32 if images.device.type == "mps" else torch.float64
    B, C, H, W = images.shape
    table = images.new_zeros(B, C, H + 1, W + 1, dtype=dtype)
    table[:, :, 1:, 1:] = images
    return table.cumsum(2).cumsum(3)


def box_planes(images: Tensor, cells: list[int]) -> list[Tensor]:
    """The images box-filtered by each cell side, zero-padded by the same margin.

    Args:
        images (Tensor[B, C, H, W]): images.
        cells (list[int]): cell sides ``c_0 < c_1 < ...`` in pixels, each a multiple of the one
            before (the powers of an integer ``scale_factor``), ``c_0 = 1``.

    Returns:
        list of J = len(cells) contiguous tensors, ``L = c_{J-1} - 1``: plane ``j``
        (Tensor[B, C, H + 2L - c_j + 1, W + 2L - c_j + 1]) holds at ``[..., L + k, L + i]`` the
        sum of the image (zero outside) over the ``c_j x c_j`` square whose top-left pixel is
        ``(k, i)``, for ``-L <= k``, ``-L <= i``. Plane 0 is the zero-padded image (the images
        themselves when ``L = 0``).
    """
    L = cells[-1] - 1
    box = F.pad(images, (L, L, L, L)) if L else images  # box_1[u] = image[u - L]
    planes, prev = [box], 1
    for c in cells[1:]:
        k = c // prev  # box_c[u] = sum_{d < k} box_prev[u + d * prev], in x then in y
        for dim in (3, 2):
            n = box.shape[dim] - (k - 1) * prev
            summed = box.narrow(dim, 0, n)
            for d in range(1, k):
                summed = summed + box.narrow(dim, d * prev, n)
            box = summed
        planes.append(box)  # sums: glimpse divides its few samples by c * c, not the plane
        prev = c
    return planes


class GlimpseSource(NamedTuple):
    """The location-independent part of every glimpse of an image batch (``prepare_glimpses``)."""

    tensors: tuple[Tensor, ...]  #: the J box planes (see ``box_planes``) or the summed-area table
    method: str  #: "box" or "integral" (see the module docstring)
    grid_base: Tensor  #: Tensor[J, 1, K] and
    grid_spread: Tensor  #: Tensor[J, 2, K]: the sampling grid is base + loc @ spread (``_grid_terms``)
    size: int
    scales: int
    scale_factor: float
    image_shape: tuple[int, int, int, int]  #: (B, C, H, W) of the images it was made from


@torch.compiler.disable
def prepare_glimpses(images: Tensor, size: int, scales: int, scale_factor: float = 2.0) -> GlimpseSource:
    """The part of ``glimpse`` that does not depend on the location, to share between glimpses
    of the same images.

    It always runs eagerly, also inside ``torch.compile`` (a graph break; a caller that compiles
    calls it first, so that what follows is one graph): compiled, inductor fuses the box sums
    (shifted adds) into each glimpse's sampling kernel and recomputes them at every sampled point
    of every glimpse, which made a compiled 60x60 RAM step ~10 % slower than with the planes
    computed once (docs/RESULTS.md).

    Args:
        images (Tensor[B, C, H, W]): images.
        size (int), scales (int), scale_factor (float): as in ``glimpse``.

    Returns:
        GlimpseSource: box-filtered planes when every ``scale_factor**j`` is an integer, the
        summed-area table otherwise, and the sampling grid's constants. Differentiable with
        respect to ``images``.
    """
    check_glimpse_args(size, scales, scale_factor)
    _check_images(images)
    cells = integer_cells(scales, scale_factor)
    if cells is not None:
        tensors, method = tuple(box_planes(images, cells)), "box"
    else:
        tensors, method = (integral_image(images),), "integral"
    B, C, H, W = images.shape
    base, spread = _grid_terms(method, size, scales, float(scale_factor), H, W, tensors[0].dtype, images.device)
    return GlimpseSource(tensors, method, base, spread, size, scales, float(scale_factor), (B, C, H, W))


@functools.lru_cache(maxsize=64)  # one call of the op: 1.2x (60x60, 3 scales) to 2x (28x28) faster
def _grid_terms(method: str, size: int, scales: int, scale_factor: float, H: int, W: int,
                dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    """Constants of the sampling grid ``grid[j, b] = base[j] + loc[b] @ spread[j]``, computed in
    Python and kept per geometry (``prepare_glimpses`` calls it eagerly, also under compile).

    Returns ``base`` (Tensor[J, 1, K]) and ``spread`` (Tensor[J, 2, K]), ``K = M * M * 2``: row
    ``j`` flattens the (M, M, 2) grid of scale ``j`` for a centre at ``loc = 0``, ``(x, y)``
    last, ``m`` along x and ``n`` along y; ``spread`` puts ``loc``'s x (times the scale's slope)
    on the x entries and its y on the y entries, so one batched matrix product builds the whole
    grid (a broadcast add over a last axis of 2 costs several times more). The points are the
    cells' top-left corners (box, ``M = size``) or all their corners (integral,
    ``M = size + 1``), in the normalised coordinates of ``F.grid_sample`` over the box plane of
    scale ``j`` (box) or over the summed-area table (integral).
    """
    cells = [float(scale_factor) ** j for j in range(scales)]
    if method == "box":
        # Plane j has n + 2L - c + 1 columns and column L + i is box_c at i; with
        # align_corners=False, column t is at (2t + 1) / columns - 1. Cell m's left edge is
        # e = (x + 1) n / 2 - size c / 2 + m c, sampled at t = e + L.
        L = round(cells[-1]) - 1
        sides = [[n + 2 * L - round(c) + 1 for n in (W, H)] for c in cells]
        axis = [[[(n - size * c + 2 * m * c + 2 * L + 1) / side - 1 for m in range(size)]
                 for n, side in zip((W, H), sides_j)] for c, sides_j in zip(cells, sides)]
        slope = [[[n / side for n, side in zip((W, H), sides_j)]] for sides_j in sides]
    else:  # align_corners=True over the W + 1 table columns: pixel edge u maps to 2u / W - 1
        axis = [[[(m - 0.5 * size) * c * 2.0 / n for m in range(size + 1)] for n in (W, H)]
                for c in cells]
        slope = [[[1.0, 1.0]]] * scales
    axis = torch.tensor(axis, dtype=dtype, device=device)  # (J, 2, M): x offsets, y offsets
    J, M = scales, axis.shape[-1]
    base = torch.stack((axis[:, 0, None, :].expand(J, M, M), axis[:, 1, :, None].expand(J, M, M)), dim=-1)
    spread = torch.zeros(J, 2, M * M, 2, dtype=dtype, device=device)
    slope = torch.tensor(slope, dtype=dtype, device=device)  # (J, 1, 2)
    spread[:, 0, :, 0] = slope[:, :, 0]
    spread[:, 1, :, 1] = slope[:, :, 1]
    return base.reshape(J, 1, -1), spread.reshape(J, 2, -1)


def glimpse(
    images: Tensor,
    loc: Tensor,
    size: int,
    scales: int,
    scale_factor: float = 2.0,
    source: GlimpseSource | None = None,
) -> Tensor:
    """Extract a multi-resolution glimpse ("retina") around ``loc``.

    Args:
        images (Tensor[B, C, H, W]): batch of images.
        loc (Tensor[B, 2]): glimpse centres as ``(x, y)`` in ``[-1, 1]``, ``(-1, -1)`` the
            top-left corner of the image and ``(1, 1)`` the bottom-right one. The convention is
            ``F.grid_sample(align_corners=False)``: ``loc`` maps to the point
            ``((x + 1) / 2 * W, (y + 1) / 2 * H)`` in pixel units, where pixel ``i`` covers
            ``[i, i + 1)``. Values outside ``[-1, 1]`` are allowed (the glimpse then sees
            mostly zeros).
        size (int): side of every output patch, in pixels.
        scales (int): number of patches.
        scale_factor (float): patch ``j`` covers a square of side ``size * scale_factor**j``
            pixels centred on ``loc``.
        source (GlimpseSource, optional): ``prepare_glimpses(images, size, scales, scale_factor)``,
            for callers that take several glimpses of the same images (made here when None).

    Returns:
        Tensor[B, scales, C, size, size] (dtype of ``images``): patch ``j`` is the square brought
        to ``size x size`` by area averaging (each output pixel is the mean of the image over
        its sub-square). Outside the image counts as zero. When a square falls on pixel
        boundaries, patch 0 equals the plain slice of the image and patch ``j`` equals the
        slice average-pooled by ``scale_factor**j``.

    Differentiable with respect to ``images`` and ``loc`` (autograd, no custom backward).
    """
    check_glimpse_args(size, scales, scale_factor)
    _check_images(images)
    B, C, H, W = images.shape
    if loc.shape != (B, 2):
        raise ValueError(f"loc must be Tensor[B, 2] = (x, y) with B={B}, got {tuple(loc.shape)}")
    if source is None:
        source = prepare_glimpses(images, size, scales, scale_factor)
    elif (source.size, source.scales, source.scale_factor, source.image_shape) != (
            size, scales, float(scale_factor), (B, C, H, W)):
        raise ValueError(
            f"source was prepared for size={source.size}, scales={source.scales}, "
            f"scale_factor={source.scale_factor}, images {source.image_shape}; this glimpse has "
            f"size={size}, scales={scales}, scale_factor={scale_factor}, images {(B, C, H, W)}: "
            f"call prepare_glimpses(images, size, scales, scale_factor) with the same values"
        )
    J, table = scales, source.tensors[0]
    M = size if source.method == "box" else size + 1
    grid = torch.baddbmm(source.grid_base, loc.to(table.dtype).expand(J, B, 2), source.grid_spread).view(J, B, M, M, 2)
    areas = [float(scale_factor) ** (2 * j) for j in range(J)]  # cell sums -> means
    if source.method == "box":  # scale j samples plane j: J calls of B * size**2 points
        out = [F.grid_sample(plane, grid[j], mode="bilinear", padding_mode="zeros", align_corners=False) / area
               for j, (plane, area) in enumerate(zip(source.tensors, areas))]
        return torch.stack(out, dim=1).to(images.dtype)  # (B, J, C, size, size)
    # integral: the corners of all scales in one call, border = the table's constant continuation
    corners = F.grid_sample(table, grid.transpose(0, 1).reshape(B, J * M, M, 2), mode="bilinear",
                            padding_mode="border", align_corners=True)
    sums = corners.view(B, C, J, M, M).diff(dim=-1).diff(dim=-2).transpose(1, 2)  # (B, J, C, size, size)
    return (sums / table.new_tensor(areas).view(J, 1, 1, 1)).to(images.dtype)
