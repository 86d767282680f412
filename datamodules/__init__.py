"""Data modules for recurrent visual attention: plain/translated/cluttered MNIST and the
download-free cluttered scikit-learn digits."""

from datamodules.digits import ClutteredDigitsDataModule
from datamodules.mnist import MNISTDataModule
from datamodules.synthetic import TranslatedClutteredDataset

__all__ = ["ClutteredDigitsDataModule", "MNISTDataModule", "TranslatedClutteredDataset"]
