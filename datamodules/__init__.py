"""Data modules: MNIST (plain/translated/cluttered), the download-free scikit-learn digits (RAM
quick start and the RA-CNN localisation proxy), and CUB-200-2011, Stanford Dogs, Stanford Cars."""

from datamodules.cars import StanfordCarsDataModule
from datamodules.cub import CUBDataModule
from datamodules.digits import ClutteredDigitsDataModule
from datamodules.dogs import StanfordDogsDataModule
from datamodules.finegrained import FineGrainedDataModule, FineGrainedDataset
from datamodules.localized_digits import LocalizedDigitsDataModule
from datamodules.mnist import MNISTDataModule
from datamodules.synthetic import TranslatedClutteredDataset

__all__ = [
    "CUBDataModule",
    "ClutteredDigitsDataModule",
    "FineGrainedDataModule",
    "FineGrainedDataset",
    "LocalizedDigitsDataModule",
    "MNISTDataModule",
    "StanfordCarsDataModule",
    "StanfordDogsDataModule",
    "TranslatedClutteredDataset",
]
