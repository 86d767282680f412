"""FGVC-Aircraft, Oxford Flowers-102 and Oxford-IIIT Pets through torchvision's data-set classes,
on tiny folders in their published layouts (tests/benchmark_fixtures.py); never the network."""

from __future__ import annotations

import socket
import time
import warnings

import pytest
import torch
from benchmark_fixtures import write_aircraft, write_benchmark, write_pets
from finegrained_fixtures import corrupt
from torchvision.datasets import FGVCAircraft, Flowers102, OxfordIIITPet

import raccn.datamodules.download as download_module
from raccn.datamodules import FGVCAircraftDataModule, Flowers102DataModule, OxfordPetsDataModule
from raccn.datamodules.download import download_if_online, unreachable
from raccn.datamodules.finegrained import IMAGENET_MEAN, IMAGENET_STD

SMALL = {"image_size": 32, "resize_size": 36, "batch_size": 4, "download": False}
SETS = {  # name -> (data module, number of classes, torchvision class, its download method)
    "aircraft": (FGVCAircraftDataModule, 3, FGVCAircraft, "_download"),
    "flowers": (Flowers102DataModule, 102, Flowers102, "download"),
    "pets": (OxfordPetsDataModule, 3, OxfordIIITPet, "_download"),
}


def colour_of(x: torch.Tensor) -> torch.Tensor:
    """Mean RGB (0..255) of an ImageNet-normalised Tensor[3, H, W]."""
    rgb = x * torch.tensor(IMAGENET_STD).view(3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    return (rgb * 255).mean(dim=(1, 2))


@pytest.mark.parametrize("name", SETS)
def test_classes_splits_and_labels(tmp_path, name, monkeypatch):
    module, k, _, _ = SETS[name]
    fx = write_benchmark(name, tmp_path, monkeypatch)
    dm = module(str(tmp_path), **SMALL)
    dm.prepare_data()
    dm.setup("fit")
    assert dm.num_classes == k and dm.num_channels == 3
    if fx.class_names:
        assert dm.class_names == fx.class_names
    else:  # Flowers-102: torchvision's fixed list of 102 names
        assert dm.class_names[:2] == ["pink primrose", "hard-leaved pocket orchid"]
    truth = {im.path: im for im in fx.images}
    for split, ds in (("train", dm.train_set), ("test", dm.test_set)):
        assert sorted(ds.paths) == sorted(im.path for im in fx.split(split))
        for i, path in enumerate(ds.paths):  # labels per image, and the image is its colour
            im = truth[path]
            x, y = ds[i]
            assert x.shape == (3, 32, 32) and int(y) == im.label
            assert torch.allclose(colour_of(x), torch.tensor(im.colour, dtype=torch.float32), atol=6)
    assert dm.val_set is dm.test_set  # val_split=0, as the papers


def test_flowers_trains_on_train_and_val_lists(tmp_path, monkeypatch):
    write_benchmark("flowers", tmp_path, monkeypatch)
    dm = Flowers102DataModule(str(tmp_path), **SMALL)
    dm.setup()
    assert (len(dm.train_set), len(dm.test_set)) == (6, 6)  # trnid + valid, tstid
    assert sorted(set(dm.train_set.labels.tolist())) == [0, 1, 2]


@pytest.mark.parametrize("name", SETS)
def test_data_dir_may_be_the_data_sets_folder(tmp_path, name, monkeypatch):
    module = SETS[name][0]
    write_benchmark(name, tmp_path, monkeypatch)
    dm = module(str(tmp_path / module.FOLDER), **SMALL)
    dm.setup()
    assert len(dm.train_set) > 0 and dm.root == tmp_path / module.FOLDER


def test_aircraft_boxes_and_family_level(tmp_path):
    fx = write_aircraft(tmp_path)
    dm = FGVCAircraftDataModule(str(tmp_path), boxes=True, **SMALL)
    dm.setup()
    boxes = {im.path: im.box for im in fx.images}
    assert torch.equal(dm.test_set.boxes, torch.tensor([boxes[p] for p in dm.test_set.paths]))
    _, _, box = dm.test_set[0]  # (x, y, w, h) -> corners through the test transform
    x, y, w, h = boxes[dm.test_set.paths[0]]  # 40x30 -> 48x36 -> centre 32x32: offset (8, 2)
    expected = [max(0.0, x * 1.2 - 8), y * 1.2 - 2, min(32.0, (x + w) * 1.2 - 8), (y + h) * 1.2 - 2]
    assert box.tolist() == pytest.approx(expected, abs=1e-4)
    family = FGVCAircraftDataModule(str(tmp_path), annotation_level="family", **SMALL)
    assert family.class_names == ["Boeing 707", "A300", "Cessna 172"]


def test_aircraft_unknown_class_names_the_file(tmp_path):
    fx = write_aircraft(tmp_path)
    path = fx.meta["variant_test"]
    path.write_text(path.read_text().replace("A300B4", "A380", 1))
    with pytest.raises(ValueError, match=r"images_variant_test.txt: KeyError: 'A380'"):
        FGVCAircraftDataModule(str(tmp_path), **SMALL).setup()


def test_flowers_md5_mismatch_names_the_file(tmp_path, monkeypatch):
    fx = write_benchmark("flowers", tmp_path, monkeypatch)
    fx.meta["setid"].write_bytes(fx.meta["setid"].read_bytes() + b"\0")
    with pytest.raises(ValueError, match=r"setid.mat fails torchvision's MD5 check.*download it again"):
        Flowers102DataModule(str(tmp_path), **SMALL).setup()


def test_pets_numbering_that_does_not_match_the_breeds(tmp_path):
    fx = write_pets(tmp_path)
    path = fx.meta["test"]
    path.write_text(path.read_text().replace(" 3 1 2", " 2 1 2"))  # Bengal numbered as class 2
    with pytest.raises(ValueError, match=r"test.txt: the class numbers do not match the breeds"):
        OxfordPetsDataModule(str(tmp_path), **SMALL).setup()


@pytest.mark.parametrize("name", SETS)
def test_missing_files_listed_and_no_network_fails_fast(tmp_path, name, monkeypatch):
    module = SETS[name][0]

    def no_dns(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known (test: network disabled)")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    previous = socket.getdefaulttimeout()
    dm = module(str(tmp_path), **{**SMALL, "download": True})
    start = time.monotonic()
    with pytest.raises(FileNotFoundError) as err:
        dm.prepare_data()
    assert time.monotonic() - start < 10 and socket.getdefaulttimeout() == previous
    message = str(err.value)
    assert f"missing folder {dm.root}" in message and module.SOURCE in message
    assert "data_dir" in message and f"Automatic download from {module.URL} failed: no network" in message
    with pytest.raises(FileNotFoundError) as err:  # download false: no attempt
        module(str(tmp_path), **SMALL).prepare_data()
    assert "Automatic download" not in str(err.value)


@pytest.mark.parametrize("name", SETS)
def test_download_when_the_server_answers(tmp_path, name, monkeypatch):
    module, _, dataset, method = SETS[name]
    fetched = []

    def fake_download(self):  # what torchvision's download leaves behind
        fetched.append(self.root)
        write_benchmark(name, tmp_path, monkeypatch)

    monkeypatch.setattr(download_module, "unreachable", lambda url, timeout=5.0: None)
    monkeypatch.setattr(dataset, method, fake_download)
    dm = module(str(tmp_path), **{**SMALL, "download": True})
    dm.prepare_data()
    assert fetched == [str(tmp_path)]
    dm.prepare_data()  # everything there now: no second download
    dm.setup()
    assert len(fetched) == 1 and len(dm.train_set) > 0


def test_skip_corrupt_on_a_benchmark(tmp_path):
    fx = write_pets(tmp_path)
    bad = fx.split("test")[1].path
    corrupt(bad, "truncated")
    dm = OxfordPetsDataModule(str(tmp_path), skip_corrupt=True, **SMALL)
    with pytest.warns(UserWarning, match="left out 1 unreadable image"):
        dm.setup()
    assert dm.skipped == [bad] and len(dm.test_set) == len(fx.split("test")) - 1


def test_invalid_values():
    with pytest.raises(ValueError, match="annotation_level='model' must be one of"):
        FGVCAircraftDataModule(annotation_level="model")
    for module in (Flowers102DataModule, OxfordPetsDataModule):
        with pytest.raises(ValueError, match="has no object boxes; set --data.init_args.boxes false"):
            module(boxes=True)


# ----------------------------------------------------------------------------- the download guard
def test_probe_never_hangs(monkeypatch):
    def hang(*args, **kwargs):  # a DNS lookup or connection that does not come back in time
        time.sleep(3)
        raise TimeoutError("gave up")

    monkeypatch.setattr(socket, "create_connection", hang)
    start = time.monotonic()
    reason = unreachable("https://example.org/x.tgz", timeout=0.3)
    assert time.monotonic() - start < 3 and "no answer from example.org within 0.3 s" in reason


def test_download_failure_is_a_reason_and_the_timeout_is_restored(monkeypatch):
    monkeypatch.setattr(download_module, "unreachable", lambda url, timeout=5.0: None)
    previous = socket.getdefaulttimeout()
    seen = []

    def fetch():
        seen.append(socket.getdefaulttimeout())
        raise OSError("connection reset\n by peer")

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reason = download_if_online(fetch, "https://example.org/x.tgz", socket_timeout=7.0)
    assert seen == [7.0] and reason == "OSError: connection reset by peer"
    assert socket.getdefaulttimeout() == previous


