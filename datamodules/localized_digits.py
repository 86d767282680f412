"""Embedded fine-grained proxy for RA-CNN: small digits in a large cluttered canvas, with boxes.

scikit-learn's bundled 8x8 digits are upsampled and placed at a random position of a much larger
canvas among distractor patches cut from other digits (the same generator as the RAM data,
:class:`~datamodules.synthetic.TranslatedClutteredDataset`). At scale 1 the object is small and
surrounded by clutter; a zoom on it pays off. Validation and test batches also carry the
object's true box, so the APN's localisation can be scored (``val/apn_iou_scale{s}``).
No download; the split and the val/test canvases are fixed (see ``ClutteredDigitsDataModule``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from datamodules.digits import ClutteredDigitsDataModule
from datamodules.predict import resize_transform
from datamodules.synthetic import TranslatedClutteredDataset


class RGBWithBox(Dataset):
    """Wrap a grey :class:`TranslatedClutteredDataset` for RGB models.

    Items: ``(image Tensor[3, S, S] in [0, 1], label Tensor[] int64)`` and, when the wrapped set
    has fixed placements, ``box Tensor[4]`` = (x0, y0, x1, y1) of the digit in canvas pixels.
    """

    def __init__(self, dataset: TranslatedClutteredDataset) -> None:
        self.dataset = dataset
        self.with_box = dataset.fixed_seed is not None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[Tensor, ...]:
        image, label = self.dataset[i]
        image = image.expand(3, -1, -1)
        if not self.with_box:
            return image, label
        b = self.dataset.box(i)
        box = torch.tensor([b.col, b.row, b.col + b.width, b.row + b.height], dtype=torch.float32)
        return image, label, box


class LocalizedDigitsDataModule(ClutteredDigitsDataModule):
    """The RA-CNN proxy: defaults give 32x32 digits (8x8 upscaled x4) on a 96x96 canvas with
    6 distractors of 12x12, i.e. the object is 1/3 of the canvas side, exactly the smallest box
    the paper's APN bound (1/3 of the previous extent) allows. Arguments as in
    ``ClutteredDigitsDataModule``; ``num_channels`` is 3 (grey repeated), and files to predict on
    are read as grey too, then repeated to 3 channels.
    """

    def __init__(
        self,
        data_dir: str | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
        upscale: int = 4,
        canvas_size: int = 96,
        num_distractors: int = 6,
        distractor_size: int = 12,
        val_size: int = 200,
        test_size: int = 300,
        seed: int = 0,
        predict_paths: list[str] | None = None,
    ) -> None:
        super().__init__(data_dir, batch_size, num_workers, upscale, canvas_size, num_distractors,
                         distractor_size, val_size, test_size, seed, predict_paths)

    @property
    def num_channels(self) -> int:
        return 3

    def predict_transform(self) -> Callable[[Image.Image], Tensor]:
        """PIL image -> Tensor[3, S, S] in [0, 1]: grey, resized to the canvas, repeated to RGB."""
        grey = resize_transform(1, self.image_size)
        return lambda image: grey(image).expand(3, -1, -1)

    def setup(self, stage: str | None = None) -> None:
        if self.setup_predict(stage) or isinstance(self.train_set, RGBWithBox):
            return
        super().setup(stage)
        self.train_set, self.val_set, self.test_set = (
            RGBWithBox(d) for d in (self.train_set, self.val_set, self.test_set)
        )
