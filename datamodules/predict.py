"""A user's image files as a prediction set: ``predict --data.init_args.predict_paths '[a.jpg, b.png]'``.

Every data module turns a file into what its model takes with its ``predict_transform()`` (a PIL
image in any mode -> Tensor[C, H, W]): grey and resized to the canvas for the digit modules, RGB
with the paper's test transform for the fine-grained ones. All files are checked when the set is
built (before anything is predicted); a missing or undecodable file raises an error naming it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import transforms as T

# What PIL raises on a damaged or unsupported file (UnidentifiedImageError is an OSError).
PIL_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)
HOW_TO_FIX = (
    "Fix or drop it in --data.init_args.predict_paths (a list of image files, e.g. '[a.jpg, b.png]')."
)


def resize_transform(channels: int, size: tuple[int, int]) -> Callable[[Image.Image], Tensor]:
    """PIL image (any mode) -> Tensor[C, H, W] float32 in [0, 1]: converted to grey (``C = 1``,
    luminance) or RGB (``C = 3``) and resized (bilinear, antialiased) to ``size = (H, W)``,
    whatever its aspect ratio."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")
    mode = "L" if channels == 1 else "RGB"
    resize = T.Compose([T.Resize(size, antialias=True), T.ToTensor()])
    return lambda image: resize(image.convert(mode))


def _resolved(path: str | Path) -> str:
    """`` (= /absolute/path)`` when ``path`` is relative or uses ``~``, else nothing."""
    full = Path(path).expanduser().resolve()
    return "" if str(full) == str(path) else f" (= {full})"


def check_paths(paths: Sequence[str | Path]) -> None:
    """Raise ``FileNotFoundError`` listing every path that is not a file, else ``ValueError``
    naming the first file that PIL cannot decode (fully decoded, so truncated files count)."""
    missing = [p for p in paths if not Path(p).expanduser().is_file()]
    if missing:
        listing = "".join(f"\n  {p}{_resolved(p)}" for p in missing)
        raise FileNotFoundError(
            f"cannot predict: {len(missing)} of the {len(paths)} image file(s) do not exist:"
            f"{listing}\n{HOW_TO_FIX}"
        )
    for p in paths:
        try:
            with Image.open(Path(p).expanduser()) as image:
                image.load()
        except PIL_ERRORS as e:
            raise ValueError(
                f"cannot predict: image file {p} cannot be decoded ({type(e).__name__}: {e}). "
                f"{HOW_TO_FIX}"
            ) from e


class ImagePathsDataset(Dataset):
    """Image files in the given order, for prediction.

    Items are ``(image, index)``: ``transform(PIL image)`` (Tensor[C, H, W], as the model takes
    it) and the item's position in ``paths`` (Tensor[] int64), so batches are ``(images
    Tensor[B, C, H, W], indices Tensor[B])`` like the ``(images, labels)`` of the other splits.

    Args:
        paths: image files (any format PIL reads); checked here, see :func:`check_paths`.
        transform: PIL image (any mode) -> Tensor[C, H, W].
    """

    def __init__(self, paths: Sequence[str | Path], transform: Callable[[Image.Image], Tensor]) -> None:
        if isinstance(paths, (str, Path)) or len(paths) == 0:
            raise ValueError(f"paths must be a non-empty list of image files, got {paths!r}")
        check_paths(paths)
        self.paths = [str(p) for p in paths]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        with Image.open(Path(self.paths[i]).expanduser()) as image:
            return self.transform(image), torch.tensor(i, dtype=torch.int64)
