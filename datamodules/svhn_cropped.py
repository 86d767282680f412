"""SVHN format 2, cropped digits (Netzer et al. 2011, http://ufldl.stanford.edu/housenumbers/):
32x32 RGB images of single digits centred in their box, read through
``torchvision.datasets.SVHN`` (``train_32x32.mat``, ``test_32x32.mat``, ``extra_32x32.mat``;
MATLAB v5 files with ``X`` uint8 (32, 32, 3, N) and ``y`` (N, 1) in 1..10, torchvision turns
10 into 0). A single-label task for RAM.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.datasets import SVHN

from raccn.datamodules.base import SplitDataModule


def load_cropped(data_dir: str | Path, split: str, download: bool = False) -> tuple[Tensor, Tensor]:
    """One split's images Tensor[N, 3, 32, 32] uint8 and labels Tensor[N] int64 (0..9).

    Raises:
        FileNotFoundError: the file is missing (named, with where to get it).
        ValueError: the file fails torchvision's MD5 check or holds labels outside 0..9.
    """
    root = Path(data_dir).expanduser().resolve()
    url, filename, _ = SVHN.split_list[split]
    path = root / filename
    if not download and not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: SVHN format 2 (cropped digits) needs {filename} from {url} in "
            "data_dir; download it there, point --data.init_args.data_dir at its folder, or set "
            "--data.init_args.download true."
        )
    try:
        ds = SVHN(str(root), split=split, download=download)
    except RuntimeError as e:  # torchvision: "Dataset not found or corrupted"
        raise ValueError(
            f"{path} does not match the MD5 checksum of SVHN's {filename} ({e}): it is truncated "
            f"or another file; delete it and download it again from {url}."
        ) from e
    images = torch.from_numpy(ds.data)  # (N, 3, 32, 32) uint8, transposed by torchvision
    labels = torch.from_numpy(ds.labels).long().reshape(-1)
    if labels.numel() != images.shape[0] or (labels.numel() and not 0 <= labels.min() <= labels.max() <= 9):
        raise ValueError(
            f"{path}: {images.shape[0]} images but labels of shape {tuple(ds.labels.shape)} with "
            "values outside 1..10; the file is damaged, download it again."
        )
    return images, labels


class CroppedDigits(Dataset):
    """Items ``(image Tensor[3, 32, 32] float32 in [0, 1], label Tensor[] int64)`` of uint8
    images; ``__getitems__`` converts a whole batch at once."""

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.images[i].float().div_(255.0), self.labels[i]

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[Tensor, Tensor]]:
        idx = torch.as_tensor(indices, dtype=torch.int64).reshape(-1)
        return list(zip(self.images[idx].float().div_(255.0), self.labels[idx]))


class SVHNCroppedDataModule(SplitDataModule):
    """SVHN cropped digits; batches ``(images Tensor[B, 3, 32, 32] float32 in [0, 1], labels
    Tensor[B] int64 in 0..9)``.

    Splits: ``val_size`` images of ``train_32x32.mat`` (a permutation seeded with ``seed``)
    are held out for validation; the rest, plus ``extra_32x32.mat`` with ``use_extra``, trains;
    ``test_32x32.mat`` tests. ``split_indices[split]`` gives the positions in the train (val,
    train) or test file; extra images follow the train ones.

    Args:
        data_dir (str): folder holding the ``.mat`` files.
        batch_size (int): images per batch, ``>= 1``.
        num_workers (int): DataLoader worker processes, ``>= 0``.
        val_size (int): training images held out for validation, ``>= 1``.
        use_extra (bool): add the 531,131 extra images to the training set.
        seed (int): seed of the hold-out.
        download (bool): let torchvision download missing files.
        predict_paths (list[str] | None): image files to predict on (RGB, resized to 32x32).
    """

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: int = 128,
        num_workers: int = 0,
        val_size: int = 5000,
        use_extra: bool = False,
        seed: int = 0,
        download: bool = False,
        predict_paths: list[str] | None = None,
    ) -> None:
        if val_size < 1:
            raise ValueError(f"val_size={val_size} must be >= 1 (e.g. 5000 of the 73,257).")
        super().__init__(batch_size, num_workers, 32, predict_paths)
        self.save_hyperparameters()
        self.data_dir = data_dir
        self.val_size = val_size
        self.use_extra = use_extra
        self.seed = seed
        self.download = download
        self.split_indices: dict[str, Tensor] = {}

    @property
    def num_classes(self) -> int:
        return 10

    @property
    def num_channels(self) -> int:
        return 3

    def prepare_data(self) -> None:
        """Check (or with ``download`` fetch) the files."""
        for split in ("train", "test") + (("extra",) if self.use_extra else ()):
            load_cropped(self.data_dir, split, self.download)

    def setup(self, stage: str | None = None) -> None:
        if self.setup_predict(stage) or self.train_set is not None:
            return
        images, labels = load_cropped(self.data_dir, "train")
        n = len(labels)
        if self.val_size >= n:
            raise ValueError(
                f"val_size={self.val_size} leaves no training images of the {n} in "
                f"train_32x32.mat; use val_size < {n}."
            )
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))
        val_idx, train_idx = perm[: self.val_size].sort().values, perm[self.val_size :].sort().values
        train_images, train_labels = images[train_idx], labels[train_idx]
        if self.use_extra:
            extra_images, extra_labels = load_cropped(self.data_dir, "extra")
            train_images = torch.cat([train_images, extra_images])
            train_labels = torch.cat([train_labels, extra_labels])
            train_idx = torch.cat([train_idx, n + torch.arange(len(extra_labels))])
        test_images, test_labels = load_cropped(self.data_dir, "test")
        self.split_indices = {"train": train_idx, "val": val_idx,
                              "test": torch.arange(len(test_labels))}
        self.train_set = CroppedDigits(train_images, train_labels)
        self.val_set = CroppedDigits(images[val_idx], labels[val_idx])
        self.test_set = CroppedDigits(test_images, test_labels)
