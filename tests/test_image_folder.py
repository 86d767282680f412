"""ImageFolderDataModule on a tiny folder of "own images" (tests/image_folder_fixtures.py):
classes and splits, transforms, errors, unreadable files, and boxes.csv through the transforms."""

from __future__ import annotations

import shutil
import warnings

import pytest
import torch
from image_folder_fixtures import CLASSES, COUNTS, write_folder
from PIL import Image

from raccn.datamodules import ImageFolderDataModule
from raccn.datamodules.finegrained import IMAGENET_MEAN, IMAGENET_STD, CorruptImageError

SMALL = {"image_size": 32, "resize_size": 36, "batch_size": 4}
K = len(CLASSES)


def build(fx, stage="fit", **kwargs) -> ImageFolderDataModule:
    dm = ImageFolderDataModule(str(fx.root), **{"skip_corrupt": True, **SMALL, **kwargs})
    dm.prepare_data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the corrupt file's warning, checked on its own
        dm.setup(stage)
    return dm


def labels_of(dataset) -> list[int]:
    """Labels read off the paths: the index of the class folder's name."""
    return [CLASSES.index(p.parent.name) for p in dataset.paths]


def unnormalise(x: torch.Tensor) -> torch.Tensor:
    """Tensor[3, H, W] normalised with ImageNet's mean/std -> values in 0..255."""
    return (x * torch.tensor(IMAGENET_STD).view(3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) * 255


# ----------------------------------------------------------------------------- classes and splits
def test_classes_and_the_three_folders(tmp_path):
    fx = write_folder(tmp_path)
    dm = build(fx)
    assert dm.class_names == CLASSES and dm.num_classes == K and dm.num_channels == 3
    assert dm.skipped == [fx.broken]  # counted
    for split, ds in (("train", dm.train_set), ("val", dm.val_set), ("test", dm.test_set)):
        assert sorted(ds.paths) == sorted(im.path for im in fx.split(split))
        assert ds.labels.tolist() == labels_of(ds)
    assert dm.val_set is not dm.test_set


def test_without_val_a_seeded_split_of_train(tmp_path):
    fx = write_folder(tmp_path, splits=("train", "test"), corrupt=False)
    n = COUNTS["train"] * K
    dm = build(fx, val_split=0.2, seed=3)
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (n - 3, 3, COUNTS["test"] * K)
    assert not set(dm.train_set.paths) & set(dm.val_set.paths)
    assert sorted(dm.train_set.paths + dm.val_set.paths) == sorted(im.path for im in fx.split("train"))
    assert dm.val_set.labels.tolist() == labels_of(dm.val_set)
    assert build(fx, val_split=0.2, seed=3).val_set.paths == dm.val_set.paths  # seeded
    others = {tuple(build(fx, val_split=0.2, seed=s).val_set.paths) for s in range(4, 8)}
    assert len(others | {tuple(dm.val_set.paths)}) > 1


def test_without_test_folder_test_runs_on_val_with_a_warning(tmp_path):
    fx = write_folder(tmp_path, splits=("train", "val"), corrupt=False)
    dm = ImageFolderDataModule(str(fx.root), **SMALL)
    with pytest.warns(UserWarning, match="no test images"):
        dm.setup("fit")
    assert dm.test_set is dm.val_set and len(dm.val_set) == COUNTS["val"] * K


def test_only_train_and_no_val_split_has_nothing_to_validate(tmp_path):
    fx = write_folder(tmp_path, splits=("train",), corrupt=False)
    with pytest.raises(ValueError, match="nothing to validate on.*val_split 0.1"):
        ImageFolderDataModule(str(fx.root), val_split=0.0, **SMALL).setup("fit")
    dm = build(fx)  # the default val_split (0.1) holds out training images
    assert len(dm.val_set) == round(0.1 * COUNTS["train"] * K) and dm.test_set is dm.val_set


# ----------------------------------------------------------------------------- transforms
def test_finegrained_transforms_shapes_and_colours(tmp_path):
    fx = write_folder(tmp_path)
    dm = build(fx)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    odd = [im for im in fx.images if im.mode != "RGB"]
    assert sorted(im.mode for im in odd) == ["CMYK", "L"]
    for im in odd:
        with Image.open(im.path) as f:
            assert f.mode == im.mode  # really stored as grey / CMYK
        with Image.open(im.path) as image:  # test transform: the background at the corners
            x = dm.predict_transform()(image)
        corner = unnormalise(x)[:, -1, -1]
        assert torch.allclose(corner, torch.tensor(im.colour, dtype=torch.float32), atol=8)
    item = dm.train_set[dm.train_set.paths.index(odd[0].path)]
    assert item[0].shape == (3, 32, 32) and int(item[1]) == odd[0].label


def test_grey_channel_and_plain_resize(tmp_path):
    fx = write_folder(tmp_path, corrupt=False)
    grey = build(fx, channels=1)
    x, _ = grey.train_set[0]
    assert x.shape == (1, 32, 32) and grey.pixel_mean == (sum(IMAGENET_MEAN) / 3,)
    resized = build(fx, channels=1, transforms="resize", image_size=20)
    im = fx.split("test")[0]
    x, y = resized.test_set[resized.test_set.paths.index(im.path)]
    assert x.shape == (1, 20, 20) and resized.pixel_mean is None and int(y) == im.label
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    assert abs(float(x[0, -1, -1]) - sum(c * w for c, w in zip(im.colour, (0.299, 0.587, 0.114))) / 255) < 0.04
    a, b = resized.train_set[0], resized.train_set[0]
    assert torch.equal(a[0], b[0])  # no augmentation
    with Image.open(im.path) as image:
        assert torch.allclose(resized.predict_transform()(image), x, atol=1e-6)  # as the test split


def test_predict_on_files_uses_the_test_transform(tmp_path):
    fx = write_folder(tmp_path, corrupt=False)
    paths = [str(im.path) for im in fx.split("test")[:3]]
    dm = ImageFolderDataModule(str(fx.root), predict_paths=paths, **SMALL)
    dm.setup("predict")
    images, idx = next(iter(dm.predict_dataloader()))
    assert images.shape == (3, 3, 32, 32) and idx.tolist() == [0, 1, 2]
    dm2 = build(fx)
    ref = dm2.test_set[dm2.test_set.paths.index(fx.split("test")[0].path)][0]
    assert torch.allclose(images[0], ref, atol=1e-6)


# ----------------------------------------------------------------------------- errors
def test_missing_train_folder_says_how_to_lay_out(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"(?s)train/ does not exist.*data_dir") as err:
        ImageFolderDataModule(str(tmp_path / "nowhere")).prepare_data()
    assert "<data_dir>/train/<class>/<image>" in str(err.value)
    for name in CLASSES:  # class folders put directly into data_dir
        (tmp_path / "flat" / name).mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="if these are your classes, move them into"):
        ImageFolderDataModule(str(tmp_path / "flat")).prepare_data()


def test_no_class_folders_no_images(tmp_path):
    (tmp_path / "train").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "train" / "loose.png")
    with pytest.raises(ValueError, match=r"holds no class folders \(it holds files such as loose.png\)"):
        _ = ImageFolderDataModule(str(tmp_path)).num_classes  # what the CLI reads first


def test_empty_class_folder(tmp_path):
    fx = write_folder(tmp_path, corrupt=False)
    shutil.rmtree(fx.root / "test" / "robin")
    (fx.root / "test" / "robin").mkdir()
    (fx.root / "test" / "robin" / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match=r"test/: .*robin.*Add images to these class folders"):
        ImageFolderDataModule(str(fx.root), **SMALL).setup()


@pytest.mark.parametrize("change, message", [
    (lambda root: shutil.rmtree(root / "val" / "robin"), r"val/ lacks \['robin'\]\."),
    (lambda root: shutil.copytree(root / "test" / "robin", root / "test" / "wren"),
     r"test/ has \['wren'\], which train/ has not"),
])
def test_class_folders_that_differ_between_splits(tmp_path, change, message):
    fx = write_folder(tmp_path, corrupt=False)
    change(fx.root)
    with pytest.raises(ValueError, match=f"class folders differ between splits: .*{message}"):
        ImageFolderDataModule(str(fx.root), **SMALL).setup()


def test_unreadable_file_fails_naming_it_or_is_skipped_once(tmp_path):
    fx = write_folder(tmp_path)
    dm = ImageFolderDataModule(str(fx.root), val_split=0.0, **SMALL)
    dm.setup()  # default: not screened; reading it fails, naming the file and the fix
    with pytest.raises(CorruptImageError, match="skip_corrupt") as err:
        dm.train_set[dm.train_set.paths.index(fx.broken)]
    assert str(fx.broken) in str(err.value)
    dm = ImageFolderDataModule(str(fx.root), skip_corrupt=True, **SMALL)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dm.setup()
        dm.setup()
    ours = [str(w.message) for w in caught if "unreadable" in str(w.message)]
    assert len(ours) == 1 and "left out 1 unreadable image(s)" in ours[0] and str(fx.broken) in ours[0]
    assert dm.skipped == [fx.broken] and fx.broken not in dm.train_set.paths
    assert sum(len(b[1]) for b in dm.train_dataloader()) == COUNTS["train"] * K  # all good ones


def test_other_files_are_reported_not_read(tmp_path):
    fx = write_folder(tmp_path, corrupt=False)
    (fx.root / "train" / "robin" / "photo.heic").write_bytes(b"\0" * 16)
    (fx.root / "train" / ".DS_Store").write_bytes(b"\0")  # hidden: ignored silently
    dm = ImageFolderDataModule(str(fx.root), **SMALL)
    with pytest.warns(UserWarning, match=r"1 file\(s\) .* are not read.*photo.heic"):
        dm.setup()
    assert len(dm.train_set) == COUNTS["train"] * K


@pytest.mark.parametrize("kwargs, message", [
    ({"channels": 2}, "channels=2 must be 1"),
    ({"transforms": "crop"}, "transforms='crop' must be one of"),
    ({"val_split": 1.0}, r"val_split=1.0 must be in \[0, 1\)"),
    ({"image_size": 64, "resize_size": 32}, "use resize_size >= 64"),
])
def test_invalid_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ImageFolderDataModule("data", **kwargs)


# ----------------------------------------------------------------------------- boxes.csv
def expected_box(size, box, side, resize):
    """The box after "shorter side to ``resize``, centre ``side`` crop", computed by hand:
    scale each axis by new / old size, shift by the crop's offset, clamp to the crop."""
    w, h = size
    new_w, new_h = (int(resize * w / h), resize) if w >= h else (resize, int(resize * h / w))
    left, top = round((new_w - side) / 2), round((new_h - side) / 2)
    x0, y0, x1, y1 = box
    sx, sy = new_w / w, new_h / h
    clamp = lambda v: min(max(v, 0.0), float(side))
    return [clamp(x0 * sx - left), clamp(y0 * sy - top), clamp(x1 * sx - left), clamp(y1 * sy - top)]


def white_extent(x: torch.Tensor) -> list[float]:
    """(x0, y0, x1, y1) of the white pixels of a normalised Tensor[3, S, S] (pixel edges)."""
    rows, cols = torch.nonzero((unnormalise(x) > 235).all(0), as_tuple=True)
    return [float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1)]


def test_boxes_follow_the_test_transform(tmp_path):
    fx = write_folder(tmp_path)
    dm = build(fx, boxes=True, image_size=24, resize_size=30)
    by_path = {im.path: im for im in fx.images}
    for split, loader in (("val", dm.val_dataloader()), ("test", dm.test_dataloader())):
        batches = list(loader)
        assert all(len(b) == 3 for b in batches)  # (images, labels, boxes)
        images, labels, boxes = (torch.cat(parts) for parts in zip(*batches))
        ds = dm.val_set if split == "val" else dm.test_set
        assert boxes.shape == (len(ds), 4) and boxes.dtype == torch.float32
        for x, label, box, path in zip(images, labels, boxes, ds.paths):
            im = by_path[path]
            assert int(label) == im.label
            assert box.tolist() == pytest.approx(expected_box(im.size, im.box, 24, 30), abs=1e-4)
            # the object's pixels are where the box says (within the resampling's blur)
            assert white_extent(x) == pytest.approx(box.tolist(), abs=1.5)
    assert len(next(iter(dm.train_dataloader()))) == 2  # training batches: no boxes


def test_boxes_with_plain_resize(tmp_path):
    fx = write_folder(tmp_path, corrupt=False)
    dm = build(fx, boxes=True, transforms="resize", image_size=20)
    im = fx.split("test")[1]
    _, _, box = dm.test_set[dm.test_set.paths.index(im.path)]
    (w, h), (x0, y0, x1, y1) = im.size, im.box
    assert box.tolist() == pytest.approx([x0 * 20 / w, y0 * 20 / h, x1 * 20 / w, y1 * 20 / h], abs=1e-4)


def write_csv(fx, text: str) -> None:
    (fx.root / "boxes.csv").write_text(text)


@pytest.mark.parametrize("text, error, message", [
    ("file,a,b,c,d\n", ValueError, r"boxes.csv: the header must name the columns path,x0,y0,x1,y1"),
    ("path,x0,y0,x1,y1\ntest/robin/robin_0.jpg,1,2,x,4\n", ValueError, r"boxes.csv line 2: box .* is not 4 numbers"),
    ("path,x0,y0,x1,y1\ntest/robin/robin_0.jpg,5,2,5,4\n", ValueError, r"line 2: box .* is empty"),
    ("path,x0,y0,x1,y1\ntest/robin/robin_0.jpg,1,2,3,4\ntest/robin/robin_0.jpg,1,2,3,4\n",
     ValueError, r"line 3: test/robin/robin_0.jpg already has a box \(line 2\)"),
    ("path,x0,y0,x1,y1\ntest/robin/robin_9.jpg,1,2,3,4\n", ValueError,
     r"1 row\(s\) name no image of train/, val/ or test/:\n  line 2: .*robin_9.jpg"),
    ("path,x0,y0,x1,y1\ntest/robin/robin_0.jpg,1,2,3,4\n", ValueError,
     r"boxes=True, but 11 validation/test image\(s\) of the image folder have no box in boxes.csv"),
])
def test_damaged_boxes_csv(tmp_path, text, error, message):
    fx = write_folder(tmp_path, corrupt=False)
    write_csv(fx, text)
    with pytest.raises(error, match=message):
        ImageFolderDataModule(str(fx.root), boxes=True, **SMALL).setup()


def test_boxes_true_without_csv_and_csv_without_boxes(tmp_path):
    fx = write_folder(tmp_path, corrupt=False, boxes=False)
    with pytest.raises(FileNotFoundError, match=r"boxes.csv does not exist: write it with the header"):
        ImageFolderDataModule(str(fx.root), boxes=True, **SMALL).setup()
    dm = build(write_folder(tmp_path / "b", corrupt=False))  # boxes.csv there, boxes=False
    assert len(next(iter(dm.test_dataloader()))) == 2


def test_hyperparameters_are_saved(tmp_path):
    dm = ImageFolderDataModule("somewhere", channels=1, transforms="resize", image_size=40, boxes=True)
    hp = dm.hparams
    assert (hp.channels, hp.transforms, hp.image_size, hp.val_split, hp.boxes) == (1, "resize", 40, 0.1, True)
