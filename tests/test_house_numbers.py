"""The embedded house numbers: rendered once in SVHN format 1, deterministic, read by the SVHN
loader; never re-rendered when present, never written over foreign data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from raccn.datamodules import EmbeddedHouseNumbersDataModule, SVHNDataModule
from raccn.datamodules import house_numbers as hn
from raccn.datamodules.digit_struct import cache_path, load_digit_struct, read_digit_struct
from raccn.datamodules.label_sequences import EOS, sequence_strings

SMALL = {"train_size": 12, "test_size": 6, "batch_size": 4, "val_split": 0.25}


def make(root, **kwargs) -> EmbeddedHouseNumbersDataModule:
    dm = EmbeddedHouseNumbersDataModule(str(root), **{**SMALL, **kwargs})
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_rendered_in_svhn_format_and_read_by_the_svhn_loader(tmp_path):
    dm = make(tmp_path)
    for split, n in (("train", 12), ("test", 6)):
        folder = tmp_path / split
        assert sorted(p.name for p in folder.glob("*.png")) == sorted(f"{i + 1}.png" for i in range(n))
        assert (folder / "digitStruct.mat").read_bytes()[:19] == b"MATLAB 7.3 MAT-file"
        parsed, cached = read_digit_struct(folder / "digitStruct.mat"), load_digit_struct(folder / "digitStruct.mat")
        assert parsed.names == cached.names  # the renderer's cache is exactly the parse
        assert np.array_equal(parsed.boxes, cached.boxes) and np.array_equal(parsed.labels, cached.labels)
        assert set(parsed.labels.tolist()) <= set(range(1, 11)) and 1 <= parsed.counts.min()
        assert parsed.counts.max() <= 3
        for i in range(n):  # boxes inside their images, around ink that differs from its frame
            name, boxes, _ = parsed.entry(i)
            with Image.open(folder / name) as image:
                w, h = image.size
            assert np.all(boxes[:, :2] >= 0) and np.all(boxes[:, 0] + boxes[:, 2] <= w)
            assert np.all(boxes[:, 1] + boxes[:, 3] <= h) and np.all(boxes[:, 2:] >= 3)
    assert dm.counts["train"].kept == 12 and dm.counts["test"].kept == 6
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (9, 3, 6)
    assert dm.train_set.preloaded is not None  # small: kept in memory by default
    images, targets, lengths = next(iter(dm.train_dataloader()))
    assert images.shape == (4, 3, 54, 54) and images.dtype == torch.float32
    assert targets.shape == (4, 5) and torch.equal((targets != EOS).sum(dim=1), lengths)
    plain = SVHNDataModule(str(tmp_path), batch_size=4, val_split=0.25)  # the same data
    plain.prepare_data()
    plain.setup("fit")
    assert sequence_strings(plain.numbers["test"].targets) == sequence_strings(dm.numbers["test"].targets)


def test_rendering_is_deterministic_by_seed(tmp_path):
    a, b = make(tmp_path / "a"), make(tmp_path / "b")
    c = make(tmp_path / "c", render_seed=1)
    for i in (1, 6):
        name = f"{i}.png"
        assert (tmp_path / "a" / "test" / name).read_bytes() == (tmp_path / "b" / "test" / name).read_bytes()
    assert torch.equal(a.test_set.preloaded, b.test_set.preloaded)
    assert sequence_strings(a.numbers["test"].targets) == sequence_strings(b.numbers["test"].targets)
    assert not torch.equal(a.test_set.preloaded, c.test_set.preloaded)
    bigger = make(tmp_path / "d", train_size=14)  # image i depends on (seed, split, i) only
    assert (tmp_path / "a" / "train" / "12.png").read_bytes() == (tmp_path / "d" / "train" / "12.png").read_bytes()
    assert len(bigger.numbers["train"]) + len(bigger.numbers["val"]) == 14


def test_present_set_is_not_rendered_again_but_a_changed_one_is(tmp_path, monkeypatch):
    make(tmp_path)
    calls = []
    original = hn.render_split
    monkeypatch.setattr(hn, "render_split", lambda *a, **k: calls.append(a[1]) or original(*a, **k))
    make(tmp_path)
    assert calls == []
    (tmp_path / "test" / "3.png").unlink()  # incomplete: rendered again
    make(tmp_path)
    assert calls == ["train", "test"]
    make(tmp_path, max_digits=2)
    assert calls == ["train", "test"] * 2
    assert json.loads((tmp_path / hn.MARKER).read_text())["digits"] == [1, 2]
    assert cache_path(tmp_path / "train" / "digitStruct.mat").is_file()


def test_foreign_svhn_data_is_never_overwritten(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "digitStruct.mat").write_bytes(b"someone's real SVHN")
    with pytest.raises(FileExistsError, match="did not write"):
        make(tmp_path)
    assert (tmp_path / "train" / "digitStruct.mat").read_bytes() == b"someone's real SVHN"


def test_test_numbers_use_held_out_digits():
    pools, photos = hn._material()
    train, test = pools["train"][0].reshape(-1, 64), pools["test"][0].reshape(-1, 64)
    assert len(test) == hn.HELD_OUT_DIGITS and len(train) + len(test) == 1797
    shared = {row.tobytes() for row in train} & {row.tobytes() for row in test}
    assert len(shared) <= 2  # (a couple of the UCI digits are exact duplicates)
    assert len(photos) == 2 and photos[0].shape[2] == 3


def test_setup_before_rendering_says_what_to_do(tmp_path):
    dm = EmbeddedHouseNumbersDataModule(str(tmp_path), **SMALL)
    with pytest.raises(RuntimeError, match="prepare_data"):
        dm.setup("fit")


def test_argument_checks(tmp_path):
    for kwargs, name in [({"train_size": 1}, "train_size"), ({"min_digits": 0}, "min_digits"),
                         ({"min_digits": 3, "max_digits": 2}, "min_digits")]:
        with pytest.raises(ValueError, match=name):
            EmbeddedHouseNumbersDataModule(str(tmp_path), **kwargs)
