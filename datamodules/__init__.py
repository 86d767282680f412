"""Data modules for recurrent visual attention: plain/translated/cluttered MNIST and the
download-free cluttered scikit-learn digits."""

from datamodules.cars import StanfordCarsDataModule
from datamodules.cub import CUBDataModule
from datamodules.digits import ClutteredDigitsDataModule
from datamodules.dogs import StanfordDogsDataModule
from datamodules.finegrained import FineGrainedDataModule, FineGrainedDataset
from datamodules.localized_digits import LocalizedDigitsDataModule
from datamodules.mnist import MNISTDataModule
from datamodules.synthetic import TranslatedClutteredDataset

__all__ = ["ClutteredDigitsDataModule", "LocalizedDigitsDataModule", "MNISTDataModule", "TranslatedClutteredDataset"]
__all__ += [
    "CUBDataModule",
    "FineGrainedDataModule",
    "FineGrainedDataset",
    "StanfordCarsDataModule",
    "StanfordDogsDataModule",
]
