"""MNIST sequences: 1..N real MNIST digits left to right on a cluttered canvas, the multi-digit
task on which DRAM (Ba et al., ICLR 2015, Sec. 4) is checked before SVHN.

Each canvas: a length ``L`` uniform in ``min_length..max_length``; ``L`` digits drawn uniformly
from the split's MNIST images; gaps between neighbouring 28x28 digit images uniform in
``min_gap..max_gap`` pixels (negative: overlap); the row of digits placed at a uniform column
where it fits, at a uniform base row, each digit moved by a vertical jitter uniform in
``-max_jitter..max_jitter``; then ``num_distractors`` patches of ``distractor_size`` pixels cut
from random images of the split at random places (as cluttered MNIST, Mnih et al. 2014). All
pastes combine by a pixel-wise maximum. Coordinates are (row, col) of top-left pixels, rows
down.

Every random choice is ``floor(u * high)`` for one uniform ``u``, the ``U`` uniforms of a canvas
in a fixed order, so a whole batch is laid out and pasted by tensor ops from one Tensor[B, U]:
training draws it from the global torch RNG (``seed_everything`` reproduces it), validation
and test compute row ``i`` from ``numpy.random.default_rng([fixed_seed, i])``, so canvas ``i`` is
the same in every read, process and run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from raccn.datamodules.label_sequences import SequenceDataModule, pad_sequences
from raccn.datamodules.mnist_files import ensure_mnist_files, load_mnist


class SequenceLayout(NamedTuple):
    """Where everything goes on ``B`` canvases (int64 tensors).

    ``lengths`` Tensor[B]: digits ``L`` of each canvas; ``sources`` Tensor[B, N]: image of each
    digit slot (slots ``>= L`` unused); ``rows``/``cols`` Tensor[B, N]: top-left pixel of each
    digit image on the canvas (``cols`` increasing); ``clutter`` Tensor[B, K, 5]: per patch the
    source image, the (row, col) cut in it and the (row, col) pasted at on the canvas.
    """

    lengths: Tensor
    sources: Tensor
    rows: Tensor
    cols: Tensor
    clutter: Tensor


def _windows(start: Tensor, h: int, w: int, stride: int) -> Tensor:
    """Flat offsets Tensor[P, h * w] of h x w windows whose top-left pixels are at the flat
    offsets ``start`` (Tensor[P]) of row-major images ``stride`` pixels wide."""
    return start[:, None] + (torch.arange(h)[:, None] * stride + torch.arange(w)).view(1, -1)


def paste_sequences(images: Tensor, layout: SequenceLayout, canvas_size: int,
                    distractor_size: int) -> Tensor:
    """Canvases of a layout.

    Args:
        images (Tensor[n, h, w]): non-negative source images (uint8 or float).
        layout: positions, inside the canvas (as :class:`MNISTSequenceDataset` draws them).
        canvas_size (int): side ``S``.
        distractor_size (int): side ``d`` of the clutter patches.

    Returns:
        Tensor[B, S, S], dtype of ``images``: the pixel-wise maximum of the ``L`` digit images
        and ``K`` patches pasted on a zero canvas.
    """
    (_, h, w), S, d = images.shape, canvas_size, distractor_size
    B, N = layout.sources.shape
    canvas = images.new_zeros(B * S * S)
    b, k = (torch.arange(N) < layout.lengths[:, None]).nonzero(as_tuple=True)  # used slots
    start = b * (S * S) + layout.rows[b, k] * S + layout.cols[b, k]
    digits = images[layout.sources[b, k]].reshape(-1)
    canvas.scatter_reduce_(0, _windows(start, h, w, S).view(-1), digits, "amax")
    if layout.clutter.shape[1]:
        src, cut_r, cut_c, row, col = layout.clutter.reshape(-1, 5).unbind(1)  # (B*K,) each
        cut = _windows(src * (h * w) + cut_r * w + cut_c, d, d, w)
        patches = images.reshape(-1)[cut.view(-1)]
        b = torch.arange(B).repeat_interleave(layout.clutter.shape[1])
        paste = _windows(b * (S * S) + row * S + col, d, d, S)
        canvas.scatter_reduce_(0, paste.view(-1), patches, "amax")
    return canvas.view(B, S, S)


class MNISTSequenceDataset(Dataset):
    """Canvases of 1..N digit images (the module docstring says how they are drawn).

    Args:
        images (Tensor[n, h, w]): digit images, uint8 in [0, 255] or float in [0, 1].
        labels (Tensor[n] int64): their digits 0..9.
        size (int): canvases in the set (``len``).
        canvas_size (int): side ``S``.
        min_length, max_length (int): digits per canvas, ``1 <= min <= max``; targets have
            ``max_length`` slots.
        min_gap, max_gap (int): horizontal gap between neighbouring digit images, ``> -w``.
        max_jitter (int): vertical jitter of each digit, ``>= 0``.
        num_distractors (int): clutter patches per canvas, ``>= 0``.
        distractor_size (int): their side, ``1..min(h, w)``.
        fixed_seed (int | None): ``None``: a new canvas on every read (training); an int:
            canvas ``i`` fixed by ``default_rng([fixed_seed, i])`` (validation/test).

    Items are ``(image, targets, length)``: Tensor[1, S, S] float32 in [0, 1], Tensor[N] int64
    (digits, then EOS = 10) and Tensor[] int64. ``dataset[i]`` and ``__getitems__`` (which
    the DataLoader calls with a batch of indices) run the same batched code.
    """

    def __init__(self, images: Tensor, labels: Tensor, size: int, canvas_size: int,
                 min_length: int, max_length: int, min_gap: int, max_gap: int, max_jitter: int,
                 num_distractors: int, distractor_size: int, fixed_seed: int | None) -> None:
        n, h, w = images.shape
        check_geometry(canvas_size, h, w, min_length, max_length, min_gap, max_gap, max_jitter,
                       num_distractors, distractor_size)
        if labels.shape != (n,) or n < 1 or size < 1:
            raise ValueError(f"need >= 1 image with one label each and size >= 1, got images "
                             f"{tuple(images.shape)}, labels {tuple(labels.shape)}, size={size}")
        self.images, self.labels = images.contiguous(), labels.long()
        self.size, self.canvas_size, self.fixed_seed = size, canvas_size, fixed_seed
        self.min_length, self.max_length = min_length, max_length
        self.min_gap, self.max_gap, self.max_jitter = min_gap, max_gap, max_jitter
        self.num_distractors, self.distractor_size = num_distractors, distractor_size
        # uniforms per canvas: length, N sources, N - 1 gaps, column, base row, N jitters, 5 K
        self.num_uniforms = 3 * max_length + 2 + 5 * num_distractors
        self._fixed: Tensor | None = None  # (size, U) float64, built on first read

    def __len__(self) -> int:
        return self.size

    def _uniforms(self, idx: Tensor) -> Tensor:
        """Tensor[B, U] float64 in [0, 1): drawn, or looked up for a fixed set."""
        if self.fixed_seed is None:
            return torch.rand(len(idx), self.num_uniforms, dtype=torch.float64)
        if self._fixed is None:  # once per process, ~10 us per canvas
            self._fixed = torch.from_numpy(np.stack([
                np.random.default_rng([self.fixed_seed, i]).random(self.num_uniforms)
                for i in range(self.size)
            ]))
        return self._fixed[idx]

    def layout(self, idx: Tensor) -> SequenceLayout:
        """Layout of canvases ``idx`` (Tensor[B] int64): drawn anew for training, the fixed one
        otherwise."""
        u = self._uniforms(idx)
        (n, h, w), S, N, K = self.images.shape, self.canvas_size, self.max_length, self.num_distractors
        B = len(idx)

        def pick(cols: slice | int, high) -> Tensor:
            return (u[:, cols] * high).long()

        lengths = self.min_length + pick(0, self.max_length - self.min_length + 1)  # (B,)
        sources = pick(slice(1, 1 + N), n)  # (B, N)
        gaps = self.min_gap + pick(slice(1 + N, 2 * N), self.max_gap - self.min_gap + 1)
        gaps = gaps * (torch.arange(N - 1) < (lengths - 1)[:, None])  # (B, N-1), 0 if unused
        width = lengths * w + gaps.sum(dim=1)  # (B,)
        left = pick(2 * N, S - width + 1)  # (B,)
        steps = torch.cat([torch.zeros(B, 1, dtype=torch.long), w + gaps], dim=1)  # (B, N)
        cols = left[:, None] + steps.cumsum(dim=1)
        J = self.max_jitter
        base = J + pick(2 * N + 1, S - h - 2 * J + 1)  # (B,)
        rows = base[:, None] + pick(slice(2 * N + 2, 3 * N + 2), 2 * J + 1) - J  # (B, N)
        d = self.distractor_size
        highs = torch.tensor([n, h - d + 1, w - d + 1, S - d + 1, S - d + 1], dtype=torch.float64)
        clutter = (u[:, 3 * N + 2 :].view(B, K, 5) * highs).long()  # (B, K, 5)
        return SequenceLayout(lengths, sources, rows, cols, clutter)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, Tensor]:
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[Tensor, Tensor, Tensor]]:
        """Items ``indices`` built as one batch (negative indices count from the end)."""
        idx = torch.as_tensor(indices, dtype=torch.int64).reshape(-1)
        if idx.numel() and not (-self.size <= int(idx.min()) and int(idx.max()) < self.size):
            raise IndexError(f"indices {idx.tolist()[:5]}... out of range for {self.size} items.")
        idx = torch.where(idx < 0, idx + self.size, idx)
        layout = self.layout(idx)
        canvas = paste_sequences(self.images, layout, self.canvas_size, self.distractor_size)
        images = canvas.float().div_(255.0) if canvas.dtype == torch.uint8 else canvas.float()
        targets = pad_sequences(self.labels[layout.sources], layout.lengths, self.max_length)
        return list(zip(images.unsqueeze(1), targets, layout.lengths))


def check_geometry(canvas_size: int, h: int, w: int, min_length: int, max_length: int,
                   min_gap: int, max_gap: int, max_jitter: int, num_distractors: int,
                   distractor_size: int) -> None:
    """``ValueError`` with the fix unless every canvas of the given geometry fits."""
    if not 1 <= min_length <= max_length:
        raise ValueError(f"min_length={min_length}, max_length={max_length}: need "
                         "1 <= min_length <= max_length (e.g. 1 and 3).")
    if not -w < min_gap <= max_gap:
        raise ValueError(f"min_gap={min_gap}, max_gap={max_gap}: need {-w} < min_gap <= max_gap "
                         "(pixels between neighbouring digit images; negative overlaps).")
    if max_jitter < 0:
        raise ValueError(f"max_jitter={max_jitter} must be >= 0.")
    widest = max_length * w + (max_length - 1) * max_gap
    if canvas_size < widest or canvas_size < h + 2 * max_jitter:
        raise ValueError(
            f"canvas_size={canvas_size} cannot hold {max_length} digits {w} px wide with gaps up "
            f"to {max_gap} ({widest} px) and {h} px digits jittered by {max_jitter}; use "
            f"canvas_size >= {max(widest, h + 2 * max_jitter)} or fewer/closer digits."
        )
    if num_distractors < 0 or (num_distractors and not 1 <= distractor_size <= min(h, w)):
        raise ValueError(f"num_distractors={num_distractors} must be >= 0 and distractor_size="
                         f"{distractor_size} in 1..{min(h, w)}.")


class MNISTSequencesDataModule(SequenceDataModule):
    """MNIST sequences: batches ``(images, targets, lengths)``, Tensor[B, 1, S, S] float32 in
    [0, 1], Tensor[B, max_length] int64 (digits, then EOS = 10), Tensor[B] int64.

    Splits: ``val_size`` images are held out of the MNIST training file by a permutation seeded
    with ``seed``; each split's canvases use only its own digits (train: the rest of the
    training file; test: the test file) and the split has as many canvases as digits.
    Validation canvases are fixed by ``seed + 1``, test canvases by the constant
    ``TEST_PLACEMENT_SEED`` (comparable across runs), training canvases are new on every read.

    Args:
        data_dir (str): folder with the MNIST files, as ``MNISTDataModule`` reads them.
        batch_size (int): canvases per batch, ``>= 1``.
        num_workers (int): DataLoader worker processes, ``>= 0``.
        canvas_size (int): side ``S``, ``>= 28 * max_length + (max_length - 1) * max_gap``.
        min_length, max_length (int): digits per canvas; ``max_length`` is the label slots.
        min_gap, max_gap (int): pixels between neighbouring 28x28 digit images.
        max_jitter (int): vertical jitter of each digit in pixels.
        num_distractors (int): clutter patches per canvas (RAM paper: 8 on 100x100).
        distractor_size (int): their side (8).
        val_size (int): training digits held out for validation, ``1..59999``.
        seed (int): split permutation and validation canvases, ``>= 0``.
        download (bool): try to download missing files in ``prepare_data``.
        predict_paths (list[str] | None): image files to predict on (grey, resized to S x S).
    """

    TEST_PLACEMENT_SEED = 2

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: int = 128,
        num_workers: int = 0,
        canvas_size: int = 100,
        min_length: int = 1,
        max_length: int = 3,
        min_gap: int = 0,
        max_gap: int = 8,
        max_jitter: int = 8,
        num_distractors: int = 8,
        distractor_size: int = 8,
        val_size: int = 5000,
        seed: int = 0,
        download: bool = True,
        predict_paths: list[str] | None = None,
    ) -> None:
        check_geometry(canvas_size, 28, 28, min_length, max_length, min_gap, max_gap, max_jitter,
                       num_distractors, distractor_size)
        if not 1 <= val_size < 60_000:
            raise ValueError(f"val_size={val_size} must be in 1..59999 (e.g. 5000).")
        if seed < 0:
            raise ValueError(f"seed={seed} is negative; use an int >= 0.")
        super().__init__(batch_size, num_workers, canvas_size, max_length, predict_paths)
        self.save_hyperparameters()
        self.data_dir, self.download, self.seed, self.val_size = data_dir, download, seed, val_size
        self.geometry = {
            "canvas_size": canvas_size, "min_length": min_length, "max_length": max_length,
            "min_gap": min_gap, "max_gap": max_gap, "max_jitter": max_jitter,
            "num_distractors": num_distractors, "distractor_size": distractor_size,
        }
        self.split_indices: dict[str, Tensor] = {}

    @property
    def num_channels(self) -> int:
        return 1

    def prepare_data(self) -> None:
        """Download missing files if ``download``; ``FileNotFoundError`` if still missing."""
        ensure_mnist_files(self.data_dir, self.download)

    def setup(self, stage: str | None = None) -> None:
        if self.setup_predict(stage) or self.train_set is not None:
            return
        mnist = load_mnist(self.data_dir)
        n = mnist.train_images.shape[0]
        if self.val_size >= n:
            raise ValueError(f"val_size={self.val_size} leaves no training digits of the {n} in "
                             f"{self.data_dir}; use val_size < {n}.")
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))
        val_idx, train_idx = perm[: self.val_size], perm[self.val_size :]
        self.split_indices = {"train": train_idx, "val": val_idx,
                              "test": torch.arange(len(mnist.test_labels))}
        pools = {
            "train": (mnist.train_images[train_idx], mnist.train_labels[train_idx], None),
            "val": (mnist.train_images[val_idx], mnist.train_labels[val_idx], self.seed + 1),
            "test": (mnist.test_images, mnist.test_labels, self.TEST_PLACEMENT_SEED),
        }
        built = {
            split: MNISTSequenceDataset(images, labels, len(labels), fixed_seed=seed,
                                        **self.geometry)
            for split, (images, labels, seed) in pools.items()
        }
        self.train_set, self.val_set, self.test_set = built["train"], built["val"], built["test"]
