"""Data modules: MNIST (plain/translated/cluttered, and digit sequences), the download-free
scikit-learn digits (RAM quick start and the RA-CNN proxies), SVHN (whole numbers and cropped
digits) and the download-free embedded house numbers (DRAM quick start), CUB-200-2011,
Stanford Dogs, Stanford Cars, FGVC-Aircraft, Oxford Flowers-102, Oxford-IIIT Pets, and a folder of
the user's own images (one sub-folder per class).

The folder sits at the repository root but its one import path is ``raccn.datamodules`` (installed
there by ``package-dir`` in pyproject.toml, found beside ``raccn/`` in a source checkout), so the
project never installs a top-level ``datamodules`` that could clash with another package's.
"""

from raccn.datamodules.aircraft import FGVCAircraftDataModule
from raccn.datamodules.cars import StanfordCarsDataModule
from raccn.datamodules.cub import CUBDataModule
from raccn.datamodules.digits import ClutteredDigitsDataModule
from raccn.datamodules.dogs import StanfordDogsDataModule
from raccn.datamodules.finegrained import FineGrainedDataModule, FineGrainedDataset
from raccn.datamodules.flowers import Flowers102DataModule
from raccn.datamodules.house_numbers import EmbeddedHouseNumbersDataModule
from raccn.datamodules.image_folder import ImageFolderDataModule
from raccn.datamodules.localized_digits import LocalizedDigitsDataModule
from raccn.datamodules.mnist import MNISTDataModule
from raccn.datamodules.mnist_sequences import MNISTSequenceDataset, MNISTSequencesDataModule
from raccn.datamodules.part_digits import PartDigitsDataModule
from raccn.datamodules.pets import OxfordPetsDataModule
from raccn.datamodules.svhn import HouseNumberDataset, SVHNDataModule
from raccn.datamodules.svhn_cropped import SVHNCroppedDataModule
from raccn.datamodules.synthetic import TranslatedClutteredDataset

__all__ = [
    "CUBDataModule",
    "ClutteredDigitsDataModule",
    "EmbeddedHouseNumbersDataModule",
    "FGVCAircraftDataModule",
    "FineGrainedDataModule",
    "FineGrainedDataset",
    "Flowers102DataModule",
    "HouseNumberDataset",
    "ImageFolderDataModule",
    "LocalizedDigitsDataModule",
    "MNISTDataModule",
    "MNISTSequenceDataset",
    "MNISTSequencesDataModule",
    "OxfordPetsDataModule",
    "PartDigitsDataModule",
    "SVHNCroppedDataModule",
    "SVHNDataModule",
    "StanfordCarsDataModule",
    "StanfordDogsDataModule",
    "TranslatedClutteredDataset",
]
