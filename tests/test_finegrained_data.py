"""Tests for the fine-grained data modules (CUB-200-2011, Stanford Dogs, Stanford Cars) on tiny
folders written in the real on-disk formats (tests/finegrained_fixtures.py), never the network."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from finegrained_fixtures import (
    GREYS,
    PALETTE,
    SIZE,
    FixtureSet,
    corrupt,
    write_cars,
    write_cub,
    write_dogs,
)
from lightning_probe import fit_one_batch
from PIL import Image
from torch.utils.data import RandomSampler, SequentialSampler

from raccn.datamodules import CUBDataModule, StanfordCarsDataModule, StanfordDogsDataModule
from raccn.datamodules.finegrained import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CorruptImageError,
    FineGrainedDataModule,
    check_image,
    eval_transform,
    load_rgb,
    train_transform,
)

SMALL = {"image_size": 32, "resize_size": 36, "batch_size": 4}
SETS = {
    "cub": (write_cub, CUBDataModule, 4),  # writer, data module, number of fixture classes
    "dogs": (write_dogs, StanfordDogsDataModule, 3),
    "cars": (write_cars, StanfordCarsDataModule, 3),
}
URLS = {
    "cub": "https://www.vision.caltech.edu/datasets/cub_200_2011/",
    "dogs": "http://vision.stanford.edu/aditya86/ImageNetDogs/",
    "cars": "kaggle.com",
}


def build(name: str, tmp_path: Path, write_kwargs=None, **kwargs):
    writer, module, _ = SETS[name]
    fx = writer(tmp_path, **(write_kwargs or {}))
    dm = module(str(fx.data_dir), **{**SMALL, **kwargs})
    dm.prepare_data()
    dm.setup("fit")
    return fx, dm


def rgb_255(image: torch.Tensor) -> torch.Tensor:
    """Undo the ImageNet normalisation of Tensor[3, H, W] -> values in 0..255."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (image * std + mean) * 255


def rewrite_mat(path: Path, edit) -> None:
    """Load a fixture .mat as loadmat returns it, let ``edit`` change it, save it back."""
    mat = {k: v for k, v in scipy.io.loadmat(path).items() if not k.startswith("__")}
    edit(mat)
    scipy.io.savemat(path, mat)


# ----------------------------------------------------------------------------- splits and labels
@pytest.mark.parametrize("name", SETS)
def test_splits_labels_classes_and_boxes(tmp_path, name):
    fx, dm = build(name, tmp_path)
    k = SETS[name][2]
    assert (dm.num_classes, dm.num_channels, dm.image_size) == (k, 3, (32, 32))
    assert dm.class_names == fx.class_names
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (3 * k, 2 * k, 2 * k)
    assert dm.val_set is dm.test_set  # val_split=0: validate on the test split, as the papers
    truth = fx.labels()
    for split, ds in (("train", dm.train_set), ("test", dm.test_set)):
        assert set(ds.paths) == {im.path for im in fx.split(split)}
        assert ds.labels.dtype == torch.int64
        assert ds.labels.tolist() == [truth[p] for p in ds.paths]  # 0-based, per image
        boxes = {im.path: im.box for im in fx.images}
        assert ds.boxes.shape == (len(ds), 4) and ds.boxes.dtype == torch.float32
        assert torch.equal(ds.boxes, torch.tensor([boxes[p] for p in ds.paths]))
    assert not set(dm.train_set.paths) & set(dm.test_set.paths)
    assert sorted(set(dm.train_set.labels.tolist())) == list(range(k))
    assert dm.skipped == []


def test_class_names_strip_the_numbering(tmp_path):
    cub = write_cub(tmp_path / "cub")
    assert CUBDataModule(str(cub.data_dir)).class_names[:2] == [
        "Black_footed_Albatross",
        "Laysan_Albatross",
    ]
    dogs = write_dogs(tmp_path / "dogs")
    assert StanfordDogsDataModule(str(dogs.data_dir)).class_names == [
        "Chihuahua",
        "Japanese_spaniel",
        "Maltese_dog",
    ]
    cars = write_cars(tmp_path / "cars")
    assert StanfordCarsDataModule(str(cars.data_dir)).num_classes == 3  # before setup (CLI links)


@pytest.mark.parametrize("name", SETS)
def test_items_have_the_colour_of_their_label(tmp_path, name):
    fx, dm = build(name, tmp_path)
    by_path = {im.path: im for im in fx.images}
    items = [(x, y) for xb, yb in dm.test_dataloader() for x, y in zip(xb, yb)]
    assert len(items) == len(dm.test_set)
    for (x, y), path in zip(items, dm.test_set.paths):
        im = by_path[path]
        assert x.shape == (3, 32, 32) and x.dtype == torch.float32
        colour = rgb_255(x).mean(dim=(1, 2))
        assert torch.allclose(colour, torch.tensor(im.colour, dtype=torch.float32), atol=6)
        assert int(y) == im.label
        refs = [(g, g, g) for g in GREYS] if im.mode == "L" else PALETTE
        distances = [float((colour - torch.tensor(c, dtype=torch.float32)).norm()) for c in refs]
        assert int(np.argmin(distances)) == int(y)  # the colour alone gives the label


@pytest.mark.parametrize("name", SETS)
def test_grey_and_cmyk_jpegs_become_rgb(tmp_path, name):
    fx, dm = build(name, tmp_path)
    odd = [im for im in fx.images if im.mode != "RGB"]
    assert sorted({im.mode for im in odd}) == ["CMYK", "L"]
    for im in odd:
        with Image.open(im.path) as f:
            assert f.mode == im.mode  # really stored as grey / CMYK
        ds = dm.train_set if im.split == "train" else dm.test_set
        x, y = ds[ds.paths.index(im.path)]
        assert x.shape == (3, 32, 32) and int(y) == im.label
        colour = rgb_255(x).mean(dim=(1, 2))
        assert torch.allclose(colour, torch.tensor(im.colour, dtype=torch.float32), atol=6)


def test_train_loader_shapes_and_samplers(tmp_path):
    _, dm = build("cub", tmp_path, batch_size=5)
    batches = list(dm.train_dataloader())
    assert [len(y) for _, y in batches] == [5, 5, 2]
    x, y = batches[0]
    assert x.shape == (5, 3, 32, 32) and x.dtype == torch.float32
    assert y.shape == (5,) and y.dtype == torch.int64
    assert isinstance(dm.train_dataloader().sampler, RandomSampler)
    assert isinstance(dm.val_dataloader().sampler, SequentialSampler)
    assert [len(y) for _, y in dm.predict_dataloader()] == [5, 3]
    dm2 = CUBDataModule(str(tmp_path), num_workers=2, **SMALL)
    dm2.setup()
    loader = dm2.train_dataloader()
    assert loader.num_workers == 2 and loader.persistent_workers


def test_loaders_before_setup_raise(tmp_path):
    with pytest.raises(RuntimeError, match="setup"):
        CUBDataModule(str(tmp_path)).train_dataloader()


# ----------------------------------------------------------------------------- transforms
def gradient_image() -> Image.Image:
    """40x30 image whose red grows to the right and green grows downwards."""
    x = np.linspace(0, 255, SIZE[0])[None, :].repeat(SIZE[1], 0)
    y = np.linspace(0, 255, SIZE[1])[:, None].repeat(SIZE[0], 1)
    return Image.fromarray(np.stack([x, y, np.zeros_like(x)], -1).astype(np.uint8))


def test_train_transform_crops_randomly_and_flips():
    tf = train_transform(image_size=32, resize_size=36)  # 40x30 -> 48x36 -> random 32x32
    torch.manual_seed(0)
    outs = [tf(gradient_image()) for _ in range(40)]
    assert all(o.shape == (3, 32, 32) and o.dtype == torch.float32 for o in outs)
    flipped = [bool(o[0, :, 0].mean() > o[0, :, -1].mean()) for o in outs]
    assert 5 < sum(flipped) < 35  # both orientations occur
    tops = {round(float(o[1, 0].mean()), 3) for o in outs}  # green of the top row: crop row
    assert len(tops) > 2


def test_eval_transform_is_a_fixed_centre_crop():
    tf = eval_transform(image_size=32, resize_size=36)
    a, b = tf(gradient_image()), tf(gradient_image())
    assert a.shape == (3, 32, 32) and torch.equal(a, b)
    red = rgb_255(a)[0].mean(dim=0)  # per column; left to right symmetric around the centre
    assert red[0] < red[-1] and abs(float(red[0] + red[-1]) / 2 - 127.5) < 4
    mean_colour = Image.new("RGB", SIZE, tuple(round(255 * m) for m in IMAGENET_MEAN))
    assert float(tf(mean_colour).abs().max()) < 0.02  # normalised with the ImageNet mean/std


# ----------------------------------------------------------------------------- layouts
def test_cub_data_dir_may_be_the_cub_folder(tmp_path):
    fx = write_cub(tmp_path / "CUB_200_2011", nested=False)
    dm = CUBDataModule(str(fx.data_dir), **SMALL)
    dm.setup()
    assert len(dm.train_set) == 12 and len(dm.test_set) == 8


@pytest.mark.parametrize("lists_folder", [True, False])
def test_dogs_lists_anywhere_and_boxes_optional(tmp_path, lists_folder):
    fx, dm = build(
        "dogs", tmp_path, write_kwargs={"lists_folder": lists_folder, "annotations": False}
    )
    assert len(dm.train_set) == 9 and dm.train_set.boxes is None
    assert dm.train_set.labels.tolist() == [fx.labels()[p] for p in dm.train_set.paths]


@pytest.mark.parametrize("devkit, kaggle", [(False, False), (True, True)])
def test_cars_devkit_anywhere_and_kaggle_folders(tmp_path, devkit, kaggle):
    fx, dm = build("cars", tmp_path, write_kwargs={"devkit": devkit, "kaggle_folders": kaggle})
    assert set(dm.test_set.paths) == {im.path for im in fx.split("test")}
    assert (fx.meta["meta"].parent.name == "devkit") == devkit


@pytest.mark.parametrize("name", SETS)
def test_boxes_in_validation_and_test_batches(tmp_path, name):
    fx, dm = build(name, tmp_path, boxes=True, val_split=0.25)
    boxes = {im.path: im.box for im in fx.images}
    for ds, loader in ((dm.val_set, dm.val_dataloader()), (dm.test_set, dm.test_dataloader())):
        got = torch.cat([b[2] for b in loader])
        # 40x30 -> shorter side 36: 48x36 (x 1.2), centre 32x32 crop at (8, 2), clamped to it
        want = [[max(0.0, x * 1.2 - 8), max(0.0, y * 1.2 - 2), min(32.0, (x + w) * 1.2 - 8),
                 min(32.0, (y + h) * 1.2 - 2)] for x, y, w, h in (boxes[p] for p in ds.paths)]
        assert torch.allclose(got, torch.tensor(want), atol=1e-4)
    assert len(next(iter(dm.train_dataloader()))) == 2  # (images, labels)


def test_boxes_requested_where_there_are_none(tmp_path):
    write_dogs(tmp_path, annotations=False)
    with pytest.raises(ValueError, match=r"have no box in Annotation/ \(annotation.tar\)"):
        StanfordDogsDataModule(str(tmp_path), boxes=True, **SMALL).setup()


# ----------------------------------------------------------------------------- validation split
def test_val_split_holds_out_training_images(tmp_path):
    fx, dm = build("cub", tmp_path, val_split=0.25)
    train, val = set(dm.train_set.paths), set(dm.val_set.paths)
    assert (len(train), len(val), len(dm.test_set)) == (9, 3, 8)
    assert not train & val and train | val == {im.path for im in fx.split("train")}
    assert dm.val_set is not dm.test_set
    assert torch.equal(dm.val_set[0][0], dm.val_set[0][0])  # test transform: deterministic
    idx = dm.split_indices
    assert sorted(idx["train"].tolist() + idx["val"].tolist()) == list(range(12))
    again = CUBDataModule(str(tmp_path), val_split=0.25, **SMALL)
    again.setup()
    assert set(again.val_set.paths) == val  # seeded
    other = CUBDataModule(str(tmp_path), val_split=0.25, seed=3, **SMALL)
    other.setup()
    assert set(other.val_set.paths) != val


def test_val_split_too_small_for_the_data(tmp_path):
    write_cub(tmp_path)
    with pytest.raises(ValueError, match="val_split=0.01 holds out 0 of the 12"):
        CUBDataModule(str(tmp_path), val_split=0.01).setup()


# ----------------------------------------------------------------------------- missing data
@pytest.mark.parametrize("name", SETS)
def test_missing_data_set_names_every_file(tmp_path, name):
    module = SETS[name][1]
    dm = module(str(tmp_path / "nowhere"))
    for call in (dm.prepare_data, dm.setup):
        with pytest.raises(FileNotFoundError) as err:
            call()
        message = str(err.value)
        for expected in dm.expected():
            assert f"missing {expected.describe()}" in message
            assert all(str(p).startswith(str(tmp_path.resolve())) for p in expected.candidates)
        assert URLS[name] in message and "--data.init_args.data_dir" in message
    assert len(dm.expected()) >= 3


@pytest.mark.parametrize(
    "name, key", [("cub", "boxes"), ("cub", "classes"), ("dogs", "test_list"), ("cars", "meta")]
)
def test_one_missing_metadata_file_is_named(tmp_path, name, key):
    fx = SETS[name][0](tmp_path)
    fx.meta[key].unlink()
    with pytest.raises(FileNotFoundError) as err:
        SETS[name][1](str(tmp_path)).setup()
    message = str(err.value)
    assert "1 of the" in message and f"missing file {fx.meta[key]}" in message
    if name == "cars":
        assert str(tmp_path.resolve() / "cars_meta.mat") in message  # the other place looked in


def test_missing_image_folder_is_named(tmp_path):
    write_dogs(tmp_path)
    (tmp_path / "Images").rename(tmp_path / "images_elsewhere")
    folder = re.escape(f"missing folder {tmp_path.resolve()}/Images/")
    with pytest.raises(FileNotFoundError, match=folder):
        StanfordDogsDataModule(str(tmp_path)).prepare_data()


# ----------------------------------------------------------------------------- bad metadata
def edit_lines(path: Path, edit) -> None:
    lines = path.read_text().splitlines()
    path.write_text("\n".join(edit(lines)) + "\n")


def set_first_cub_label(value: str):
    return lambda lines: [f"1 {value}"] + lines[1:]


CUB_CASES = {
    "id missing": (
        "labels",
        lambda lines: lines[:4] + lines[5:],
        r"image_class_labels.txt has no line for image id 5 \(listed on line 5",
    ),
    "extra id": ("boxes", lambda lines: lines + ["99 1 1 2 2"], r"bounding_boxes.txt line 21"),
    "class 0": ("labels", set_first_cub_label("0"), r"labels.txt line 1: class 0 is outside 1..4"),
    "class 5": ("labels", set_first_cub_label("5"), r"labels.txt line 1: class 5 is outside 1..4"),
    "bad split": ("split", lambda lines: [*lines[:2], "3 2"] + lines[3:], r"split.txt line 3"),
    "bad box": ("boxes", lambda lines: ["1 1 1 one 2"] + lines[1:], r"boxes.txt line 1"),
    "short line": ("images", lambda lines: ["1"] + lines[1:], r"images.txt line 1: expected 2"),
    "duplicate": ("images", lambda lines: lines + [lines[0]], r"images.txt line 21: id 1"),
}


@pytest.mark.parametrize("case", CUB_CASES)
def test_cub_inconsistent_metadata(tmp_path, case):
    key, edit, message = CUB_CASES[case]
    fx = write_cub(tmp_path)
    edit_lines(fx.meta[key], edit)
    with pytest.raises(ValueError, match=message) as err:
        CUBDataModule(str(tmp_path)).setup()
    assert str(fx.meta[key]) in str(err.value)


def test_listed_image_that_does_not_exist(tmp_path):
    fx = write_cub(tmp_path)
    gone = fx.images[6].path
    gone.unlink()
    with pytest.raises(ValueError, match="1 image") as err:
        CUBDataModule(str(tmp_path)).setup()
    assert f"{fx.meta['images']} line 7: {gone}" in str(err.value)


def set_dog_label(value: float):
    def edit(mat):
        mat["labels"][0, 0] = value

    return edit


@pytest.mark.parametrize(
    "edit, message",
    [
        (set_dog_label(0), r"train_list.mat entry 1 \(.*\): class 0.0 is outside 1..3"),
        (set_dog_label(4), r"train_list.mat entry 1 \(.*\): class 4.0 is outside 1..3"),
        (set_dog_label(2), r"entry 1 \(n02085620-Chihuahua/.*\): label 2 is n02085782"),
        (lambda mat: mat.pop("labels"), r"train_list.mat has no variable labels"),
    ],
)
def test_dogs_inconsistent_lists(tmp_path, edit, message):
    fx = write_dogs(tmp_path)
    rewrite_mat(fx.meta["train_list"], edit)
    with pytest.raises(ValueError, match=message):
        StanfordDogsDataModule(str(tmp_path)).setup()


def test_dogs_listed_image_missing(tmp_path):
    fx = write_dogs(tmp_path)
    gone = fx.split("test")[-1].path
    gone.unlink()
    with pytest.raises(ValueError, match=r"test_list.mat entry 6 \(.*\): .*n02085936_1015.jpg"):
        StanfordDogsDataModule(str(tmp_path)).setup()


@pytest.mark.parametrize("value", [0, 4])
def test_cars_class_out_of_range(tmp_path, value):
    fx = write_cars(tmp_path)

    def edit(mat):
        mat["annotations"]["class"][0, 1] = np.array([[value]], dtype=np.uint8)

    rewrite_mat(fx.meta["train_annos"], edit)
    with pytest.raises(ValueError, match=rf"annotation 2 \(00002.jpg\): class {value} is outside"):
        StanfordCarsDataModule(str(tmp_path)).setup()


def test_cars_test_annotations_without_classes(tmp_path):
    fx = write_cars(tmp_path)

    def drop_class(mat):
        old = mat["annotations"]
        fields = [f for f in old.dtype.names if f != "class"]
        new = np.zeros(old.shape, dtype=[(f, object) for f in fields])
        for f in fields:
            new[f] = old[f]
        mat["annotations"] = new

    rewrite_mat(fx.meta["test_annos"], drop_class)
    with pytest.raises(ValueError, match="annotation 1 has no field class.*withlabels"):
        StanfordCarsDataModule(str(tmp_path)).setup()


def test_cars_listed_image_missing(tmp_path):
    fx = write_cars(tmp_path)
    (tmp_path / "cars_train" / "00003.jpg").unlink()
    with pytest.raises(ValueError, match=r"cars_train_annos.mat annotation 3 \(00003.jpg\)"):
        StanfordCarsDataModule(str(tmp_path)).setup()
    assert fx.meta["train_annos"].is_file()


# ----------------------------------------------------------------------------- corrupt images
def test_corrupt_image_fails_on_read_naming_the_file(tmp_path):
    fx = write_cub(tmp_path)
    bad = fx.split("test")[0].path
    corrupt(bad, "garbage")
    dm = CUBDataModule(str(tmp_path), **SMALL)
    dm.setup()  # default: no screening, the error comes when the image is read
    with pytest.raises(CorruptImageError, match="skip_corrupt") as err:
        dm.test_set[dm.test_set.paths.index(bad)]
    assert str(bad) in str(err.value)
    with pytest.raises(OSError, match=str(bad)):
        list(dm.test_dataloader())


def test_truncated_jpeg_passes_verify_but_not_the_check(tmp_path):
    path = tmp_path / "x.jpg"
    corrupt(path, "truncated")
    with Image.open(path) as image:
        image.verify()  # PIL's verify alone does not notice
    assert "truncated" in check_image(path)
    with pytest.raises(CorruptImageError, match="truncated"):
        load_rgb(path)  # fails on decode, naming the file
    image = Image.new("RGB", SIZE)
    image.save(path)
    assert check_image(path) is None


@pytest.mark.parametrize("name", SETS)
def test_skip_corrupt_drops_warns_once_and_lists(tmp_path, name):
    writer, module, _ = SETS[name]
    fx = writer(tmp_path)
    bad = [fx.split("train")[1].path, fx.split("test")[0].path]
    corrupt(bad[0], "garbage")
    corrupt(bad[1], "truncated")
    dm = module(str(tmp_path), skip_corrupt=True, **SMALL)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dm.setup()
        dm.setup()
    ours = [str(w.message) for w in caught if "unreadable" in str(w.message)]
    assert len(ours) == 1 and "left out 2 unreadable" in ours[0]
    assert all(str(p) in ours[0] for p in bad)
    assert dm.skipped == sorted(bad)
    n_train, n_test = len(fx.split("train")), len(fx.split("test"))
    assert (len(dm.train_set), len(dm.test_set)) == (n_train - 1, n_test - 1)
    assert not set(bad) & (set(dm.train_set.paths) | set(dm.test_set.paths))
    assert sum(len(y) for _, y in dm.train_dataloader()) == n_train - 1
    assert sum(len(y) for _, y in dm.val_dataloader()) == n_test - 1


def test_skip_corrupt_with_val_split(tmp_path):
    fx = write_cub(tmp_path)
    for im in fx.split("train")[:4]:
        corrupt(im.path, "garbage")
    dm = CUBDataModule(str(tmp_path), skip_corrupt=True, val_split=0.5, **SMALL)
    with pytest.warns(UserWarning, match="left out 4 unreadable .* and 1 more"):
        dm.setup()
    assert len(dm.train_set) + len(dm.val_set) == 8 and len(dm.test_set) == 8
    assert not set(dm.train_set.paths) & set(dm.val_set.paths)


# ----------------------------------------------------------------------------- invalid values
@pytest.mark.parametrize("module", [CUBDataModule, StanfordDogsDataModule, StanfordCarsDataModule])
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"batch_size": 0}, "batch_size=0 must be >= 1"),
        ({"num_workers": -1}, "num_workers=-1 must be >= 0"),
        ({"image_size": 0, "resize_size": 10}, "image_size=0 must be >= 1"),
        ({"image_size": 448, "resize_size": 400}, "use resize_size >= 448"),
        ({"val_split": 1.0}, r"val_split=1.0 must be in \[0, 1\)"),
        ({"val_split": -0.1}, r"val_split=-0.1 must be in \[0, 1\)"),
    ],
)
def test_invalid_values(module, kwargs, message):
    with pytest.raises(ValueError, match=message):
        module(**kwargs)


def test_hyperparameters_are_saved():
    dm = StanfordDogsDataModule("somewhere", val_split=0.1, image_size=224, resize_size=256)
    assert dm.hparams.val_split == 0.1 and dm.hparams.image_size == 224
    assert dm.image_size == (224, 224) and isinstance(dm, FineGrainedDataModule)


# ----------------------------------------------------------------------------- with a Trainer
def test_fit_one_batch(tmp_path):
    """The data module plugs into a Trainer (CPU fast_dev_run) with 3-channel batches."""

    fx: FixtureSet = write_cars(tmp_path)
    dm = StanfordCarsDataModule(str(fx.data_dir), **SMALL)
    assert fit_one_batch(dm, 3 * 32 * 32, dm.num_classes) == [(4, 3, 32, 32), (4, 3, 32, 32)]
