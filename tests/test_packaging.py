"""The data modules' one import path is ``raccn.datamodules``: installed from ``datamodules/`` by
pyproject.toml's ``package-dir``, found beside ``raccn/`` in a source checkout."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_raccn_datamodules_is_this_checkouts_folder():
    import raccn.datamodules
    import raccn.datamodules.synthetic

    folder = ROOT / "datamodules"
    assert Path(raccn.datamodules.__file__).resolve() == folder / "__init__.py"
    assert Path(raccn.datamodules.synthetic.__file__).resolve() == folder / "synthetic.py"
    assert raccn.datamodules.MNISTDataModule.__module__ == "raccn.datamodules.mnist"


def test_pyproject_lists_every_package_folder():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    inits = (ROOT / "raccn").rglob("__init__.py")
    folders = {".".join(p.parent.relative_to(ROOT).parts) for p in inits}
    assert set(config["packages"]) == folders | {"raccn.datamodules"}
    assert config["package-dir"] == {"raccn.datamodules": "datamodules"}
    assert not list((ROOT / "datamodules").glob("*/__init__.py"))  # subpackages would need listing


def test_nothing_names_the_top_level_datamodules():
    stale = re.compile(r"^\s*(from|import) datamodules\b|class_path: datamodules\.", re.MULTILINE)
    files = [*ROOT.glob("*.py"), *ROOT.glob("configs/*.yaml")]
    for folder in ("raccn", "datamodules", "tests", "benchmarks"):
        files += (ROOT / folder).rglob("*.py")
    assert [str(f.relative_to(ROOT)) for f in files if stale.search(f.read_text())] == []
