"""Tests for datamodules/: tiny generated IDX files, never the real MNIST, never the network."""

from __future__ import annotations

import gzip
import math
import socket
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, RandomSampler, SequentialSampler, Subset, default_collate

from raccn.datamodules import (
    ClutteredDigitsDataModule,
    LocalizedDigitsDataModule,
    MNISTDataModule,
    TranslatedClutteredDataset,
    mnist_files,
)
from raccn.datamodules.idx import IdxFormatError, read_idx
from raccn.datamodules.synthetic import (
    Box,
    CanvasBatch,
    Distractor,
    Placement,
    PlacementBatch,
    collate_canvases,
    compose_batch,
    shift_canvases,
)

FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


# ----------------------------------------------------------------------------- fixtures/helpers
from lightning_probe import fit_one_batch


def write_idx(path: Path, array: np.ndarray, gz: bool) -> Path:
    """Write a uint8 array in the IDX format (magic 0x0000080<ndim>, big-endian sizes)."""
    data = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    data += struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()
    path = path.with_name(path.name + ".gz") if gz else path
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def fake_arrays(n_train: int = 50, n_test: int = 20, seed: int = 0) -> dict[str, np.ndarray]:
    """Random 28x28 "digits" with every pixel >= 1, so the ink box is the whole image."""
    rng = np.random.default_rng(seed)
    return {
        FILES[0]: rng.integers(1, 256, (n_train, 28, 28), dtype=np.uint8),
        FILES[1]: rng.integers(0, 10, n_train, dtype=np.uint8),
        FILES[2]: rng.integers(1, 256, (n_test, 28, 28), dtype=np.uint8),
        FILES[3]: rng.integers(0, 10, n_test, dtype=np.uint8),
    }


def write_mnist(root: Path, gz: bool, torchvision_layout: bool = True) -> dict[str, np.ndarray]:
    arrays = fake_arrays()
    folder = root / "MNIST" / "raw" if torchvision_layout else root
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        write_idx(folder / name, array, gz)
    return arrays


def make_mnist(root: Path, **kwargs) -> MNISTDataModule:
    kwargs = {"val_size": 10, "download": False, "batch_size": 8, **kwargs}
    dm = MNISTDataModule(data_dir=str(root), **kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def find_digit(canvas: torch.Tensor, digit: torch.Tensor) -> list[tuple[int, int]]:
    """All (row, col) where ``digit`` (Tensor[h, w]) sits in ``canvas`` (Tensor[S, S]) exactly."""
    h, w = digit.shape
    size = canvas.shape[0]
    return [
        (r, c)
        for r in range(size - h + 1)
        for c in range(size - w + 1)
        if torch.equal(canvas[r : r + h, c : c + w], digit)
    ]


# ----------------------------------------------------------------------------- per-item reference
# The library builds canvases a batch at a time (dataset[i] is the batch of one); these build
# one item at a time with slices and Python numbers, the slow and obviously correct reference.
def reference_placement(ds: TranslatedClutteredDataset, i: int) -> Placement:
    """Item ``i``'s placement decoded from its own stream of uniforms ``u``, one per choice, as
    ``floor(u * number of choices)``: digit row and col; per distractor its source among the
    N-1 other images, crop row and col, paste row and col; then dy and dx (``+ max_shift``).
    ``u`` comes from ``numpy.random.default_rng([fixed_seed, i])``, or, for training sets,
    from ``torch.rand(L)`` of the global RNG (drawn here)."""
    (n, h, w), S = ds.images.shape, ds.canvas_size
    K, d, s = ds.num_distractors, ds.distractor_size, ds.max_shift
    highs = [S - h + 1, S - w + 1] + [n - 1, h - d + 1, w - d + 1, S - d + 1, S - d + 1] * K
    highs += [2 * s + 1] * 2 if s else []
    if ds.fixed_seed is None:
        u = torch.rand(len(highs), dtype=torch.float64).tolist()
    else:
        u = np.random.default_rng([ds.fixed_seed, i]).random(len(highs)).tolist()
    r = [math.floor(a * b) for a, b in zip(u, highs)]
    distractors = []
    for k in range(2, 2 + 5 * K, 5):
        source = r[k] + (r[k] >= i)  # skip item i itself
        distractors.append(
            Distractor(source, Box(r[k + 1], r[k + 2], d, d), Box(r[k + 3], r[k + 4], d, d))
        )
    shift = (r[-2] - s, r[-1] - s) if s else (0, 0)
    return Placement(Box(r[0], r[1], h, w), tuple(distractors), shift)


def compose(
    digit: torch.Tensor, size: int, pos: tuple[int, int], patches=()
) -> torch.Tensor:
    """``digit`` (Tensor[h, w]) with its top-left pixel at ``pos`` = (row, col) of a black
    ``size x size`` canvas, then each ``(patch, (row, col))`` by a pixel-wise maximum."""
    canvas = digit.new_zeros(size, size)
    (row, col), (h, w) = pos, digit.shape
    canvas[row : row + h, col : col + w] = digit
    for patch, (row, col) in patches:
        region = canvas[row : row + patch.shape[0], col : col + patch.shape[1]]
        assert region.shape == patch.shape, "patch outside the canvas"
        torch.maximum(region, patch, out=region)
    return canvas


def shift(canvas: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``out[y, x] = canvas[y - dy, x - dx]`` (Tensor[S, S]) where that pixel exists, else 0."""
    S = canvas.shape[-1]
    out = torch.zeros_like(canvas)
    out[max(dy, 0) : S + min(dy, 0), max(dx, 0) : S + min(dx, 0)] = canvas[
        max(-dy, 0) : S - max(dy, 0), max(-dx, 0) : S - max(dx, 0)
    ]
    return out


def reference_item(ds: TranslatedClutteredDataset, i: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Item ``i`` (``(image Tensor[1, S, S] float32, label)``) built alone from
    :func:`reference_placement`; plain sets (no canvas, clutter or shift) draw nothing."""
    i = i % len(ds)
    (_, h, w), S = ds.images.shape, ds.canvas_size
    if S == h == w and ds.num_distractors == 0 and ds.max_shift == 0:
        canvas = ds.images[i].clone()
    else:
        p = reference_placement(ds, i)
        d = ds.distractor_size
        patches = [
            (ds.images[x.source, x.crop.row : x.crop.row + d, x.crop.col : x.crop.col + d],
             (x.paste.row, x.paste.col))
            for x in p.distractors
        ]
        canvas = shift(compose(ds.images[i], S, (p.digit.row, p.digit.col), patches), *p.shift)
    image = canvas.float() / 255 if canvas.dtype == torch.uint8 else canvas.float()
    return image[None], ds.labels[i]


def stacked_items(ds, indices) -> list[torch.Tensor]:
    """The reference items of ``indices``, stacked: ``[images, labels]``."""
    return default_collate([reference_item(ds, i) for i in indices])


# ----------------------------------------------------------------------------- idx reader
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_roundtrip(tmp_path, gz):
    array = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5)
    out = read_idx(write_idx(tmp_path / "x-idx3-ubyte", array, gz), ndim=3)
    assert out.dtype == torch.uint8
    assert np.array_equal(out.numpy(), array)


# ----------------------------------------------------------------------------- MNIST: plain
@pytest.mark.parametrize("gz, torchvision_layout", [(False, True), (True, True), (True, False)])
def test_mnist_plain_counts_and_exact_pixels(tmp_path, gz, torchvision_layout):
    arrays = write_mnist(tmp_path, gz, torchvision_layout)
    dm = make_mnist(tmp_path)
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (40, 10, 20)
    assert (dm.num_classes, dm.num_channels, dm.image_size) == (10, 1, (28, 28))
    train_images, train_labels = arrays[FILES[0]], arrays[FILES[1]]
    # val + train partition the training file
    train_idx, val_idx = dm.split_indices["train"], dm.split_indices["val"]
    assert sorted(torch.cat([train_idx, val_idx]).tolist()) == list(range(50))
    for split, ds in (("train", dm.train_set), ("val", dm.val_set)):
        for k in range(len(ds)):
            image, label = ds[k]
            src = int(dm.split_indices[split][k])
            assert image.shape == (1, 28, 28) and image.dtype == torch.float32
            assert label.dtype == torch.int64 and int(label) == train_labels[src]
            assert torch.equal(image[0], torch.from_numpy(train_images[src]).float() / 255)
    for k in range(len(dm.test_set)):
        image, label = dm.test_set[k]
        assert torch.equal(image[0], torch.from_numpy(arrays[FILES[2]][k]).float() / 255)
        assert int(label) == arrays[FILES[3]][k]
    assert 0.0 < float(image.min()) and float(image.max()) <= 1.0


def test_mnist_loaders_batches_and_flags(tmp_path):
    write_mnist(tmp_path, gz=True)
    dm = make_mnist(tmp_path, variant="translated", canvas_size=36, batch_size=16)
    batches = list(dm.train_dataloader())
    assert len(batches) == math.ceil(40 / 16)  # drop_last=False
    assert sum(len(y) for _, y in batches) == 40
    x, y = batches[0]
    assert x.shape == (16, 1, 36, 36) and x.dtype == torch.float32
    assert y.shape == (16,) and y.dtype == torch.int64 and 0 <= int(y.min()) <= int(y.max()) <= 9
    assert [len(y) for _, y in dm.val_dataloader()] == [10]
    assert [len(y) for _, y in dm.predict_dataloader()] == [16, 4]
    assert dm.hparams.variant == "translated" and dm.hparams.canvas_size == 36
    assert isinstance(dm.train_dataloader().sampler, RandomSampler)
    assert isinstance(dm.val_dataloader().sampler, SequentialSampler)
    assert isinstance(dm.test_dataloader().sampler, SequentialSampler)
    workers = MNISTDataModule(str(tmp_path), num_workers=2, download=False, val_size=10)
    workers.setup("fit")
    loader = workers.train_dataloader()
    assert loader.num_workers == 2 and loader.persistent_workers and not loader.pin_memory


def test_loaders_before_setup_raise(tmp_path):
    dm = MNISTDataModule(str(tmp_path), download=False)
    with pytest.raises(RuntimeError, match="setup"):
        dm.train_dataloader()


# ----------------------------------------------------------------------------- translated
def test_translated_keeps_digit_intact_and_background_black(tmp_path):
    write_mnist(tmp_path, gz=False)
    dm = make_mnist(tmp_path, variant="translated", canvas_size=40)
    assert dm.image_size == (40, 40)
    digit_rows = set()
    for ds in (dm.test_set, dm.train_set):
        for k in range(len(ds)):
            image = ds[k][0][0]
            digit = ds.images[k].float() / 255
            assert image.shape == (40, 40)
            assert torch.allclose(image.sum(), digit.sum())  # exactly the digit's mass
            ((row, col),) = find_digit(image, digit)
            assert int((image > 0).sum()) == 28 * 28  # nothing else on the canvas
            if ds.fixed_seed is not None:
                assert tuple(ds.box(k)) == (row, col, 28, 28)
            digit_rows.add(row)
    assert len(digit_rows) > 5  # positions actually vary over the 13 possible rows


def test_fixed_seed_items_repeat_and_train_items_change(tmp_path):
    write_mnist(tmp_path, gz=True)
    a = make_mnist(tmp_path, variant="cluttered", canvas_size=44)
    b = make_mnist(tmp_path, variant="cluttered", canvas_size=44)
    for ds_a, ds_b in ((a.val_set, b.val_set), (a.test_set, b.test_set)):
        for k in range(len(ds_a)):
            first = ds_a[k][0]
            assert torch.equal(first, ds_a[k][0])  # two reads
            assert torch.equal(first, ds_b[k][0])  # two instances
    assert [a.val_set.box(k) for k in range(10)] != [a.test_set.box(k) for k in range(10)]
    other = make_mnist(tmp_path, variant="cluttered", canvas_size=44, seed=5)
    # the test canvases are fixed whatever the seed (comparable numbers); validation follows it
    assert all(torch.equal(a.test_set[k][0], other.test_set[k][0]) for k in range(20))
    assert [a.val_set.box(k) for k in range(10)] != [other.val_set.box(k) for k in range(10)]
    torch.manual_seed(0)
    reads = [torch.stack([a.train_set[k][0] for k in range(10)]) for _ in range(2)]
    assert not torch.equal(reads[0], reads[1])  # on-the-fly augmentation
    torch.manual_seed(0)
    assert torch.equal(torch.stack([a.train_set[k][0] for k in range(10)]), reads[0])


def test_train_placement_is_uniform_over_the_canvas():
    images = torch.full((2, 4, 4), 255, dtype=torch.uint8)
    ds = TranslatedClutteredDataset(images, torch.zeros(2), canvas_size=6)  # 3x3 positions
    torch.manual_seed(0)
    counts = torch.zeros(3, 3)
    for _ in range(900):
        ((row, col),) = find_digit(ds[0][0][0], torch.ones(4, 4))
        counts[row, col] += 1
    assert counts.min() > 70 and counts.max() < 130  # expected 100 each


# ----------------------------------------------------------------------------- cluttered
def test_cluttered_matches_pixel_loop_reference(tmp_path):
    write_mnist(tmp_path, gz=True)
    dm = make_mnist(
        tmp_path, variant="cluttered", canvas_size=50, num_distractors=3, distractor_size=8
    )
    ds = dm.test_set
    assert dm.image_size == (50, 50)
    for k in range(len(ds)):
        image = ds[k][0]
        assert image.shape == (1, 50, 50)
        p = ds.placement(k)
        assert len(p.distractors) == 3
        assert all(d.source != k and 0 <= d.source < len(ds) for d in p.distractors)
        assert p == reference_placement(ds, k)
        assert torch.equal(image, reference_item(ds, k)[0])
        digit = ds.images[k].float() / 255
        box = ds.box(k)
        under = image[0, box.row : box.row + 28, box.col : box.col + 28]
        assert torch.all(under >= digit)  # clutter never darkens the digit
        assert float(image.sum()) >= float(digit.sum())
    # more mass than the digit alone (pixels > 0 everywhere in the fake digits)
    extra = [int((ds[k][0] > 0).sum()) - 28 * 28 for k in range(len(ds))]
    assert sum(e > 0 for e in extra) >= 15 and max(extra) <= 3 * 64


def test_distractors_come_from_other_images():
    # two flat images, 100 and 200: item 0 may only get clutter valued 200, item 1 only 100
    images = torch.tensor([100, 200], dtype=torch.uint8).view(2, 1, 1).expand(2, 4, 4)
    labels = torch.tensor([0, 1])
    for seed in range(30):
        ds = TranslatedClutteredDataset(images, labels, 12, 3, 2, fixed_seed=seed)
        assert [d.source for i in (0, 1) for d in ds.placement(i).distractors] == [1] * 3 + [0] * 3
    ds = TranslatedClutteredDataset(images, labels, 12, 3, 2)
    torch.manual_seed(0)
    for _ in range(50):
        item0, item1 = ds[0][0], ds[1][0]
        assert int((item0 == 100 / 255).sum()) <= 16 and int((item0 == 200 / 255).sum()) > 0
        assert int((item1 == 200 / 255).sum()) == 16


def test_more_distractors_add_more_clutter():
    images = torch.randint(1, 256, (30, 10, 10), dtype=torch.uint8)
    labels = torch.zeros(30, dtype=torch.long)

    def ink(k: int) -> float:
        ds = TranslatedClutteredDataset(images, labels, 40, k, 4, fixed_seed=0)
        return sum(int((ds[i][0] > 0).sum()) for i in range(30)) / 30 - 100

    clutter = [ink(k) for k in (0, 2, 8)]
    assert clutter[0] == 0 and 0 < clutter[1] < clutter[2] <= 8 * 16


def test_placement_needs_fixed_seed():
    ds = TranslatedClutteredDataset(torch.zeros(3, 4, 4), torch.zeros(3), 8, 1, 2)
    for ask, index in ((ds.box, 0), (ds.placement, 0), (ds.boxes, [0])):
        with pytest.raises(ValueError, match="fixed_seed"):
            ask(index)
    fixed = TranslatedClutteredDataset(torch.zeros(3, 4, 4), torch.zeros(3), 8, 1, 2, fixed_seed=0)
    with pytest.raises(IndexError, match="out of range for 3 items"):
        fixed.box(3)
    with pytest.raises(IndexError, match="out of range for 3 items"):
        fixed[-4]


# ----------------------------------------------------------------------------- batched path
def ink_origin(images: torch.Tensor) -> torch.Tensor:
    """(row, col) (Tensor[B, 2]) of the first inked row and column of each Tensor[B, 1, S, S]."""
    mask = images[:, 0] > 0
    return torch.stack([mask.any(2).int().argmax(1), mask.any(1).int().argmax(1)], 1)


@pytest.mark.parametrize("variant", ["plain", "translated", "cluttered"])
def test_batched_items_equal_per_item_for_fixed_splits(tmp_path, variant):
    write_mnist(tmp_path, gz=True)
    dm = make_mnist(tmp_path, variant=variant, canvas_size=44, num_distractors=4)
    S = dm.image_size[0]
    for ds in (dm.val_set, dm.test_set):
        indices = [3, 0, -1, 7, 3, len(ds) - 2]  # any order, repeats, negative
        batch = ds.__getitems__(indices)
        assert isinstance(batch, CanvasBatch) and len(batch) == 6
        x, y = collate_canvases(batch)
        assert x.shape == (6, 1, S, S) and x.dtype == torch.float32
        assert y.shape == (6,) and y.dtype == torch.int64
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
        expected = stacked_items(ds, indices)
        assert torch.equal(x, expected[0]) and torch.equal(y, expected[1])
        for k, i in enumerate(indices):  # the batch also reads as its items
            assert all(torch.equal(a, b) for a, b in zip(batch[k], ds[i]))
        everything = list(range(len(ds)))
        assert torch.equal(
            collate_canvases(ds.__getitems__(everything))[0], stacked_items(ds, everything)[0]
        )
    with pytest.raises(IndexError, match="out of range"):
        dm.test_set.__getitems__([0, len(dm.test_set)])


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize(
    "shape, canvas_size, k",
    [((12, 12), 12, 0), ((12, 9), 12, 0), ((12, 9), 30, 3), ((9, 9), 16, 8)],
)
def test_batched_canvases_match_pixel_loop_reference(dtype, shape, canvas_size, k):
    images = torch.randint(1, 256, (40, *shape), dtype=torch.uint8)
    images = images if dtype == torch.uint8 else images.float() / 255
    ds = TranslatedClutteredDataset(images, torch.arange(40) % 10, canvas_size, k, 5, fixed_seed=4)
    x, y = collate_canvases(ds.__getitems__(list(range(40))))
    assert torch.equal(y, torch.arange(40) % 10)
    for i in range(40):  # with 8 patches on 16x16, patches overlap each other and the digit
        assert torch.equal(x[i], reference_item(ds, i)[0])


def test_compose_batch_matches_compose_and_rejects_out_of_canvas():
    images = torch.rand(6, 5, 4)
    index = torch.tensor([2, 0, 2])
    placement = PlacementBatch(
        digit=torch.tensor([[0, 0], [2, 3], [1, 2]]),
        sources=torch.tensor([[1, 5], [4, 4], [0, 3]]),
        crops=torch.tensor([[[0, 0], [3, 2]], [[1, 1], [2, 0]], [[0, 2], [1, 1]]]),
        pastes=torch.tensor([[[0, 0], [1, 1]], [[5, 5], [3, 4]], [[2, 2], [2, 3]]]),
    )
    out = compose_batch(images, index, placement, 7, 2)
    assert out.shape == (3, 7, 7) and out.dtype == images.dtype
    for b in range(3):
        clutter = [
            (images[int(s), r : r + 2, c : c + 2], tuple(p.tolist()))
            for s, (r, c), p in zip(placement.sources[b], placement.crops[b], placement.pastes[b])
        ]
        assert torch.equal(
            out[b], compose(images[index[b]], 7, tuple(placement.digit[b].tolist()), clutter)
        )
    with pytest.raises(ValueError, match="digit .* 0 <= col <= 3"):
        compose_batch(images, index, placement._replace(digit=placement.digit + 1), 7, 2)
    with pytest.raises(ValueError, match="distractor crop"):
        compose_batch(images, index, placement._replace(crops=placement.crops + 2), 7, 2)
    with pytest.raises(ValueError, match="distractor of size 2x2"):
        compose_batch(images, index, placement._replace(pastes=placement.pastes - 1), 7, 2)
    with pytest.raises(ValueError, match="sources"):
        compose_batch(images, index, placement._replace(sources=placement.sources + 1), 7, 2)


@pytest.mark.parametrize("variant", ["translated", "cluttered"])
def test_batched_train_draws_follow_the_per_item_stream(tmp_path, variant):
    """With the same RNG state the batch equals the reference items drawn one by one
    (torch.rand(B, L) fills in the order of B calls of torch.rand(L)), and so do the items read
    one by one; a new batch is drawn afresh."""
    write_mnist(tmp_path, gz=True)
    ds = make_mnist(tmp_path, variant=variant, canvas_size=44).train_set
    indices = [5, 1, 1, 30, 0, 39, -1]
    torch.manual_seed(0)
    expected = stacked_items(ds, indices)
    torch.manual_seed(0)
    first = collate_canvases(ds.__getitems__(indices))
    second = collate_canvases(ds.__getitems__(indices))
    assert torch.equal(first[0], expected[0]) and torch.equal(first[1], expected[1])
    torch.manual_seed(0)
    items = default_collate([ds[i] for i in indices])
    assert torch.equal(items[0], expected[0]) and torch.equal(items[1], expected[1])
    assert not torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.equal(first[0][1], first[0][2])  # a repeated index is placed anew


# ----------------------------------------------------------------------------- shifts
def test_shift_canvases_matches_pixel_loop():
    canvas = torch.rand(5, 6, 6)
    shift = torch.tensor([[0, 0], [2, -1], [-2, 2], [1, 0], [-2, -2]])
    out = shift_canvases(canvas, shift, 2)
    ref = torch.zeros_like(canvas)
    for b, (dy, dx) in enumerate(shift.tolist()):
        for y in range(6):
            for x in range(6):
                if 0 <= y - dy < 6 and 0 <= x - dx < 6:
                    ref[b, y, x] = canvas[b, y - dy, x - dx]
    assert torch.equal(out, ref)
    assert torch.equal(out[0], canvas[0]) and torch.equal(out[1, 2:, :5], canvas[1, :4, 1:])
    assert float(out[1, :2].abs().sum()) == 0.0  # zero fill
    with pytest.raises(ValueError, match="max_shift=1"):
        shift_canvases(canvas, shift, 1)


def test_shifted_sets_match_per_item_and_reference():
    images = torch.randint(1, 256, (30, 10, 10), dtype=torch.uint8)
    labels = torch.arange(30) % 10
    for k in (0, 3):
        plain = TranslatedClutteredDataset(images, labels, 16, k, 4, fixed_seed=1)
        ds = TranslatedClutteredDataset(images, labels, 16, k, 4, fixed_seed=1, max_shift=3)
        x, _ = collate_canvases(ds.__getitems__(list(range(30))))
        shifts = []
        for i in range(30):
            p = ds.placement(i)
            assert p.digit == plain.placement(i).digit  # the shift comes after the placement
            assert p.distractors == plain.placement(i).distractors
            assert torch.equal(x[i], ds[i][0])  # batched == per item
            assert p == reference_placement(ds, i)
            assert torch.equal(x[i], reference_item(ds, i)[0])
            box = ds.box(i)
            assert (box.row - p.digit.row, box.col - p.digit.col) == p.shift
            shifts.append(p.shift)
        assert all(max(abs(dy), abs(dx)) <= 3 for dy, dx in shifts)
        assert len(set(shifts)) > 10 and any(s != (0, 0) for s in shifts)


def test_train_shift_is_uniform_same_stream_and_keeps_the_ink():
    # a 2x2 blob in the middle of an 8x8 image (a margin of 3): shifts of up to 2 keep it whole
    images = torch.zeros(2, 8, 8, dtype=torch.uint8)
    images[:, 3:5, 3:5] = 255
    ds = TranslatedClutteredDataset(images, torch.zeros(2), 8, max_shift=2)
    torch.manual_seed(0)
    expected = stacked_items(ds, [0, 1] * 4)
    torch.manual_seed(0)
    assert torch.equal(collate_canvases(ds.__getitems__([0, 1] * 4))[0], expected[0])
    x, _ = collate_canvases(ds.__getitems__([0] * 2500))
    assert torch.equal(x.sum((1, 2, 3)), torch.full((2500,), 4.0))  # the whole blob, always
    origin = ink_origin(x) - 1  # 1..5 -> offsets 0..4 of the 5x5 shifts
    counts = torch.zeros(5, 5).index_put_(tuple(origin.T), torch.ones(2500), accumulate=True)
    assert counts.min() > 60 and counts.max() < 140  # expected 100 each


def test_mnist_train_shift_moves_training_digits_only(tmp_path):
    write_mnist(tmp_path, gz=True)
    still, moved = make_mnist(tmp_path), make_mnist(tmp_path, train_shift=2)
    for split in ("val_set", "test_set"):
        a, b = getattr(still, split), getattr(moved, split)
        assert torch.equal(collate_canvases(a.__getitems__(range(10)))[0],
                           collate_canvases(b.__getitems__(range(10)))[0])
    torch.manual_seed(0)
    x, _ = collate_canvases(moved.train_set.__getitems__(list(range(20))))
    ref, _ = collate_canvases(still.train_set.__getitems__(list(range(20))))
    assert x.shape == ref.shape == (20, 1, 28, 28)
    assert sum(not torch.equal(x[i], ref[i]) for i in range(20)) >= 10  # 24 of 25 shifts move
    for i in range(20):  # each is its still image moved by at most 2 pixels
        assert any(
            torch.equal(x[i, 0], shift_canvases(ref[i], torch.tensor([[dy, dx]]), 2)[0])
            for dy in range(-2, 3)
            for dx in range(-2, 3)
        )


def test_batched_train_placement_is_uniform_and_inside_the_canvas():
    images = torch.full((2, 4, 4), 255, dtype=torch.uint8)
    ds = TranslatedClutteredDataset(images, torch.zeros(2), canvas_size=6)  # 3x3 positions
    torch.manual_seed(0)
    x, _ = collate_canvases(ds.__getitems__([0] * 900))
    assert torch.equal(x.sum((1, 2, 3)), torch.full((900,), 16.0))  # the whole digit, always
    origin = ink_origin(x)
    assert all(
        bool(x[b, 0, r : r + 4, c : c + 4].eq(1).all()) for b, (r, c) in enumerate(origin.tolist())
    )
    counts = torch.zeros(3, 3).index_put_(tuple(origin.T), torch.ones(900), accumulate=True)
    assert counts.min() > 70 and counts.max() < 130  # expected 100 each


def test_batched_distractors_come_from_other_images():
    images = torch.tensor([100, 200], dtype=torch.uint8).view(2, 1, 1).expand(2, 4, 4)
    ds = TranslatedClutteredDataset(images, torch.tensor([0, 1]), 12, 3, 2)
    torch.manual_seed(0)
    x, y = collate_canvases(ds.__getitems__([0, 1] * 50))
    assert torch.equal(y, torch.tensor([0, 1] * 50))
    item0, item1 = x[0::2], x[1::2]
    assert torch.all((item0 == 100 / 255).sum((1, 2, 3)) <= 16)
    assert torch.all((item0 == 200 / 255).sum((1, 2, 3)) > 0)
    assert torch.all((item1 == 200 / 255).sum((1, 2, 3)) == 16)


@pytest.mark.parametrize("variant", ["plain", "translated", "cluttered"])
def test_loaders_take_the_batched_path_and_give_the_same_batches(tmp_path, monkeypatch, variant):
    write_mnist(tmp_path, gz=True)
    dm = make_mnist(tmp_path, variant=variant, canvas_size=44, num_distractors=4, batch_size=8)
    expected = {
        split: [stacked_items(ds, range(s, min(s + 8, len(ds)))) for s in range(0, len(ds), 8)]
        for split, ds in (("val", dm.val_set), ("test", dm.test_set))
    }

    def per_item_read(self, i):
        raise AssertionError("the loader read one item at a time")

    monkeypatch.setattr(TranslatedClutteredDataset, "__getitem__", per_item_read)
    for split, loader in (("val", dm.val_dataloader()), ("test", dm.test_dataloader())):
        assert loader.collate_fn is collate_canvases
        batches = list(loader)
        assert len(batches) == len(expected[split])
        for got, want in zip(batches, expected[split]):
            assert type(got) is type(want) and len(got) == 2  # [images, labels], as before
            assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    torch.manual_seed(0)
    train = list(dm.train_dataloader())
    x, y = torch.cat([b[0] for b in train]), torch.cat([b[1] for b in train])
    assert x.shape == (40, 1, *dm.image_size) and x.dtype == torch.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert sorted(y.tolist()) == sorted(dm.train_set.labels.tolist())  # every item once
    torch.manual_seed(0)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(train, dm.train_dataloader()))
    if variant != "plain":
        assert len(set(map(tuple, ink_origin(x).tolist()))) > 5  # digits at varied positions


def test_batched_path_with_workers_subset_and_digits(tmp_path, digits_pair):
    write_mnist(tmp_path, gz=True)
    dm = make_mnist(tmp_path, variant="cluttered", canvas_size=44, num_workers=1)
    (x, y), expected = next(iter(dm.val_dataloader())), stacked_items(dm.val_set, range(8))
    assert torch.equal(x, expected[0]) and torch.equal(y, expected[1])
    # a Subset forwards __getitems__; torch's default collate stacks the items of the batch
    subset = DataLoader(Subset(dm.test_set, [5, 1, 2]), batch_size=2)
    got = torch.cat([b[0] for b in subset])
    assert torch.equal(got, stacked_items(dm.test_set, [5, 1, 2])[0])
    # float digits (scikit-learn) take the same path
    digits, _ = digits_pair
    x, y = next(iter(digits.val_dataloader()))
    expected = stacked_items(digits.val_set, range(64))
    assert torch.equal(x, expected[0]) and torch.equal(y, expected[1])


def test_localized_digits_batches_carry_the_true_boxes():
    dm = LocalizedDigitsDataModule(batch_size=4)
    dm.setup("fit")
    x, y, box = next(iter(dm.val_dataloader()))
    assert x.shape == (4, 3, 96, 96) and y.shape == (4,) and box.shape == (4, 4)
    assert box.dtype == torch.float32
    grey = dm.val_set.dataset
    for k in range(4):
        p = reference_placement(grey, k)
        row, col = p.digit.row, p.digit.col
        assert box[k].tolist() == [col, row, col + 32, row + 32]  # x0, y0, x1, y1
        assert grey.box(k) == (row, col, 32, 32)
        assert torch.equal(x[k], reference_item(grey, k)[0].expand(3, -1, -1))
        assert all(torch.equal(a, b) for a, b in zip(dm.val_set[k], (x[k], y[k], box[k])))
    assert torch.equal(grey.boxes([3, -1, 0]), torch.tensor([grey.box(i) for i in (3, -1, 0)]))
    torch.manual_seed(0)
    x, y = next(iter(dm.train_dataloader()))  # no boxes for training canvases
    assert x.shape == (4, 3, 96, 96) and torch.equal(x[:, 0], x[:, 2])


# ----------------------------------------------------------------------------- missing / corrupt
def test_missing_files_without_download(tmp_path):
    folder = tmp_path / "nowhere"
    dm = MNISTDataModule(str(folder), download=False)
    with pytest.raises(FileNotFoundError) as err:
        dm.prepare_data()
    message = str(err.value)
    assert all(name in message for name in FILES)
    assert str(folder.resolve() / "MNIST" / "raw") in message
    assert "ossci-datasets.s3.amazonaws.com/mnist" in message and "yann.lecun.com" in message
    assert "--data.init_args.data_dir" in message
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        dm.setup("fit")  # also when prepare_data was skipped


def test_missing_one_file_is_named(tmp_path):
    write_mnist(tmp_path, gz=True)
    (tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="missing t10k-images-idx3-ubyte \\("):
        make_mnist(tmp_path)


def test_missing_files_with_download_fails_fast(tmp_path, monkeypatch):
    def no_dns(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known (test: network disabled)")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)  # never touch the network
    previous = socket.getdefaulttimeout()
    dm = MNISTDataModule(str(tmp_path / "data"), download=True)
    start = time.monotonic()
    with pytest.raises(FileNotFoundError) as err:
        dm.prepare_data()
    assert time.monotonic() - start < 10
    assert "train-images-idx3-ubyte" in str(err.value)
    assert "Automatic download failed" in str(err.value)
    assert socket.getdefaulttimeout() == previous


def test_download_attempt_is_abandoned_after_deadline(tmp_path, monkeypatch):
    import torchvision.datasets

    def hang(*args, **kwargs):
        time.sleep(30)

    monkeypatch.setattr(torchvision.datasets, "MNIST", hang)
    start = time.monotonic()
    reason = mnist_files.try_download(tmp_path, deadline=0.5)
    assert time.monotonic() - start < 5
    assert "deadline" in reason


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("damage", ["magic", "truncated", "trailing", "count"])
def test_corrupt_file_names_the_file(tmp_path, gz, damage):
    write_mnist(tmp_path, gz=gz)
    suffix = ".gz" if gz else ""
    path = tmp_path / "MNIST" / "raw" / f"train-images-idx3-ubyte{suffix}"
    raw = gzip.decompress(path.read_bytes()) if gz else path.read_bytes()
    if damage == "magic":
        raw = b"\x00\x00\x08\x01" + raw[4:]
    elif damage == "truncated":
        raw = raw[:-100]
    elif damage == "trailing":
        raw = raw + bytes(28)
    else:  # 49 images for 50 labels
        raw = raw[:7] + bytes([49]) + raw[8 : -28 * 28]
    path.write_bytes(gzip.compress(raw) if gz else raw)
    expected = {
        "magic": "magic number",
        "truncated": "truncated",
        "trailing": "holds 39228",
        "count": "49 images",
    }[damage]
    with pytest.raises(IdxFormatError, match=expected) as err:
        make_mnist(tmp_path)
    assert str(path) in str(err.value)


def test_broken_gzip_names_the_file(tmp_path):
    write_mnist(tmp_path, gz=True)
    path = tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(IdxFormatError, match="t10k-labels-idx1-ubyte.gz"):
        make_mnist(tmp_path)


# ----------------------------------------------------------------------------- invalid values
@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"batch_size": 0}, "batch_size"),
        ({"num_workers": -1}, "num_workers"),
        ({"variant": "rotated"}, "variant"),
        ({"variant": "translated", "canvas_size": 27}, "canvas_size"),
        ({"variant": "cluttered", "num_distractors": 0}, "num_distractors"),
        ({"distractor_size": 29}, "distractor_size"),
        ({"distractor_size": 0}, "distractor_size"),
        ({"val_size": 0}, "val_size"),
        ({"val_size": 60_000}, "val_size"),
        ({"seed": -1}, "seed"),
        ({"train_shift": -1}, "train_shift"),
        ({"train_shift": 28}, "train_shift"),
    ],
)
def test_mnist_invalid_values(kwargs, name):
    with pytest.raises(ValueError, match=name):
        MNISTDataModule(**kwargs)


def test_mnist_val_size_larger_than_file(tmp_path):
    write_mnist(tmp_path, gz=True)
    with pytest.raises(ValueError, match="val_size < 50"):
        make_mnist(tmp_path, val_size=50)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"batch_size": 0}, "batch_size"),
        ({"num_workers": -2}, "num_workers"),
        ({"upscale": 0}, "upscale"),
        ({"canvas_size": 15}, "canvas_size"),
        ({"num_distractors": -1}, "num_distractors"),
        ({"distractor_size": 17}, "distractor_size"),
        ({"val_size": 1}, "val_size"),
        ({"val_size": 1000, "test_size": 797}, "test_size"),
    ],
)
def test_digits_invalid_values(kwargs, name):
    with pytest.raises(ValueError, match=name):
        ClutteredDigitsDataModule(**kwargs)


@pytest.mark.parametrize(
    "args, name",
    [
        ((torch.zeros(4, 28, 28), torch.zeros(4), 27), "canvas_size"),
        ((torch.zeros(4, 28, 28), torch.zeros(4), 60, -1), "num_distractors"),
        ((torch.zeros(4, 28, 28), torch.zeros(4), 60, 2, 29), "distractor_size"),
        ((torch.zeros(4, 28, 28), torch.zeros(4), 60, 2, 0), "distractor_size"),
        ((torch.zeros(1, 28, 28), torch.zeros(1), 60, 2), "num_distractors"),
        ((torch.zeros(4, 28, 28), torch.zeros(4), 60, 2, 8, -3), "fixed_seed"),
        ((torch.zeros(4, 1, 28, 28), torch.zeros(4), 60), "Tensor\\[N, h, w\\]"),
        ((torch.zeros(4, 28, 28), torch.zeros(3), 60), "labels"),
        ((torch.zeros(4, 28, 28), torch.zeros(4), 28, 0, 8, None, -1), "max_shift"),
        ((torch.zeros(4, 28, 28), torch.zeros(4), 28, 0, 8, None, 28), "max_shift"),
    ],
)
def test_dataset_invalid_values(args, name):
    with pytest.raises(ValueError, match=name):
        TranslatedClutteredDataset(*args)


# ----------------------------------------------------------------------------- sklearn digits
@pytest.fixture(scope="module")
def digits_pair():
    a, b = ClutteredDigitsDataModule(), ClutteredDigitsDataModule(seed=7)
    a.setup("fit")
    b.setup("fit")
    return a, b


def test_digits_splits(digits_pair):
    from sklearn.datasets import load_digits

    dm, _ = digits_pair
    idx = {split: set(v.tolist()) for split, v in dm.split_indices.items()}
    assert {split: len(v) for split, v in idx.items()} == {"train": 1297, "val": 200, "test": 300}
    assert not (idx["train"] & idx["val"]) and not (idx["train"] & idx["test"])
    assert not (idx["val"] & idx["test"])
    assert idx["train"] | idx["val"] | idx["test"] == set(range(1797))
    target = torch.as_tensor(load_digits().target)
    assert torch.equal(dm.test_set.labels, target[dm.split_indices["test"]])
    assert len(set(dm.test_set.labels.tolist())) == 10


def test_digits_items(digits_pair):
    dm, _ = digits_pair
    assert (dm.num_classes, dm.num_channels, dm.image_size) == (10, 1, (40, 40))
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (64, 1, 40, 40) and x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0 and float(x.max()) > 0.9
    assert y.dtype == torch.int64 and 0 <= int(y.min()) and int(y.max()) <= 9
    assert dm.test_set.images.shape[1:] == (16, 16)  # upscale=2
    k = 3
    assert torch.equal(dm.test_set[k][0], reference_item(dm.test_set, k)[0])


def test_digits_test_set_is_the_same_for_everyone(digits_pair):
    a, b = digits_pair  # b was built with another seed
    assert torch.equal(a.split_indices["test"], b.split_indices["test"])
    for k in range(0, 300, 7):
        assert torch.equal(a.test_set[k][0], b.test_set[k][0])
        assert torch.equal(a.val_set[k % 200][0], b.val_set[k % 200][0])


def test_digits_fit_one_batch():
    """The data module plugs into a Trainer (CPU fast_dev_run)."""

    seen = fit_one_batch(ClutteredDigitsDataModule(batch_size=4), 40 * 40, 10)
    assert seen == [(4, 1, 40, 40), (4, 1, 40, 40)]


def test_localized_digits_stripes_are_fine_grained():
    """texture="stripes": 20 classes (digit + 10 * orientation); at full resolution the two
    orientations differ, in the 2x area view they are the same flat half intensity."""
    import torch.nn.functional as F

    from raccn.datamodules.localized_digits import stripe

    dm = LocalizedDigitsDataModule(upscale=2, canvas_size=32, num_distractors=2, distractor_size=4,
                                   texture="stripes")
    assert dm.num_classes == 20 and dm.class_names[3] == "3-" and dm.class_names[13] == "3|"
    dm.setup("fit")
    labels = torch.tensor([int(dm.val_set[i][1]) for i in range(len(dm.val_set))])
    assert labels.min() >= 0 and labels.max() < 20 and 0.3 < (labels >= 10).float().mean() < 0.7
    again = LocalizedDigitsDataModule(upscale=2, canvas_size=32, num_distractors=2, distractor_size=4,
                                      texture="stripes")
    again.setup("fit")
    torch.testing.assert_close(again.val_set[5][0], dm.val_set[5][0])  # fixed canvases and stripes
    assert int(again.val_set[5][1]) == int(dm.val_set[5][1])
    flat = torch.ones(2, 8, 8)
    h, v = stripe(flat, torch.tensor([False, True]))
    assert h[1].sum() == 0 and h[0].sum() == 8 and v[:, 1].sum() == 0 and v[:, 0].sum() == 8
    torch.testing.assert_close(F.avg_pool2d(h[None], 2), F.avg_pool2d(v[None], 2))  # same view
    with pytest.raises(ValueError, match="texture"):
        LocalizedDigitsDataModule(texture="dots")
