"""Data modules: MNIST (plain/translated/cluttered, and digit sequences), the download-free
scikit-learn digits (RAM quick start and the RA-CNN localisation proxy), SVHN (whole numbers and
cropped digits) and the download-free embedded house numbers (DRAM quick start), and
CUB-200-2011, Stanford Dogs, Stanford Cars."""

from datamodules.cars import StanfordCarsDataModule
from datamodules.cub import CUBDataModule
from datamodules.digits import ClutteredDigitsDataModule
from datamodules.dogs import StanfordDogsDataModule
from datamodules.finegrained import FineGrainedDataModule, FineGrainedDataset
from datamodules.house_numbers import EmbeddedHouseNumbersDataModule
from datamodules.localized_digits import LocalizedDigitsDataModule
from datamodules.mnist import MNISTDataModule
from datamodules.mnist_sequences import MNISTSequenceDataset, MNISTSequencesDataModule
from datamodules.svhn import HouseNumberDataset, SVHNDataModule
from datamodules.svhn_cropped import SVHNCroppedDataModule
from datamodules.synthetic import TranslatedClutteredDataset

__all__ = [
    "CUBDataModule",
    "ClutteredDigitsDataModule",
    "EmbeddedHouseNumbersDataModule",
    "FineGrainedDataModule",
    "FineGrainedDataset",
    "HouseNumberDataset",
    "LocalizedDigitsDataModule",
    "MNISTDataModule",
    "MNISTSequenceDataset",
    "MNISTSequencesDataModule",
    "SVHNCroppedDataModule",
    "SVHNDataModule",
    "StanfordCarsDataModule",
    "StanfordDogsDataModule",
    "TranslatedClutteredDataset",
]
