"""SVHN in both formats on tiny folders written by the tests (tests/svhn_fixtures.py): the
digitStruct.mat layout and its reader, the cache, Goodfellow et al.'s crops, the label-sequence
targets, the splits, and every kind of bad input."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image
from svhn_fixtures import (
    TEST,
    TRAIN,
    Number,
    digit_struct,
    digits_of,
    ramp,
    write_cropped,
    write_svhn,
)
from torch.utils.data import default_collate
from torchvision.datasets import SVHN

from raccn.datamodules import SVHNCroppedDataModule, SVHNDataModule
from raccn.datamodules import digit_struct as dsmod
from raccn.datamodules.digit_struct import (
    DigitStructError,
    cache_path,
    load_digit_struct,
    read_digit_struct,
    write_digit_struct,
)
from raccn.datamodules.finegrained import CorruptImageError
from raccn.datamodules.label_sequences import EOS, pad_sequences, sequence_strings
from raccn.datamodules.svhn import HouseNumberDataset, preload

SMALL = {"batch_size": 4, "val_split": 0.25, "seed": 0}


def make(root: Path, stage: str = "fit", **kwargs) -> SVHNDataModule:
    dm = SVHNDataModule(str(root), **{**SMALL, **kwargs})
    dm.prepare_data()
    dm.setup(stage)
    return dm


def reference_box(number: Number, expand: float = 0.3) -> list[float]:
    """Obviously-correct crop region: clip each box, take the union, grow it, clip again."""
    w, h = number.size
    x0s, y0s, x1s, y1s = [], [], [], []
    for left, top, bw, bh in number.boxes:
        x0s.append(min(max(left, 0), w))
        y0s.append(min(max(top, 0), h))
        x1s.append(min(max(left + bw, 0), w))
        y1s.append(min(max(top + bh, 0), h))
    x0, y0, x1, y1 = min(x0s), min(y0s), max(x1s), max(y1s)
    cx, cy, hw, hh = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) * (1 + expand) / 2, (y1 - y0) * (1 + expand) / 2
    return [max(cx - hw, 0), max(cy - hh, 0), min(cx + hw, w), min(cy + hh, h)]


# ----------------------------------------------------------------------------- digitStruct.mat
def test_digit_struct_is_written_in_matlabs_layout(tmp_path):
    path = tmp_path / "digitStruct.mat"
    write_digit_struct(path, digit_struct(TRAIN))
    assert path.read_bytes()[:19] == b"MATLAB 7.3 MAT-file"  # the 512-byte MATLAB header
    with h5py.File(path, "r") as f:
        assert f["digitStruct"].attrs["MATLAB_class"] == b"struct"
        names, bboxes = f["digitStruct/name"], f["digitStruct/bbox"]
        assert names.shape == bboxes.shape == (len(TRAIN), 1)
        assert names.dtype == bboxes.dtype == h5py.ref_dtype
        chars = f[names[1, 0]]
        assert chars.shape == (5, 1) and chars.dtype == np.uint16 and chars.attrs["MATLAB_class"] == b"char"
        one = f[bboxes[0, 0]]  # a single box: every field a (1, 1) double, inline
        assert sorted(one.keys()) == ["height", "label", "left", "top", "width"]
        assert one["label"].shape == (1, 1) and one["label"].dtype == np.float64
        many = f[bboxes[1, 0]]  # three boxes: every field (3, 1) references to (1, 1) doubles
        assert many["left"].shape == (3, 1) and many["left"].dtype == h5py.ref_dtype
        assert f[many["left"][2, 0]].shape == (1, 1)


def read_like_public_code(path: Path) -> list[tuple[str, list[list[float]], list[float]]]:
    """The way scripts written for the real files read them (high-level h5py, per object)."""
    out = []
    with h5py.File(path, "r") as f:
        for i in range(len(f["digitStruct/name"])):
            name = "".join(chr(c[0]) for c in f[f["digitStruct/name"][i][0]][()])
            bbox = f[f["digitStruct/bbox"][i][0]]
            values = {}
            for key in ("height", "label", "left", "top", "width"):
                attr = bbox[key]
                values[key] = ([attr[0][0]] if attr.shape[0] == 1
                               else [f[attr[k][0]][0][0] for k in range(attr.shape[0])])
            boxes = [list(b) for b in zip(values["left"], values["top"], values["width"], values["height"])]
            out.append((name, boxes, values["label"]))
    return out


def test_reader_and_public_code_agree_on_one_and_many_boxes(tmp_path):
    path = tmp_path / "digitStruct.mat"
    write_digit_struct(path, digit_struct(TRAIN))
    ds = read_digit_struct(path)
    public = read_like_public_code(path)
    assert ds.names == [f"{i + 1}.png" for i in range(len(TRAIN))] == [p[0] for p in public]
    assert ds.counts.tolist() == [len(n.labels) for n in TRAIN]
    for i, number in enumerate(TRAIN):
        name, boxes, labels = ds.entry(i)
        assert name == f"{i + 1}.png"
        assert boxes.tolist() == [list(map(float, b)) for b in number.boxes] == public[i][1]
        assert labels.tolist() == [float(v) for v in number.labels] == public[i][2]


def test_cache_is_written_used_and_rebuilt_when_the_mat_changes(tmp_path, monkeypatch, caplog):
    path = tmp_path / "digitStruct.mat"
    write_digit_struct(path, digit_struct(TRAIN))
    first = load_digit_struct(path)
    assert cache_path(path).name == "digitStruct.parsed.npz" and cache_path(path).is_file()

    def no_parse(p):
        raise AssertionError("parsed although the cache is valid")

    monkeypatch.setattr(dsmod, "read_digit_struct", no_parse)
    again = load_digit_struct(path)  # from the cache
    assert again.names == first.names and np.array_equal(again.labels, first.labels)
    monkeypatch.undo()
    # the same size and time stamp, one label changed: only the content hash can tell
    stat = path.stat()
    changed = [n._replace(labels=[2.0] + list(n.labels[1:])) if i == 0 else n for i, n in enumerate(TRAIN)]
    write_digit_struct(path, digit_struct(changed))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size
    with caplog.at_level(logging.INFO):
        fresh = load_digit_struct(path)
    assert "stale" in caplog.text and str(cache_path(path)) in caplog.text
    assert fresh.labels[0] == 2.0 and first.labels[0] == 10.0
    assert load_digit_struct(path).labels[0] == 2.0  # the rebuilt cache


def test_damaged_cache_is_rebuilt_and_unwritable_folder_warns(tmp_path, monkeypatch, caplog):
    path = tmp_path / "digitStruct.mat"
    write_digit_struct(path, digit_struct(TEST))
    cache_path(path).write_bytes(b"not a zip file")
    with caplog.at_level(logging.INFO):
        assert load_digit_struct(path).names == ["1.png", "2.png", "3.png"]
    assert "unreadable" in caplog.text
    cache_path(path).unlink()

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(dsmod, "save_cache", read_only)
    with pytest.warns(UserWarning, match="cannot cache it"):
        assert load_digit_struct(path).counts.tolist() == [1, 2, 3]


@pytest.mark.parametrize("damage", ["missing", "truncated", "garbage", "matlab_v5", "no_struct"])
def test_bad_digit_struct_names_the_file_and_the_fix(tmp_path, damage):
    root = write_svhn(tmp_path)
    path = root / "train" / "digitStruct.mat"
    if damage == "missing":
        path.unlink()
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "garbage":
        path.write_bytes(b"<html>404 Not Found</html>\n" * 40)
    elif damage == "matlab_v5":
        scipy.io.savemat(path, {"digitStruct": np.zeros(3)})
    else:
        with h5py.File(path, "w") as f:
            f["something"] = np.zeros(3)
    error = FileNotFoundError if damage == "missing" else DigitStructError
    expected = {"missing": "not found", "truncated": "truncated", "garbage": "not an HDF5",
                "matlab_v5": "SVHNCroppedDataModule", "no_struct": "no digitStruct/name"}[damage]
    with pytest.raises(error) as info:
        make(root)
    message = str(info.value)
    assert str(path) in message and expected in message
    assert "ufldl.stanford.edu/housenumbers" in message or damage == "matlab_v5"


# ----------------------------------------------------------------------------- targets, crops
def test_pad_sequences_and_strings():
    digits = torch.tensor([[1, 9, 0], [7, 3, 3], [4, 0, 0]])
    targets = pad_sequences(digits, torch.tensor([3, 1, 2]), 5)
    assert targets.tolist() == [[1, 9, 0, EOS, EOS], [7, EOS, EOS, EOS, EOS], [4, 0, EOS, EOS, EOS]]
    assert sequence_strings(targets) == ["190", "7", "40"]
    assert sequence_strings(torch.tensor([[1, 2]])) == ["12"]  # full length: no EOS
    with pytest.raises(ValueError, match="max_length=2"):
        pad_sequences(digits, torch.tensor([3, 1, 2]), 2)


def test_targets_lengths_boxes_and_counts(tmp_path):
    dm = make(write_svhn(tmp_path), val_split=0.0)
    assert (dm.num_classes, dm.num_channels, dm.max_length, dm.eos_index) == (10, 3, 5, 10)
    assert dm.image_size == (54, 54)
    assert dm.val_set is dm.test_set  # val_split = 0
    for split, numbers in (("train", TRAIN), ("test", TEST)):
        got = dm.numbers[split]
        assert got.entries.tolist() == list(range(len(numbers)))
        assert [p.name for p in got.paths] == [f"{i + 1}.png" for i in range(len(numbers))]
        assert sequence_strings(got.targets) == [digits_of(n) for n in numbers]  # 10 -> 0
        assert got.targets.shape == (len(numbers), 5) and got.targets.dtype == torch.int64
        assert got.lengths.tolist() == [len(n.labels) for n in numbers]
        expected = torch.tensor([reference_box(n) for n in numbers], dtype=torch.float32)
        torch.testing.assert_close(got.boxes, expected)
    assert dm.numbers["train"].targets[1].tolist() == [1, 9, 0, EOS, EOS]
    assert dm.counts["train"] == (8, 8, 0, 0, 0, 1)  # one box partly outside, clipped
    assert dm.counts["test"] == (3, 3, 0, 0, 0, 0)


def test_test_crops_are_the_centre_of_the_resized_region(tmp_path):
    dm = make(write_svhn(tmp_path), val_split=0.0)
    loader = dm.test_dataloader()
    images, targets, lengths = next(iter(loader))
    assert images.shape == (3, 3, 54, 54) and images.dtype == torch.float32
    assert targets.dtype == lengths.dtype == torch.int64 and lengths.tolist() == [1, 2, 3]
    for k, number in enumerate(TEST):
        x0, y0, x1, y1 = reference_box(number)
        red, green = images[k, 0] * 255, images[k, 1] * 255
        j = torch.arange(54) + 5  # centre crop of 64 -> 54
        want_x = x0 + (j + 0.5) * (x1 - x0) / 64 - 0.5  # the ramp: red = x at pixel centres
        want_y = y0 + (j + 0.5) * (y1 - y0) / 64 - 0.5
        inner = slice(4, 50)  # away from the image border, where the resampling filter clamps
        torch.testing.assert_close(red[20, inner], want_x[inner].float(), atol=1.01, rtol=0)
        torch.testing.assert_close(green[inner, 20], want_y[inner].float(), atol=1.01, rtol=0)
        assert torch.all(images[k, 2] * 255 == 100)


@pytest.mark.parametrize("preloaded", [False, True])
def test_training_crops_are_random_54_windows_of_the_64_region(tmp_path, preloaded):
    dm = make(write_svhn(tmp_path), val_split=0.0, preload=preloaded)
    ds = dm.train_set
    full = preload(ds.numbers, 64)  # Tensor[N, 3, 64, 64] uint8
    if preloaded:
        assert torch.equal(ds.preloaded, full)
    torch.manual_seed(0)
    seen = set()
    for _ in range(8):
        for k, (image, target, length) in enumerate(ds.__getitems__(list(range(len(ds))))):
            windows = full[k].unfold(1, 54, 1).unfold(2, 54, 1)  # (3, 11, 11, 54, 54)
            pixels = (image * 255).round().byte()[:, None, None]
            matches = (windows == pixels).flatten(3).all(dim=3).all(dim=0).nonzero().tolist()
            assert len(matches) == 1  # exactly one window (the ramp tells them apart)
            seen.add(tuple(matches[0]))
            assert torch.equal(target, ds.numbers.targets[k]) and int(length) == len(TRAIN[k].labels)
    assert len(seen) > 20  # offsets vary
    eval_set = HouseNumberDataset(ds.numbers, 54, 64, train=False, preloaded=full if preloaded else None)
    batch = default_collate(eval_set.__getitems__([3, 0]))
    assert torch.equal(batch[0], torch.stack([eval_set[3][0], eval_set[0][0]]))  # batch = items
    assert torch.equal((batch[0][1] * 255).round().byte(), full[0, :, 5:59, 5:59])


def test_validation_split_is_seeded_and_extra_is_added(tmp_path):
    root = write_svhn(tmp_path)
    shutil.copytree(root / "test", root / "extra")
    a, b, c = make(root, seed=0), make(root, seed=0), make(root, seed=1)
    assert len(a.numbers["val"]) == 2 and len(a.numbers["train"]) == 6
    assert a.numbers["val"].entries.tolist() == b.numbers["val"].entries.tolist()
    assert sorted(a.numbers["val"].entries.tolist() + a.numbers["train"].entries.tolist()) == list(range(8))
    assert a.numbers["val"].entries.tolist() != c.numbers["val"].entries.tolist() or \
        a.numbers["train"].entries.tolist() != c.numbers["train"].entries.tolist()
    x = make(root, seed=0, use_extra=True)
    assert len(x.train_set) == 6 + len(TEST) and x.counts["extra"].kept == len(TEST)
    assert [p.parent.name for p in x.numbers["train"].paths][-3:] == ["extra"] * 3
    assert x.numbers["val"].entries.tolist() == a.numbers["val"].entries.tolist()
    with pytest.raises(FileNotFoundError, match="extra"):
        make(write_svhn(tmp_path / "no_extra"), use_extra=True)


def test_predict_transform_and_config_checks(tmp_path):
    dm = SVHNDataModule(str(tmp_path))
    x = dm.predict_transform()(ramp((128, 64)))
    assert x.shape == (3, 54, 54) and x.dtype == torch.float32 and 0 <= x.min() <= x.max() <= 1
    for kwargs, name in [({"image_size": 70}, "image_size"), ({"expand": -0.1}, "expand"),
                         ({"val_split": 1.0}, "val_split"), ({"max_length": 0}, "max_length"),
                         ({"batch_size": 0}, "batch_size")]:
        with pytest.raises(ValueError, match=name):
            SVHNDataModule(str(tmp_path), **kwargs)


# ----------------------------------------------------------------------------- bad input
def edited(numbers: list[Number], i: int, **change) -> list[Number]:
    return [n._replace(**change) if k == i else n for k, n in enumerate(numbers)]


def test_label_outside_1_to_10_is_an_error_naming_file_and_entry(tmp_path):
    root = write_svhn(tmp_path, train=edited(TRAIN, 3, labels=[5, 11]))
    with pytest.raises(DigitStructError, match=r"entry 3 \(4.png\) has label 11") as info:
        make(root)
    assert str(root / "train" / "digitStruct.mat") in str(info.value)
    root = write_svhn(tmp_path / "zero", train=edited(TRAIN, 0, labels=[0]))
    with pytest.raises(DigitStructError, match="label 0, outside 1..10"):
        make(root)


def test_box_wholly_outside_drops_the_number_counted(tmp_path):
    train = edited(TRAIN, 3, boxes=[(15, 10, 11, 21), (75, 11, 11, 21)])  # second past x = 70
    train = edited(train, 4, boxes=[(18, 9, 0, 22)])  # no area
    root = write_svhn(tmp_path, train=train)
    with pytest.warns(UserWarning, match="2 with a box wholly outside"):
        dm = make(root, val_split=0.0)
    assert dm.counts["train"].box_outside == 2 and dm.counts["train"].kept == 6
    assert 3 not in dm.numbers["train"].entries.tolist() and 4 not in dm.numbers["train"].entries.tolist()
    assert sequence_strings(dm.numbers["train"].targets) == [
        digits_of(n) for k, n in enumerate(TRAIN) if k not in (3, 4)]


def test_numbers_longer_than_max_length_are_dropped_counted(tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        dm = make(write_svhn(tmp_path), val_split=0.0, max_length=3)
    assert dm.counts["train"].too_long == 1 and dm.counts["train"].kept == 7  # "8221"
    assert dm.counts["test"].too_long == 0
    assert "1 longer than max_length=3 left out" in caplog.text
    assert 5 not in dm.numbers["train"].entries.tolist()
    assert dm.numbers["train"].targets.shape[1] == 3
    assert int(dm.numbers["train"].lengths.max()) == 3


def test_listed_png_missing_is_an_error_listing_it(tmp_path):
    root = write_svhn(tmp_path)
    (root / "test" / "2.png").unlink()
    with pytest.raises(FileNotFoundError, match="1 of the 3 images listed") as info:
        make(root)
    assert str(root / "test" / "2.png") in str(info.value)


def test_unreadable_png_is_an_error_or_a_counted_skip(tmp_path):
    root = write_svhn(tmp_path)
    (root / "train" / "2.png").write_bytes(b"not a png at all")
    with pytest.raises(CorruptImageError, match="skip_corrupt") as info:
        make(root)
    assert str(root / "train" / "2.png") in str(info.value)
    with pytest.warns(UserWarning, match="1 unreadable image"):
        dm = make(root, val_split=0.0, skip_corrupt=True)
    assert dm.counts["train"].unreadable == 1 and dm.counts["train"].kept == 7
    assert 1 not in dm.numbers["train"].entries.tolist()


def test_truncated_png_fails_when_read_naming_it_or_is_skipped(tmp_path):
    root = write_svhn(tmp_path)
    path = root / "test" / "3.png"
    noise = np.random.default_rng(0).integers(0, 256, (42, 58, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path)
    path.write_bytes(path.read_bytes()[:-300])  # header fine, data cut short
    dm = make(root, val_split=0.0)
    with pytest.raises(CorruptImageError, match="3.png"):
        list(dm.test_dataloader())
    with pytest.warns(UserWarning, match="unreadable"):
        dm = make(root, val_split=0.0, skip_corrupt=True)
    assert dm.counts["test"].unreadable == 1 and len(dm.test_set) == 2


# ----------------------------------------------------------------------------- format 2
@pytest.fixture
def cropped(tmp_path, monkeypatch):
    data = {}
    for split, n in (("train", 30), ("test", 12)):
        X, y, md5 = write_cropped(tmp_path, split, n, seed=len(split))
        url, name, _ = SVHN.split_list[split]
        monkeypatch.setitem(SVHN.split_list, split, [url, name, md5])  # the fixture's checksum
        data[split] = (X, y)
    return tmp_path, data


def test_cropped_digits_through_torchvision(cropped):
    root, data = cropped
    dm = SVHNCroppedDataModule(str(root), batch_size=8, val_size=5, seed=0)
    dm.prepare_data()
    dm.setup("fit")
    assert (dm.num_classes, dm.num_channels, dm.image_size) == (10, 3, (32, 32))
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (25, 5, 12)
    X, y = data["train"]
    for split in ("train", "val"):
        ds, idx = getattr(dm, f"{split}_set"), dm.split_indices[split]
        for k in range(len(ds)):
            image, label = ds[k]
            i = int(idx[k])
            assert torch.equal((image * 255).round().byte(), torch.from_numpy(X[..., i]).permute(2, 0, 1))
            assert int(label) == int(y[i]) % 10  # label 10 is the digit 0
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (8, 3, 32, 32) and images.dtype == torch.float32
    assert labels.dtype == torch.int64 and 0 <= labels.min() <= labels.max() <= 9
    assert int(dm.test_set[0][1]) == 0  # written as 10


def test_cropped_missing_or_corrupt_file_is_named(cropped):
    root, _ = cropped
    path = root / "test_32x32.mat"
    path.write_bytes(path.read_bytes()[:-100])
    dm = SVHNCroppedDataModule(str(root))
    with pytest.raises(ValueError, match="MD5") as info:
        dm.prepare_data()
    assert str(path) in str(info.value)
    path.unlink()
    with pytest.raises(FileNotFoundError, match="test_32x32.mat"):
        dm.prepare_data()


def test_loader_batches_of_three_tensors(tmp_path):
    dm = make(write_svhn(tmp_path), preload=True)
    images, targets, lengths = next(iter(dm.train_dataloader()))
    assert images.shape == (4, 3, 54, 54) and targets.shape == (4, 5) and lengths.shape == (4,)
    assert torch.equal((targets != EOS).sum(dim=1), lengths)  # digits, then EOS only
