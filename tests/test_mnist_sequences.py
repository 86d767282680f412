"""MNIST sequences on tiny generated IDX files (never the real MNIST): digit placement against
the layout and a pixel-loop reference, targets, determinism of the fixed splits, batches."""

from __future__ import annotations

import pytest
import torch
from test_datamodules import write_mnist
from torch.utils.data import default_collate

from raccn.datamodules import MNISTSequenceDataset, MNISTSequencesDataModule
from raccn.datamodules.label_sequences import EOS

GEOMETRY = {"canvas_size": 100, "min_length": 1, "max_length": 3, "min_gap": 0, "max_gap": 8,
            "max_jitter": 8, "num_distractors": 0, "distractor_size": 8}


def pool(n: int = 40, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random 28x28 "digits" with every pixel >= 1 (their ink box is the whole image)."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(1, 256, (n, 28, 28), dtype=torch.uint8, generator=g),
            torch.randint(0, 10, (n,), generator=g))


def dataset(fixed_seed=7, size=64, **kw) -> MNISTSequenceDataset:
    images, labels = pool()
    return MNISTSequenceDataset(images, labels, size, fixed_seed=fixed_seed, **{**GEOMETRY, **kw})


def reference_canvas(ds: MNISTSequenceDataset, i: int) -> torch.Tensor:
    """Obviously-correct pixel loop rebuilding canvas ``i`` from its layout."""
    lay = ds.layout(torch.tensor([i]))
    S, d = ds.canvas_size, ds.distractor_size
    canvas = torch.zeros(S, S, dtype=torch.float64)
    images = ds.images.double() / 255
    for k in range(int(lay.lengths[0])):
        src, r0, c0 = int(lay.sources[0, k]), int(lay.rows[0, k]), int(lay.cols[0, k])
        for y in range(28):
            for x in range(28):
                canvas[r0 + y, c0 + x] = max(canvas[r0 + y, c0 + x], images[src, y, x])
    for src, cr, cc, pr, pc in lay.clutter[0].tolist():
        for y in range(d):
            for x in range(d):
                canvas[pr + y, pc + x] = max(canvas[pr + y, pc + x], images[src, cr + y, cc + x])
    return canvas.float()


def test_digits_sit_left_to_right_where_the_layout_says():
    ds = dataset()
    idx = torch.arange(len(ds))
    lay = ds.layout(idx)
    items = ds.__getitems__(idx.tolist())
    assert sorted(set(lay.lengths.tolist())) == [1, 2, 3]
    for i, (image, targets, length) in enumerate(items):
        L = int(lay.lengths[i])
        assert int(length) == L and image.shape == (1, 100, 100) and image.dtype == torch.float32
        assert targets.tolist() == ds.labels[lay.sources[i, :L]].tolist() + [EOS] * (3 - L)
        cols, rows = lay.cols[i, :L], lay.rows[i, :L]
        gaps = cols[1:] - cols[:-1] - 28
        assert torch.all((0 <= gaps) & (gaps <= 8))  # left to right, gaps in min..max
        assert int(rows.max() - rows.min()) <= 16 and 0 <= rows.min() and rows.max() <= 72
        assert 0 <= int(cols[0]) and int(cols[-1]) <= 72
        for k in range(L):  # no overlap at gaps >= 0: each digit exactly where it was put
            r, c = int(rows[k]), int(cols[k])
            assert torch.equal(image[0, r : r + 28, c : c + 28], ds.images[lay.sources[i, k]].float() / 255)
        ink = image[0] > 0
        assert int(ink.sum()) == 28 * 28 * L  # nothing else on the canvas without clutter


@pytest.mark.parametrize("kw", [{"num_distractors": 6}, {"min_gap": -12, "max_gap": -4, "max_length": 4}])
def test_canvases_match_the_pixel_loop_reference(kw):
    ds = dataset(size=12, **kw)
    batch = default_collate(ds.__getitems__(list(range(12))))
    for i in range(12):
        torch.testing.assert_close(batch[0][i, 0], reference_canvas(ds, i), atol=1e-6, rtol=0)


def test_fixed_canvases_repeat_per_index_and_training_ones_change():
    a, b = dataset(fixed_seed=7), dataset(fixed_seed=7)
    first = default_collate(a.__getitems__([5, 1, 9]))
    again = default_collate(b.__getitems__([9, 5]))  # another order, another batch, new object
    assert torch.equal(first[0][0], again[0][1]) and torch.equal(first[0][2], again[0][0])
    assert torch.equal(first[1][0], again[1][1])
    single = a[1]
    assert all(torch.equal(u, v) for u, v in zip(single, (first[0][1], first[1][1], first[2][1])))
    other = default_collate(dataset(fixed_seed=8).__getitems__([5, 1, 9]))
    assert not torch.equal(first[0], other[0])
    train = dataset(fixed_seed=None)
    torch.manual_seed(0)
    x1 = default_collate(train.__getitems__([0, 1, 2]))[0]
    x2 = default_collate(train.__getitems__([0, 1, 2]))[0]
    torch.manual_seed(0)
    x3 = default_collate(train.__getitems__([0, 1, 2]))[0]
    assert not torch.equal(x1, x2) and torch.equal(x1, x3)  # new each read, seeded by torch


def test_lengths_and_sources_are_uniform():
    ds = dataset(fixed_seed=None, size=10)
    torch.manual_seed(0)
    lay = ds.layout(torch.zeros(6000, dtype=torch.long))
    counts = torch.bincount(lay.lengths, minlength=4)[1:].float()
    assert torch.allclose(counts / 6000, torch.full((3,), 1 / 3), atol=0.03)
    hist = torch.bincount(lay.sources[:, 0], minlength=40).float()
    assert hist.min() > 0.5 * hist.mean()


@pytest.mark.parametrize("kw, name", [
    ({"canvas_size": 90}, "canvas_size=90"), ({"min_length": 0}, "min_length"),
    ({"min_length": 3, "max_length": 2}, "min_length"), ({"min_gap": -28}, "min_gap"),
    ({"max_jitter": -1}, "max_jitter"), ({"num_distractors": 2, "distractor_size": 29}, "distractor"),
])
def test_geometry_checks(kw, name):
    with pytest.raises(ValueError, match=name):
        dataset(**kw)
    with pytest.raises(ValueError, match=name):
        MNISTSequencesDataModule(**{**GEOMETRY, **kw})


def test_data_module_splits_batches_and_fixed_test(tmp_path):
    arrays = write_mnist(tmp_path, gz=True)
    kw = {"val_size": 10, "download": False, "batch_size": 8, "num_distractors": 4}
    dm = MNISTSequencesDataModule(str(tmp_path), seed=0, **kw)
    dm.prepare_data()
    dm.setup("fit")
    assert (dm.num_classes, dm.num_channels, dm.max_length, dm.image_size) == (10, 1, 3, (100, 100))
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (40, 10, 20)
    images, targets, lengths = next(iter(dm.train_dataloader()))
    assert images.shape == (8, 1, 100, 100) and images.dtype == torch.float32
    assert targets.shape == (8, 3) and targets.dtype == lengths.dtype == torch.int64
    assert torch.equal((targets != EOS).sum(dim=1), lengths)
    test_digits = set(torch.as_tensor(arrays["t10k-labels-idx1-ubyte"]).tolist())
    assert set(targets[targets != EOS].tolist()) <= set(range(10))
    other = MNISTSequencesDataModule(str(tmp_path), seed=5, **kw)
    other.setup("fit")
    a, b = next(iter(dm.test_dataloader())), next(iter(other.test_dataloader()))
    assert all(torch.equal(u, v) for u, v in zip(a, b))  # the test canvases whatever the seed
    assert set(a[1][a[1] != EOS].tolist()) <= test_digits
    va, vb = next(iter(dm.val_dataloader())), next(iter(other.val_dataloader()))
    assert not torch.equal(va[0], vb[0])  # validation digits and canvases follow the seed
    assert torch.equal(next(iter(dm.val_dataloader()))[0], va[0])  # but are fixed per index
