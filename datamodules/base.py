"""Shared part of the data modules: config checks, the three splits, the prediction set (the
test split, or the user's image files) and their loaders."""

from __future__ import annotations

from collections.abc import Callable

import pytorch_lightning as pl
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from raccn.datamodules.predict import ImagePathsDataset, resize_transform
from raccn.datamodules.resumable_loader import ResumableDataLoader
from raccn.datamodules.synthetic import collate_canvases


class SplitDataModule(pl.LightningDataModule):
    """Base of every data module here: checks ``batch_size``/``num_workers`` and serves
    ``train_set``, ``val_set`` and ``test_set`` (built by the subclass's ``setup``) and the
    prediction set: the test split, or with ``predict_paths`` the user's image files
    (``predict_set``, a :class:`~raccn.datamodules.predict.ImagePathsDataset` with batches ``(images
    Tensor[B, C, H, W], indices Tensor[B])``, built by :meth:`setup_predict`).

    Subclasses start their ``setup`` with ``if self.setup_predict(stage): return``, so that
    predicting on files needs none of the data set's images.

    Args:
        batch_size (int): items per batch, ``>= 1``.
        num_workers (int): DataLoader worker processes, ``>= 0`` (0 = load in the main process).
        image_side (int): side ``H = W`` of the (square) images the loaders produce.
        predict_paths (list[str] | None): image files to predict on (any format PIL reads),
            turned into model inputs by :meth:`predict_transform`; ``None``: predict on the test
            split.
    """

    def __init__(
        self, batch_size: int, num_workers: int, image_side: int, predict_paths: list[str] | None = None
    ) -> None:
        super().__init__()
        if predict_paths is not None and (isinstance(predict_paths, str) or len(predict_paths) == 0):
            raise ValueError(
                f"predict_paths={predict_paths!r} must be a non-empty list of image files, e.g. "
                "--data.init_args.predict_paths '[a.jpg, b.png]' (or null for the test split)."
            )
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
        self.predict_paths = None if predict_paths is None else [str(p) for p in predict_paths]
        self.predict_set: ImagePathsDataset | None = None

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of the images the loaders produce."""
        return (self._image_side, self._image_side)

    @property
    def class_names(self) -> list[str]:
        """Class names in label order; here ``"0"``, ``"1"``, ... (subclasses with named classes
        override this)."""
        return [str(k) for k in range(self.num_classes)]

    def predict_transform(self) -> Callable[[Image.Image], Tensor]:
        """PIL image (any mode) -> model input Tensor[C, H, W]: here converted to
        ``num_channels`` (grey or RGB) and resized to ``image_size``, values in [0, 1]."""
        return resize_transform(self.num_channels, self.image_size)

    def setup_predict(self, stage: str | None) -> bool:
        """When predicting on ``predict_paths``, build ``predict_set`` (checking every file:
        ``FileNotFoundError`` / ``ValueError`` naming it) and return True: the splits are not
        needed. Otherwise return False."""
        if stage != "predict" or self.predict_paths is None:
            return False
        if self.predict_set is None:
            self.predict_set = ImagePathsDataset(self.predict_paths, self.predict_transform())
        return True

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches (fresh augmentation every epoch), drawn from the loader's own
        random stream so that a resumed run reads the same ones (``ResumableDataLoader``)."""
        return self._loader(self.train_set, "train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches in fixed order, without augmentation."""
        return self._loader(self.val_set, "val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """Test batches in fixed order, without augmentation."""
        return self._loader(self.test_set, "test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """Batches ``(images, indices)`` of ``predict_paths`` in their order, or, without them,
        the test batches."""
        if self.predict_paths is None:
            return self.test_dataloader()
        self.setup_predict("predict")
        return self._loader(self.predict_set, "predict", shuffle=False)

    def _loader(self, dataset: Dataset | None, split: str, shuffle: bool) -> DataLoader:
        """DataLoader over ``dataset``. Data sets with ``__getitems__`` build each batch at once
        (the DataLoader calls ``dataset.__getitems__(indices)``); a batch that comes as a
        :class:`~raccn.datamodules.synthetic.CanvasBatch` is passed on as built, anything else is
        stacked by ``default_collate`` (:func:`~raccn.datamodules.synthetic.collate_canvases`).
        The training split's is a :class:`~raccn.datamodules.resumable_loader.ResumableDataLoader`."""
        if dataset is None:
            raise RuntimeError(
                f"the {split} split is not built yet; call setup() first (the Trainer does it)."
            )
        loader = ResumableDataLoader if split == "train" else DataLoader
        return loader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            drop_last=False,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=False,
            collate_fn=collate_canvases,
        )


class DigitCanvasDataModule(SplitDataModule):
    """Base for data modules yielding batches ``(images, labels)`` of single-channel digits.

    Batches: ``images`` Tensor[B, 1, H, W] float32 in [0, 1], ``labels`` Tensor[B] int64 in
    ``0..num_classes-1``. Subclasses set ``self.train_set``, ``self.val_set`` and
    ``self.test_set`` (:class:`TranslatedClutteredDataset`) in ``setup`` and pass the side of
    their square output to ``__init__``.

    Class names are ``"0"`` .. ``"9"``; files to predict on are read as grey and resized to the
    canvas (``predict_transform``), like the canvases: a light digit on a dark background.

    Args:
        batch_size (int): items per batch, ``>= 1``.
        num_workers (int): DataLoader worker processes, ``>= 0`` (0 = load in the main process).
        image_side (int): side ``H = W`` of the produced images.
        predict_paths (list[str] | None): image files to predict on (see ``SplitDataModule``).
    """

    @property
    def num_classes(self) -> int:
        """Number of classes (digits 0..9)."""
        return 10

    @property
    def num_channels(self) -> int:
        """Channels ``C`` of the images (grey scale)."""
        return 1
