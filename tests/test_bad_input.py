"""Bad input in every data module: a zero-byte, truncated or garbage file gives an error naming
the file and the fix, or, for a module reading one file per image with ``skip_corrupt: true``,
a counted, warned skip after which every loader runs to the end. Never a silent wrong result.

Modules and the files they read (tiny fixtures in the published layouts):
- one file per image, with ``skip_corrupt``: CUB, Stanford Dogs, Stanford Cars, FGVC-Aircraft,
  Flowers-102, Oxford-IIIT Pets, a user's image folder, SVHN format 1 (and through it the
  embedded house numbers, which are SVHN format 1 written by us);
- metadata and archives, an error naming the file: the MNIST IDX files (MNIST and MNIST
  sequences), SVHN's ``digitStruct.mat`` and format-2 ``.mat``, the fine-grained sets' lists,
  tables and ``.mat`` files, the image folder's ``boxes.csv``;
- the files a user predicts on (``predict_paths``), for every data module, including the
  download-free digit modules (digits, part digits, localized digits) whose training data is
  bundled with scikit-learn and has no file to damage.

"Truncated" cuts a file at half its length, moved back off a line end so a text table is cut
mid-line, as a copy stopped short leaves it (a cut exactly at a line end of a list with no
cross-reference is indistinguishable from a shorter list; see docs/RESULTS.md).
"""

from __future__ import annotations

import gzip
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from benchmark_fixtures import md5, write_aircraft, write_flowers, write_pets
from finegrained_fixtures import write_cars, write_cub, write_dogs
from image_folder_fixtures import write_folder
from svhn_fixtures import write_cropped, write_svhn
from torchvision.datasets import SVHN, Flowers102

from raccn.datamodules import (
    ClutteredDigitsDataModule,
    CUBDataModule,
    FGVCAircraftDataModule,
    Flowers102DataModule,
    ImageFolderDataModule,
    LocalizedDigitsDataModule,
    MNISTDataModule,
    MNISTSequencesDataModule,
    OxfordPetsDataModule,
    PartDigitsDataModule,
    StanfordCarsDataModule,
    StanfordDogsDataModule,
    SVHNCroppedDataModule,
    SVHNDataModule,
)
from raccn.datamodules.finegrained import CorruptImageError

DAMAGES = ("zero_byte", "truncated", "garbage")
SMALL = {"image_size": 16, "resize_size": 18, "batch_size": 4}
OFFLINE = {**SMALL, "download": False}


def damage(path: Path, how: str) -> None:
    """Make ``path`` zero bytes long, cut it at half (off a line end), or replace it by text."""
    data = path.read_bytes()
    if how == "zero_byte":
        path.write_bytes(b"")
    elif how == "truncated":
        cut = len(data) // 2
        while cut > 2 and data[cut - 1 : cut] == b"\n":
            cut -= 2
        path.write_bytes(data[:cut])
    else:
        path.write_bytes(b"this is not the file you are looking for\n" * 8)


def accept_flowers_checksums(fx, monkeypatch) -> None:
    """torchvision checks Flowers-102's .mat files by MD5: accept the fixture's (undamaged) ones."""
    for key, path in fx.meta.items():
        monkeypatch.setitem(Flowers102._file_dict, key, (path.name, md5(path)))


def write_mnist(root: Path) -> None:
    """The four MNIST files, gzipped IDX, with 40 training and 20 test digits."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for name, shape in (("train-images-idx3-ubyte", (40, 28, 28)), ("train-labels-idx1-ubyte", (40,)),
                        ("t10k-images-idx3-ubyte", (20, 28, 28)), ("t10k-labels-idx1-ubyte", (20,))):
        values = rng.integers(0, 10 if len(shape) == 1 else 256, shape, dtype=np.uint8)
        header = bytes([0, 0, 8, len(shape)]) + b"".join(s.to_bytes(4, "big") for s in shape)
        with gzip.open(root / f"{name}.gz", "wb") as f:
            f.write(header + values.tobytes())


def write_cropped_pair(root: Path, monkeypatch) -> None:
    for split, n in (("train", 20), ("test", 10)):
        url, name, _ = SVHN.split_list[split]
        monkeypatch.setitem(SVHN.split_list, split, [url, name, write_cropped(root, split, n)[2]])


# ----------------------------------------------------------------------------- one file per image
def _flowers_image(root: Path, monkeypatch) -> Path:
    fx = write_flowers(root)
    accept_flowers_checksums(fx, monkeypatch)
    return fx.split("test")[0].path


# name -> (write the fixture, return one test image; build the module)
ImageCase = tuple[Callable[[Path, pytest.MonkeyPatch], Path], Callable[..., object]]
IMAGE_MODULES: dict[str, ImageCase] = {
    "cub": (lambda r, mp: write_cub(r).split("test")[0].path,
            lambda r, **kw: CUBDataModule(str(r), **SMALL, **kw)),
    "dogs": (lambda r, mp: write_dogs(r).split("test")[0].path,
             lambda r, **kw: StanfordDogsDataModule(str(r), **SMALL, **kw)),
    "cars": (lambda r, mp: write_cars(r).split("test")[0].path,
             lambda r, **kw: StanfordCarsDataModule(str(r), **SMALL, **kw)),
    "aircraft": (lambda r, mp: write_aircraft(r).split("test")[0].path,
                 lambda r, **kw: FGVCAircraftDataModule(str(r), **OFFLINE, **kw)),
    "flowers": (lambda r, mp: _flowers_image(r, mp),
                lambda r, **kw: Flowers102DataModule(str(r), **OFFLINE, **kw)),
    "pets": (lambda r, mp: write_pets(r).split("test")[0].path,
             lambda r, **kw: OxfordPetsDataModule(str(r), **OFFLINE, **kw)),
    "image_folder": (lambda r, mp: write_folder(r, corrupt=False).split("val")[0].path,
                     lambda r, **kw: ImageFolderDataModule(str(r), **SMALL, **kw)),
    "svhn": (lambda r, mp: write_svhn(r) / "test" / "2.png",
             lambda r, **kw: SVHNDataModule(str(r), batch_size=2, val_split=0.0, **kw)),
}


def run_every_loader(dm) -> int:
    """prepare_data, setup and one pass over the train, val and test loaders: items read."""
    dm.prepare_data()
    dm.setup("fit")
    return sum(len(batch[0]) for loader in (dm.train_dataloader(), dm.val_dataloader(),
                                             dm.test_dataloader()) for batch in loader)


def used_paths(dm) -> set[Path]:
    if isinstance(dm, SVHNDataModule):
        return {p for numbers in dm.numbers.values() for p in numbers.paths}
    return {p for ds in (dm.train_set, dm.val_set, dm.test_set) for p in ds.paths}


def skipped_count(dm) -> int:
    if isinstance(dm, SVHNDataModule):
        return sum(c.unreadable for c in dm.counts.values())
    return len(dm.skipped)


@pytest.mark.parametrize("how", DAMAGES)
@pytest.mark.parametrize("name", IMAGE_MODULES)
def test_bad_image_fails_naming_the_file_and_the_fix(tmp_path, monkeypatch, name, how):
    write, build = IMAGE_MODULES[name]
    bad = write(tmp_path, monkeypatch)
    damage(bad, how)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's notes on tiny data
        with pytest.raises(CorruptImageError) as info:
            run_every_loader(build(tmp_path))
    message = str(info.value)
    assert str(bad) in message and "skip_corrupt true" in message


@pytest.mark.parametrize("how", DAMAGES)
@pytest.mark.parametrize("name", IMAGE_MODULES)
def test_bad_image_is_counted_and_skipped(tmp_path, monkeypatch, name, how):
    write, build = IMAGE_MODULES[name]
    bad = write(tmp_path, monkeypatch)
    intact = build(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        n_intact = run_every_loader(intact)
    damage(bad, how)
    dm = build(tmp_path, skip_corrupt=True)
    with pytest.warns(UserWarning, match="unreadable") as record:
        n_read = run_every_loader(dm)
    assert any(str(bad) in str(w.message) for w in record)  # the warning names it
    assert skipped_count(dm) == 1 and bad not in used_paths(dm)
    # every loader ran to its end, one item short where the image was (the test split; for a
    # module that validates on the test split, twice)
    assert n_intact - n_read == (2 if dm.val_set is dm.test_set else 1)


# ----------------------------------------------------------------------------- metadata and archives
def _fixture_file(write: Callable[[Path], object], key: str) -> Callable[[Path, pytest.MonkeyPatch], Path]:
    def target(root: Path, monkeypatch) -> Path:
        fx = write(root)
        if write is write_flowers:
            accept_flowers_checksums(fx, monkeypatch)
        return fx.meta[key]

    return target


def _mnist(name: str) -> Callable[[Path, pytest.MonkeyPatch], Path]:
    def target(root: Path, monkeypatch) -> Path:
        write_mnist(root)
        return root / f"{name}.gz"

    return target


def _svhn_mat(root: Path, monkeypatch) -> Path:
    return write_svhn(root) / "train" / "digitStruct.mat"


def _cropped(split: str) -> Callable[[Path, pytest.MonkeyPatch], Path]:
    def target(root: Path, monkeypatch) -> Path:
        write_cropped_pair(root, monkeypatch)
        return root / f"{split}_32x32.mat"

    return target


def _boxes_csv(root: Path, monkeypatch) -> Path:
    write_folder(root, corrupt=False)
    return root / "boxes.csv"


MNIST = {"val_size": 10, "download": False, "batch_size": 4}
# name -> (write the fixture, return the file to damage; build the module)
ARCHIVES: dict[str, tuple[Callable, Callable]] = {
    **{f"mnist/{f}": (_mnist(f), lambda r: MNISTDataModule(str(r), **MNIST))
       for f in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte")},
    "mnist_sequences/train-images-idx3-ubyte": (
        _mnist("train-images-idx3-ubyte"), lambda r: MNISTSequencesDataModule(str(r), **MNIST)),
    "svhn/digitStruct.mat": (_svhn_mat, lambda r: SVHNDataModule(str(r), batch_size=2)),
    **{f"svhn_cropped/{s}_32x32.mat": (_cropped(s), lambda r: SVHNCroppedDataModule(str(r), batch_size=2))
       for s in ("train", "test")},
    **{f"cub/{k}": (_fixture_file(write_cub, k), lambda r: CUBDataModule(str(r), **SMALL))
       for k in ("images", "labels", "split", "boxes", "classes")},
    **{f"dogs/{k}": (_fixture_file(write_dogs, k), lambda r: StanfordDogsDataModule(str(r), **SMALL))
       for k in ("train_list", "test_list")},
    **{f"cars/{k}": (_fixture_file(write_cars, k), lambda r: StanfordCarsDataModule(str(r), **SMALL))
       for k in ("meta", "train_annos", "test_annos")},
    **{f"aircraft/{k}": (_fixture_file(write_aircraft, k),
                         lambda r: FGVCAircraftDataModule(str(r), boxes=True, **OFFLINE))
       for k in ("variants", "variant_trainval", "variant_test", "boxes")},
    **{f"flowers/{k}": (_fixture_file(write_flowers, k), lambda r: Flowers102DataModule(str(r), **OFFLINE))
       for k in ("label", "setid")},
    **{f"pets/{k}": (_fixture_file(write_pets, k), lambda r: OxfordPetsDataModule(str(r), **OFFLINE))
       for k in ("trainval", "test")},
    "image_folder/boxes.csv": (_boxes_csv, lambda r: ImageFolderDataModule(str(r), boxes=True, **SMALL)),
}


@pytest.mark.parametrize("how", DAMAGES)
@pytest.mark.parametrize("name", ARCHIVES)
def test_bad_metadata_or_archive_fails_naming_the_file(tmp_path, monkeypatch, name, how):
    write, build = ARCHIVES[name]
    bad = write(tmp_path, monkeypatch)
    assert bad.is_file()
    damage(bad, how)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises((ValueError, OSError)) as info:  # IdxFormatError, DigitStructError: ValueErrors
            dm = build(tmp_path)
            dm.prepare_data()
            dm.setup("fit")
    assert str(bad) in str(info.value), f"{name} ({how}): {info.value}"


# ----------------------------------------------------------------------------- files to predict on
PREDICTORS = {
    "digits": lambda: ClutteredDigitsDataModule,
    "part_digits": lambda: PartDigitsDataModule,
    "localized_digits": lambda: LocalizedDigitsDataModule,
    "mnist": lambda: MNISTDataModule,
    "svhn": lambda: SVHNDataModule,
    "svhn_cropped": lambda: SVHNCroppedDataModule,
    "cub": lambda: CUBDataModule,
    "image_folder": lambda: ImageFolderDataModule,
}


@pytest.mark.parametrize("how", DAMAGES)
@pytest.mark.parametrize("name", PREDICTORS)
def test_bad_file_to_predict_on_fails_naming_it(tmp_path, name, how):
    from PIL import Image

    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    rng = np.random.default_rng(0)
    for path in (good, bad):
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(path)
    damage(bad, how)
    dm = PREDICTORS[name]()(data_dir=str(tmp_path / "no data needed"), batch_size=2,
                            predict_paths=[str(good), str(bad)])
    with pytest.raises(ValueError, match="cannot predict") as info:
        dm.setup("predict")
    assert str(bad) in str(info.value) and "predict_paths" in str(info.value)
    dm.predict_paths = [str(good)]  # the intact file alone is read
    dm.predict_set = None
    dm.setup("predict")
    images, indices = next(iter(dm.predict_dataloader()))
    assert images.shape[0] == 1 and torch.equal(indices, torch.tensor([0]))
