"""Shared part of the data modules: config checks, the three splits and their loaders."""

from __future__ import annotations

import pytorch_lightning as pl
from torch.utils.data import DataLoader, Dataset


class SplitDataModule(pl.LightningDataModule):
    """Base of every data module here: checks ``batch_size``/``num_workers`` and serves
    ``train_set``, ``val_set`` and ``test_set`` (built by the subclass's ``setup``).

    Args:
        batch_size (int): items per batch, ``>= 1``.
        num_workers (int): DataLoader worker processes, ``>= 0`` (0 = load in the main process).
        image_side (int): side ``H = W`` of the (square) images the loaders produce.
    """

    def __init__(self, batch_size: int, num_workers: int, image_side: int) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1; e.g. use batch_size=16.")
        if num_workers < 0:
            raise ValueError(
                f"num_workers={num_workers} must be >= 0; use 0 to load in the main process."
            )
        self.batch_size = batch_size
        self.num_workers = num_workers
        self._image_side = image_side
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of the images the loaders produce."""
        return (self._image_side, self._image_side)

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches (fresh augmentation every epoch)."""
        return self._loader(self.train_set, "train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches in fixed order, without augmentation."""
        return self._loader(self.val_set, "val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """Test batches in fixed order, without augmentation."""
        return self._loader(self.test_set, "test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """The test batches."""
        return self.test_dataloader()

    def _loader(self, dataset: Dataset | None, split: str, shuffle: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError(
                f"the {split} split is not built yet; call setup() first (the Trainer does it)."
            )
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=False,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=False,
        )


class DigitCanvasDataModule(SplitDataModule):
    """Base for data modules yielding batches ``(images, labels)`` of single-channel digits.

    Batches: ``images`` Tensor[B, 1, H, W] float32 in [0, 1], ``labels`` Tensor[B] int64 in
    ``0..num_classes-1``. Subclasses set ``self.train_set``, ``self.val_set`` and
    ``self.test_set`` (:class:`TranslatedClutteredDataset`) in ``setup`` and pass the side of
    their square output to ``__init__``.

    Args:
        batch_size (int): items per batch, ``>= 1``.
        num_workers (int): DataLoader worker processes, ``>= 0`` (0 = load in the main process).
        image_side (int): side ``H = W`` of the produced images.
    """

    @property
    def num_classes(self) -> int:
        """Number of classes (digits 0..9)."""
        return 10

    @property
    def num_channels(self) -> int:
        """Channels ``C`` of the images (grey scale)."""
        return 1
