"""The part proxy (datamodules/part_digits.py): the class is read from the head only at full
resolution, the head box is where the stripes are, and val/test are fixed."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from raccn.datamodules.part_digits import PartDigitsDataModule, paste

SMALL = {"train_size": 64, "val_size": 16, "test_size": 32, "batch_size": 8}


@pytest.fixture(scope="module")
def dm() -> PartDigitsDataModule:
    dm = PartDigitsDataModule(**SMALL)
    dm.setup("fit")
    return dm


def test_paste_matches_a_loop():
    g = torch.Generator().manual_seed(0)
    canvas, patches = torch.rand(3, 10, 10, generator=g), torch.rand(3, 4, 4, generator=g)
    x0, y0 = torch.tensor([0, 6, 3]), torch.tensor([6, 0, 2])
    expected = canvas.clone()
    for b in range(3):
        expected[b, y0[b]:y0[b] + 4, x0[b]:x0[b] + 4] = patches[b]
    assert torch.equal(paste(canvas.clone(), patches, x0, y0), expected)


def test_batches_shapes_labels_and_head_boxes(dm):
    images, labels, boxes = next(iter(dm.train_dataloader()))
    assert images.shape == (8, 3, 144, 144) and images.dtype == torch.float32
    assert labels.dtype == torch.int64 and 0 <= labels.min() and labels.max() < dm.num_classes == 20
    assert torch.equal(boxes[:, 2] - boxes[:, 0], torch.full((8,), 24.0))
    for img, label, box in zip(images[:, 0], labels, boxes.long()):
        x0, y0, x1, y1 = box.tolist()
        head = img[y0:y1, x0:x1]
        vertical = bool(label >= 10)
        on = (torch.arange(24) % 2 == 0).float()
        assert torch.equal(head, (on[None, :] if vertical else on[:, None]).expand(24, 24))


def test_the_stripes_direction_is_invisible_at_half_resolution(dm):
    """Scale 1's view (2x2 area average) of the two stripings is the same flat grey."""
    images, _labels, boxes = dm.test_set[:4]
    flipped = images.clone()
    for b, box in enumerate(boxes.long()):
        x0, y0, x1, y1 = box.tolist()
        flipped[b, :, y0:y1, x0:x1] = flipped[b, :, y0:y1, x0:x1].transpose(-1, -2).clone()
    assert not torch.equal(flipped, images)
    half = F.interpolate(images, scale_factor=0.5, mode="area")
    assert torch.allclose(half, F.interpolate(flipped, scale_factor=0.5, mode="area"), atol=1e-6)


def test_val_and_test_are_fixed_train_follows_the_seed(dm):
    again = PartDigitsDataModule(**SMALL)
    again.setup("fit")
    for split in ("val_set", "test_set", "train_set"):
        for a, b in zip(getattr(dm, split).tensors, getattr(again, split).tensors):
            assert torch.equal(a, b)
    other = PartDigitsDataModule(**SMALL, seed=1)
    other.setup("fit")
    assert torch.equal(other.test_set.tensors[0], dm.test_set.tensors[0])
    assert not torch.equal(other.train_set.tensors[0], dm.train_set.tensors[0])


def test_classes_are_balanced_in_the_stripes():
    dm = PartDigitsDataModule(train_size=2000, val_size=16, test_size=16)
    dm.setup("fit")
    vertical = (dm.train_set.tensors[1] >= 10).float().mean()
    assert 0.45 < vertical < 0.55


@pytest.mark.parametrize(
    "kwargs", [{"head_size": 5}, {"canvas_size": 60}, {"num_distractors": -1}, {"test_size": 1}]
)
def test_bad_geometry_is_refused(kwargs):
    with pytest.raises(ValueError):
        PartDigitsDataModule(**kwargs)
