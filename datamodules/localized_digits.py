"""Embedded fine-grained proxy for RA-CNN: small digits in a large cluttered canvas, with boxes.

scikit-learn's bundled 8x8 digits are upsampled and placed at a random position of a much larger
canvas among distractor patches cut from other digits (the same generator as the RAM data,
:class:`~raccn.datamodules.synthetic.TranslatedClutteredDataset`). At scale 1 the object is small
and surrounded by clutter; a zoom on it pays off. Validation and test batches also carry the
object's true box, so the APN's localisation can be scored (``val/apn_iou_scale{s}``).
No download; the split and the val/test canvases are fixed (see ``ClutteredDigitsDataModule``).

``texture="stripes"`` makes it fine-grained: every digit (object and distractor sources) is
striped with period 2 px, horizontally or vertically, and the orientation is part of the class
(20 classes: ``digit + 10 * orientation``). An area-averaged view at half resolution (what scale
1 sees with ``input_sizes[0] = canvas_size / 2``) turns both stripings into the same flat half
intensity, so scale 1 can read the digit but hardly the orientation; a crop cut from the
full-resolution canvas and amplified (scale 2) shows the stripes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from raccn.datamodules.digits import ClutteredDigitsDataModule
from raccn.datamodules.predict import resize_transform
from raccn.datamodules.synthetic import TranslatedClutteredDataset


class RGBWithBox(Dataset):
    """Wrap a grey :class:`TranslatedClutteredDataset` for RGB models.

    Items: ``(image Tensor[3, S, S] in [0, 1], label Tensor[] int64)`` and, when the wrapped set
    has fixed placements, ``box Tensor[4]`` float32 = (x0, y0, x1, y1) of the digit in canvas
    pixels. Like the wrapped set, it builds a batch at once (``__getitems__``, which
    ``DataLoader`` calls) and an item is the batch of one.
    """

    def __init__(self, dataset: TranslatedClutteredDataset) -> None:
        self.dataset = dataset
        self.with_box = dataset.fixed_seed is not None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[Tensor, ...]:
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[Tensor, ...]]:
        """The items ``indices``, for ``default_collate`` to stack."""
        batch = self.dataset.__getitems__(indices)
        columns = [batch.images.expand(-1, 3, -1, -1), batch.labels]
        if self.with_box:
            row, col, height, width = self.dataset.boxes(indices).float().unbind(1)
            columns.append(torch.stack([col, row, col + width, row + height], 1))  # (B, 4)
        return list(zip(*columns))


TEXTURES = ("none", "stripes")
TEXTURE_SEEDS = {"train": 11, "val": 12, "test": 13}  # orientation of each source digit, fixed


def stripe(images: Tensor, vertical: Tensor) -> Tensor:
    """Stripe digits with period 2 px: rows (or columns) 1, 3, 5, ... set to zero.

    Args:
        images (Tensor[N, h, w]): digits in [0, 1].
        vertical (Tensor[N] bool): stripe columns instead of rows.

    Returns:
        Tensor[N, h, w]: the striped digits.
    """
    h, w = images.shape[-2:]
    rows = (torch.arange(h) % 2 == 0).to(images.dtype)[:, None].expand(h, w)
    cols = (torch.arange(w) % 2 == 0).to(images.dtype)[None, :].expand(h, w)
    return images * torch.where(vertical[:, None, None], cols, rows)


class LocalizedDigitsDataModule(ClutteredDigitsDataModule):
    """The RA-CNN proxy: defaults give 32x32 digits (8x8 upscaled x4) on a 96x96 canvas with
    6 distractors of 12x12, i.e. the object is 1/3 of the canvas side, exactly the smallest box
    the paper's APN bound (1/3 of the previous extent) allows. Arguments as in
    ``ClutteredDigitsDataModule``, plus ``texture``: ``"none"`` (10 classes) or ``"stripes"``
    (20 classes, see the module docstring). ``num_channels`` is 3 (grey repeated), and files to
    predict on are read as grey too, then repeated to 3 channels.
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
        texture: str = "none",
    ) -> None:
        if texture not in TEXTURES:
            raise ValueError(f"texture={texture!r} must be one of {TEXTURES}")
        super().__init__(data_dir, batch_size, num_workers, upscale, canvas_size, num_distractors,
                         distractor_size, val_size, test_size, seed, predict_paths)
        self.texture = texture

    @property
    def num_classes(self) -> int:
        return 20 if self.texture == "stripes" else 10

    @property
    def class_names(self) -> list[str]:
        if self.texture == "stripes":  # digit and the stripes' direction
            return [f"{k % 10}{'-' if k < 10 else '|'}" for k in range(20)]
        return super().class_names

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
        splits = {"train": self.train_set, "val": self.val_set, "test": self.test_set}
        if self.texture == "stripes":
            for split, data in splits.items():
                g = torch.Generator().manual_seed(TEXTURE_SEEDS[split])
                vertical = torch.rand(len(data.labels), generator=g) < 0.5
                data.images = stripe(data.images, vertical).contiguous()
                data.labels = data.labels + 10 * vertical.long()
        self.train_set, self.val_set, self.test_set = (RGBWithBox(d) for d in splits.values())
