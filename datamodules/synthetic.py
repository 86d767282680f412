"""Translated and cluttered digit canvases (Mnih et al., 2014, "Recurrent Models of Visual
Attention", Sec. 4.1).

* translated: the h x w digit image is pasted at a uniformly random position fully inside an
  S x S black canvas;
* cluttered: in addition, ``K`` patches of size d x d, each cut at a random position from a
  random *other* image of the set, are pasted at uniformly random canvas positions. Overlaps are
  resolved by a pixel-wise maximum, so clutter never darkens the digit;
* optionally (``max_shift``), the finished canvas is translated by a random whole-pixel
  (dy, dx) with zero fill: augmentation for plain 28 x 28 digits.

Coordinates are (row, col) of the top-left pixel, 0-based, rows growing downwards. Pixel values
are non-negative (the canvas background is 0).

One path builds canvases: a whole batch at once with tensor ops (:func:`compose_batch`,
:func:`shift_canvases`), from placements drawn as one tensor. ``torch.utils.data.DataLoader``
calls ``dataset.__getitems__(indices)`` instead of ``B`` reads of ``dataset[i]``, and
``dataset[i]`` is the batch of one, so a canvas is the same however it is read. With
:func:`collate_canvases` as the loader's ``collate_fn`` the batch is handed on as built.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, default_collate


class Box(NamedTuple):
    """Axis-aligned box on the canvas: top-left ``(row, col)`` and size ``(height, width)``."""

    row: int
    col: int
    height: int
    width: int


class Distractor(NamedTuple):
    """One clutter patch: cut from image ``source`` at ``crop`` and pasted at ``paste``.

    ``crop`` is a box in the source image's coordinates, ``paste`` the box on the canvas; both
    have the same height and width (``distractor_size``).
    """

    source: int
    crop: Box
    paste: Box


class Placement(NamedTuple):
    """Everything random about one canvas: where the digit went, which clutter was added, and
    the final ``shift`` (dy, dx) of the whole canvas in pixels (down, right; see
    :func:`shift_canvases`), ``(0, 0)`` unless the data set shifts."""

    digit: Box
    distractors: tuple[Distractor, ...]
    shift: tuple[int, int] = (0, 0)


class PlacementBatch(NamedTuple):
    """Placements of ``B`` canvases with ``K`` distractors each, as tensors (int64): the
    batched :class:`Placement`, positions as (row, col) of top-left pixels.

    ``digit`` Tensor[B, 2]: where each digit goes on its canvas; ``sources`` Tensor[B, K]: the
    image each patch is cut from; ``crops`` Tensor[B, K, 2]: where in that image;
    ``pastes`` Tensor[B, K, 2]: where on the canvas.
    """

    digit: Tensor
    sources: Tensor
    crops: Tensor
    pastes: Tensor


def compose_batch(
    images: Tensor, index: Tensor, placement: PlacementBatch, canvas_size: int, distractor_size: int
) -> Tensor:
    """Paste digits and clutter patches onto black square canvases: canvas ``b`` holds
    ``images[index[b]]`` with its top-left pixel at ``placement.digit[b]`` and, for each ``k``,
    the ``d x d`` crop of ``images[sources[b, k]]`` at ``crops[b, k]`` pasted at
    ``pastes[b, k]`` by a pixel-wise maximum (so the order of the patches does not matter).

    Args:
        images (Tensor[N, h, w]): non-negative source images, any dtype (uint8 or float);
            contiguous, or they are copied on every call.
        index (Tensor[B] int64): image used as the digit of each canvas, in ``0..N-1``.
        placement (PlacementBatch): positions (``digit``: ``0 <= row <= S - h``,
            ``0 <= col <= S - w``; crops inside the h x w images, patches inside the canvas).
        canvas_size (int): side ``S`` of the canvases.
        distractor_size (int): side ``d`` of the patches (unused when ``K = 0``).

    Returns:
        Tensor[B, S, S]: the canvases, dtype and device of ``images``, 0 where nothing is
        pasted.
    """
    (B,), (n, h, w), S, d = index.shape, images.shape, canvas_size, distractor_size
    digit, sources, crops, pastes = placement
    K = sources.shape[1]
    _check_inside(digit, h, w, S, S, "digit")
    canvas = images.new_zeros(B, S, S)
    flat = canvas.view(-1)
    first = torch.arange(B, device=images.device) * (S * S)  # (B,) offset of each canvas
    where = _window(first + digit[:, 0] * S + digit[:, 1], h, w, S)  # (B, h*w)
    flat.scatter_(0, where.view(-1), images[index].view(-1))  # windows of distinct canvases
    if B == 0 or K == 0:
        return canvas
    if not 0 <= int(sources.min()) <= int(sources.max()) < n:
        raise ValueError(f"distractor sources must index the {n} images (0..{n - 1}).")
    _check_inside(crops.reshape(-1, 2), d, d, h, w, "distractor crop")
    _check_inside(pastes.reshape(-1, 2), d, d, S, S, "distractor")
    cut = _window((sources * (h * w) + crops[..., 0] * w + crops[..., 1]).view(-1), d, d, w)
    patches = images.reshape(-1).gather(0, cut.view(-1))  # (B*K*d*d,)
    paste = first[:, None] + pastes[..., 0] * S + pastes[..., 1]  # (B, K)
    where = _window(paste.view(-1), d, d, S).view(-1)  # (B*K*d*d,), repeats where patches overlap
    flat.scatter_reduce_(0, where, patches, "amax")  # exact, whatever the order
    return canvas


def shift_canvases(canvas: Tensor, shift: Tensor, max_shift: int) -> Tensor:
    """Translate each canvas by whole pixels, filling with zeros (what leaves the canvas is lost).

    Args:
        canvas (Tensor[B, S, S]): images, any dtype.
        shift (Tensor[B, 2] int64): (dy, dx) per canvas, content moves ``dy`` rows down and
            ``dx`` columns right; ``|dy|, |dx| <= max_shift``.
        max_shift (int): bound on the shifts, ``>= 0`` (the padding used).

    Returns:
        Tensor[B, S, S]: ``out[b, y, x] = canvas[b, y - dy, x - dx]`` where that pixel exists,
        else 0; dtype and device of ``canvas``.
    """
    if max_shift == 0 or canvas.shape[0] == 0:
        return canvas
    if int(shift.abs().max()) > max_shift:
        raise ValueError(f"shifts up to {int(shift.abs().max())} px exceed max_shift={max_shift}.")
    B, S, s = canvas.shape[0], canvas.shape[-1], max_shift
    padded = torch.nn.functional.pad(canvas, (s, s, s, s))  # (B, S + 2s, S + 2s)
    grid = torch.arange(S, device=canvas.device)
    rows = (s - shift[:, 0:1]) + grid  # (B, S)
    cols = (s - shift[:, 1:2]) + grid  # (B, S)
    batch = torch.arange(B, device=canvas.device)[:, None, None]
    return padded[batch, rows[:, :, None], cols[:, None, :]]


def _window(start: Tensor, h: int, w: int, row_stride: int) -> Tensor:
    """Offsets (Tensor[M, h*w] int64) of the h x w windows whose top-left pixels are at the flat
    offsets ``start`` (Tensor[M]) of row-major images ``row_stride`` pixels wide."""
    ys = torch.arange(h, device=start.device)[:, None] * row_stride  # (h, 1)
    xs = torch.arange(w, device=start.device)  # (w,)
    return start[:, None] + (ys + xs).view(1, -1)


def _check_inside(pos: Tensor, h: int, w: int, height: int, width: int, what: str) -> None:
    """``ValueError`` unless every h x w window at ``pos`` (Tensor[M, 2], (row, col)) lies inside
    a ``height x width`` image."""
    if pos.shape[0] == 0:
        return
    (row_lo, col_lo), (row_hi, col_hi) = (t.tolist() for t in torch.aminmax(pos, dim=0))
    if not (0 <= row_lo and row_hi <= height - h and 0 <= col_lo and col_hi <= width - w):
        raise ValueError(
            f"a {what} of size {h}x{w} at (row, col) in [{row_lo}..{row_hi}] x "
            f"[{col_lo}..{col_hi}] does not fit a {height}x{width} image; use "
            f"0 <= row <= {height - h} and 0 <= col <= {width - w}."
        )


class CanvasBatch(Sequence[tuple[Tensor, Tensor]]):
    """A batch built at once, which also reads as the sequence of its items, as
    ``__getitems__`` must return them (so ``default_collate``, ``Subset`` and ``StackDataset``
    work as with any data set).

    Args:
        images (Tensor[B, 1, S, S]): float32 in [0, 1].
        labels (Tensor[B]): int64.

    Item ``k`` is ``(images[k], labels[k])`` (views, made when read); :func:`collate_canvases`
    returns ``[images, labels]`` without making them.
    """

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, k: int | slice) -> Any:
        if isinstance(k, slice):
            return [self[j] for j in range(*k.indices(len(self)))]
        return self.images[k], self.labels[k]  # IndexError past the end ends iteration


def collate_canvases(samples: list[Any]) -> Any:
    """``collate_fn`` for the loaders: a :class:`CanvasBatch` becomes ``[images, labels]`` as
    built (the same values ``default_collate`` would give, without a copy); anything else goes
    through ``default_collate``."""
    if isinstance(samples, CanvasBatch):
        return [samples.images, samples.labels]
    return default_collate(samples)


class TranslatedClutteredDataset(Dataset):
    """Digits on a larger canvas, optionally with clutter (RAM "translated"/"cluttered" MNIST).

    Args:
        images (Tensor[N, h, w]): uint8 in [0, 255] or float in [0, 1].
        labels (Tensor[N]): class indices (int64).
        canvas_size (int): side ``S`` of the square output, ``S >= max(h, w)``. With
            ``S == h == w`` and no distractors the images are returned unchanged (plain MNIST).
        num_distractors (int): clutter patches per canvas, ``>= 0``.
        distractor_size (int): side ``d`` of each clutter patch, ``1 <= d <= min(h, w)``
            (not checked when ``num_distractors == 0``).
        fixed_seed (int | None): ``None`` (training): a fresh placement on every read, drawn from
            the global torch RNG, so ``seed_everything`` and Lightning's per-worker seeding make
            runs reproducible. An int ``>= 0`` (validation/test): item ``i`` is always drawn from
            ``numpy.random.default_rng([fixed_seed, i])``, so the same canvas comes back on every
            read, in every process and every run; :meth:`placement` then reports it.
        max_shift (int): after composing, translate each canvas by a random (dy, dx), each
            uniform in ``-max_shift..max_shift`` pixels, with zero fill (:func:`shift_canvases`):
            augmentation for training sets whose digit would otherwise sit still (plain 28x28
            MNIST; its digits have a 4-pixel empty margin, so 2 loses no ink). ``0``: off.

    Items are ``(image, label)``: ``image`` Tensor[1, S, S] float32 in [0, 1], ``label`` a 0-dim
    int64 tensor.

    Batches: ``__getitems__(indices)`` (called by ``DataLoader``) builds the ``B`` canvases at
    once and returns a :class:`CanvasBatch`; ``self[i]`` is the batch of one. With
    ``fixed_seed`` set the placements of all items are computed once and looked up, so a
    canvas does not depend on the batch it is read in. With ``fixed_seed=None`` the
    placements of a batch come from one ``torch.rand(B, L)`` call, which PyTorch's CPU
    generator fills in the order of ``B`` calls of ``torch.rand(L)``: from the same RNG state,
    a batch and its items read one by one are the same canvases (tested).
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        canvas_size: int,
        num_distractors: int = 0,
        distractor_size: int = 8,
        fixed_seed: int | None = None,
        max_shift: int = 0,
    ) -> None:
        if images.ndim != 3:
            raise ValueError(
                f"images must be Tensor[N, h, w], got shape {tuple(images.shape)}; "
                "squeeze the channel dimension of single-channel images."
            )
        if labels.shape != images.shape[:1]:
            raise ValueError(
                f"labels must be Tensor[N] with N={images.shape[0]} (one per image), "
                f"got shape {tuple(labels.shape)}."
            )
        n, h, w = images.shape
        if canvas_size < max(h, w):
            raise ValueError(
                f"canvas_size={canvas_size} is smaller than the {h}x{w} digits; "
                f"use canvas_size >= {max(h, w)}."
            )
        if num_distractors < 0:
            raise ValueError(f"num_distractors={num_distractors} is negative; use 0 or more.")
        if num_distractors > 0 and not 1 <= distractor_size <= min(h, w):
            raise ValueError(
                f"distractor_size={distractor_size} must be cut from a {h}x{w} digit; "
                f"use 1 <= distractor_size <= {min(h, w)}."
            )
        if num_distractors > 0 and n < 2:
            raise ValueError(
                f"distractors are cut from *other* images but the set has {n} image(s); "
                "use num_distractors=0 or at least 2 images."
            )
        if fixed_seed is not None and fixed_seed < 0:
            raise ValueError(f"fixed_seed={fixed_seed} is negative; use None or an int >= 0.")
        if not 0 <= max_shift < canvas_size:
            raise ValueError(
                f"max_shift={max_shift} must be in 0..{canvas_size - 1} for a {canvas_size}-pixel "
                "canvas (0: no shift; 2 is a usual augmentation for 28x28 digits)."
            )
        self.images = images.contiguous()  # batches read it flat
        self.labels = labels.long()
        self.canvas_size = canvas_size
        self.num_distractors = num_distractors
        self.distractor_size = distractor_size
        self.fixed_seed = fixed_seed
        self.max_shift = max_shift
        self._is_plain = canvas_size == h == w and num_distractors == 0 and max_shift == 0
        # Every random choice of an item is floor(u * high) for one uniform u in [0, 1):
        # digit row/col, then per distractor: source (among the N-1 others), crop row/col,
        # paste row/col; then, if max_shift > 0, the shift's dy + max_shift and dx + max_shift.
        d = distractor_size
        per_distractor = [n - 1, h - d + 1, w - d + 1, canvas_size - d + 1, canvas_size - d + 1]
        shifts = [2 * max_shift + 1] * 2 if max_shift else []
        self._highs = torch.tensor(
            [canvas_size - h + 1, canvas_size - w + 1] + per_distractor * num_distractors + shifts,
            dtype=torch.float64,
        )  # (L,)
        self._fixed_draws: Tensor | None = None  # (N, L) int64, built on the first read

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        """Item ``i`` (negative counts from the end): the batch of one, ``__getitems__([i])[0]``."""
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: Sequence[int]) -> CanvasBatch:
        """Items ``indices`` (negative ones count from the end) built as one batch.

        Returns:
            CanvasBatch: item ``k`` is ``(image, label)`` of item ``indices[k]``, with
            ``images`` Tensor[B, 1, S, S] float32 in [0, 1] and ``labels`` Tensor[B] int64.
        """
        idx = self._index(indices)
        if self._is_plain:
            canvas = self.images[idx]  # (B, h, w), a copy
        else:
            placement, shift = self._placement_batch(idx)
            canvas = compose_batch(
                self.images, idx, placement, self.canvas_size, self.distractor_size
            )  # (B, S, S)
            canvas = shift_canvases(canvas, shift, self.max_shift)
        if canvas.dtype == torch.uint8:
            images = canvas.float().div_(255.0)
        else:
            images = canvas.to(torch.float32)
        return CanvasBatch(images.unsqueeze(1), self.labels[idx])

    def placement(self, i: int) -> Placement:
        """Where item ``i``'s digit and clutter are; only defined when ``fixed_seed`` is set."""
        p, shift = self._placement_batch(self._index([i], "placement()"))
        (_, h, w), d = self.images.shape, self.distractor_size
        distractors = tuple(
            Distractor(source, Box(*crop, d, d), Box(*paste, d, d))
            for source, crop, paste in zip(
                p.sources[0].tolist(), p.crops[0].tolist(), p.pastes[0].tolist()
            )
        )
        return Placement(Box(*p.digit[0].tolist(), h, w), distractors, tuple(shift[0].tolist()))

    def box(self, i: int) -> Box:
        """Canvas box (row, col, height, width) of item ``i``'s h x w digit image (see
        :meth:`boxes`). Needs ``fixed_seed``."""
        return Box(*self.boxes([i])[0].tolist())

    def boxes(self, indices: Sequence[int]) -> Tensor:
        """Canvas boxes (Tensor[B, 4] int64, (row, col, height, width)) of the h x w digit
        images of items ``indices``.

        A box covers the whole pasted image, including its empty margin (MNIST digits sit in a
        20x20 region centred in the 28x28 image), after the canvas's shift (with ``max_shift``
        it may reach past the canvas by up to that many pixels). Needs ``fixed_seed``.
        """
        p, shift = self._placement_batch(self._index(indices, "boxes()"))
        size = torch.tensor(self.images.shape[1:]).expand(len(shift), 2)  # (B, 2): h, w
        return torch.cat([p.digit + shift, size], 1)

    def _index(self, indices: Sequence[int], fixed_for: str | None = None) -> Tensor:
        """``indices`` as Tensor[B] int64 in ``0..N-1`` (negative ones count from the end);
        ``IndexError`` past either end; ``ValueError`` when ``fixed_for`` (what asks) needs a
        fixed placement and ``fixed_seed`` is None."""
        if fixed_for is not None and self.fixed_seed is None:
            raise ValueError(
                f"{fixed_for} needs a fixed placement, but fixed_seed=None draws a new one on "
                "every read; construct the dataset with fixed_seed=<int>."
            )
        n = len(self)
        idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1)  # (B,)
        if idx.numel() and not (-n <= int(idx.min()) and int(idx.max()) < n):
            raise IndexError(
                f"indices in [{int(idx.min())}, {int(idx.max())}] out of range for {n} items."
            )
        return torch.where(idx < 0, idx + n, idx)

    def _placement_batch(self, idx: Tensor) -> tuple[PlacementBatch, Tensor]:
        """Placements of items ``idx`` (Tensor[B], in ``0..N-1``) and their shifts (Tensor[B, 2]
        int64, (dy, dx), zeros if ``max_shift == 0``), decoded from the random integers
        ``r[b, k] = floor(u[b, k] * highs[k])``: ``u`` is ``torch.rand(B, L)`` when drawn
        (``fixed_seed=None``), row ``i`` of the fixed table otherwise."""
        B, K, L = len(idx), self.num_distractors, len(self._highs)
        if self.fixed_seed is None:
            u = torch.rand(B, L, dtype=torch.float64)  # (B, L)
            r = (u * self._highs).long()
        else:
            if self._fixed_draws is None:  # once per process, a few us per item
                u = np.empty((len(self), L))
                for i in range(len(self)):  # item i's own stream: any subset reads the same
                    u[i] = np.random.default_rng([self.fixed_seed, i]).random(L)
                self._fixed_draws = (torch.from_numpy(u) * self._highs).long()  # (N, L)
            r = self._fixed_draws[idx]  # (B, L)
        per = r[:, 2 : 2 + 5 * K].view(B, K, 5)  # source, crop row/col, paste row/col
        sources = per[..., 0] + (per[..., 0] >= idx[:, None])  # skip the item itself
        shift = r[:, 2 + 5 * K :] - self.max_shift if self.max_shift else r.new_zeros(B, 2)
        return PlacementBatch(r[:, :2], sources, per[..., 1:3], per[..., 3:5]), shift
