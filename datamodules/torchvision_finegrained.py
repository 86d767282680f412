"""Base of the fine-grained benchmarks that torchvision reads (FGVC-Aircraft, Oxford
Flowers-102, Oxford-IIIT Pets).

torchvision's own data-set class parses the published files; its image list and labels become
:class:`~raccn.datamodules.finegrained.ImageRecord` lists, so the splits, screening of unreadable
images, transforms and errors are those of the other fine-grained modules. Missing files are
downloaded by torchvision only when its server answers (``download``, see
:mod:`raccn.datamodules.download`); otherwise the error lists the files and says where to get
them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torchvision
from torchvision.datasets import VisionDataset

from raccn.datamodules.download import download_if_online
from raccn.datamodules.finegrained import FineGrainedDataModule, ImageRecord


class TorchvisionFineGrainedDataModule(FineGrainedDataModule):
    """A fine-grained data set read through ``DATASET``, a torchvision data-set class.

    ``data_dir`` is the folder holding ``FOLDER`` (torchvision's ``root``; a download goes
    there) or that folder itself. Subclasses set ``NAME``, ``SOURCE``, ``DATASET``, ``FOLDER``,
    ``URL`` (for the network probe), ``FILES_ATTR`` (where ``DATASET`` keeps its image paths)
    and implement :meth:`expected`, :meth:`read_class_names` and :meth:`read_records` with
    :meth:`dataset` and :meth:`records`.

    Args:
        data_dir (str): the folder holding ``FOLDER``, or that folder.
        download (bool): in ``prepare_data``, let torchvision download missing files if its
            server answers within a few seconds (every transfer step times out, so nothing
            hangs); otherwise, or if it fails, ``FileNotFoundError`` lists the files.
        **kwargs: see :class:`~raccn.datamodules.finegrained.FineGrainedDataModule`.
    """

    DATASET: ClassVar[type[VisionDataset]]
    FOLDER: ClassVar[str] = ""
    URL: ClassVar[str] = ""
    FILES_ATTR: ClassVar[str] = "_image_files"

    def __init__(self, data_dir: str = "data", download: bool = True, **kwargs) -> None:
        super().__init__(data_dir=data_dir, **kwargs)
        self.download = download

    @property
    def root(self) -> Path:
        """The data set's folder: ``<data_dir>/<FOLDER>``, or ``data_dir`` if it is that folder."""
        folder = super().root
        if folder.name == self.FOLDER and not (folder / self.FOLDER).is_dir():
            return folder
        return folder / self.FOLDER

    def dataset(self, split: str, download: bool = False, **kwargs: Any) -> VisionDataset:
        """``DATASET`` of ``split`` over the files (a ``RuntimeError`` of torchvision, which
        only says "Dataset not found", becomes a ``FileNotFoundError`` listing the files)."""
        try:
            return self.DATASET(str(self.root.parent), split=split, download=download, **kwargs)
        except RuntimeError as e:
            self.require()  # names the missing files
            raise ValueError(
                f"torchvision's {self.DATASET.__name__} cannot read {self.root}: {e}"
            ) from e

    def records(self, dataset: VisionDataset) -> list[ImageRecord]:
        """The images and 0-based labels ``dataset`` lists, in its order."""
        try:
            files, labels = getattr(dataset, self.FILES_ATTR), dataset._labels
        except AttributeError:
            raise RuntimeError(
                f"torchvision {torchvision.__version__}'s {self.DATASET.__name__} keeps its images "
                f"elsewhere than {self.FILES_ATTR} and _labels; install the torchvision this "
                "project lists in pyproject.toml."
            ) from None
        origin = f"{self.DATASET.__name__}(split={getattr(dataset, '_split', '?')!r})"
        return [
            ImageRecord(Path(f), int(label), None, f"{origin} item {i}")
            for i, (f, label) in enumerate(zip(files, labels))
        ]

    def prepare_data(self) -> None:
        """Check the files; if some are missing and ``download``, try torchvision's download
        first. ``FileNotFoundError`` listing the files (and why the download failed)."""
        if not self.download or all(e.find() is not None for e in self.expected()):
            self.require()
            return
        split = "test"
        reason = download_if_online(lambda: self.dataset(split, download=True), self.URL)
        try:
            self.require()
        except FileNotFoundError as e:
            raise FileNotFoundError(
                f"{e}\nAutomatic download from {self.URL} failed: {reason}. Download the files "
                "by hand, or set --data.init_args.download false to skip the attempt."
            ) from None
