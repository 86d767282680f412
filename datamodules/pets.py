"""Oxford-IIIT Pets (Parkhi et al., 2012): 7,349 photos of 37 cat and dog breeds, 3,680 in the
official ``trainval`` list and 3,669 in ``test``.

Read by ``torchvision.datasets.OxfordIIITPet`` from the published archives as extracted into
``oxford-iiit-pet/``: ``images/<Breed>_<n>.jpg`` (images.tar.gz) and ``annotations/trainval.txt``,
``annotations/test.txt`` (annotations.tar.gz; lines ``<image id> <class 1..37> <species>
<breed id>``).
"""

from __future__ import annotations

from torchvision.datasets import OxfordIIITPet

from raccn.datamodules.finegrained import Expected, OfficialSplits
from raccn.datamodules.torchvision_finegrained import TorchvisionFineGrainedDataModule


class OxfordPetsDataModule(TorchvisionFineGrainedDataModule):
    """Oxford-IIIT Pets: 37 breeds, official ``trainval`` / ``test`` lists. Class names are
    torchvision's (``Abyssinian``, ``American Bulldog``, ...). No object boxes (the published
    boxes are of the pets' heads, and of the ``trainval`` images only). Arguments: see
    :class:`~raccn.datamodules.torchvision_finegrained.TorchvisionFineGrainedDataModule`.
    """

    NAME = "Oxford-IIIT Pets"
    SOURCE = (
        "https://www.robots.ox.ac.uk/~vgg/data/pets/ (images.tar.gz and annotations.tar.gz, "
        "both extracted into oxford-iiit-pet/)"
    )
    DATASET = OxfordIIITPet
    FOLDER = "oxford-iiit-pet"
    URL = OxfordIIITPet._RESOURCES[0][0]
    FILES_ATTR = "_images"

    def expected(self) -> list[Expected]:
        images, annotations = self.root / "images", self.root / "annotations"
        return [
            Expected("images", (images,), folder=True),
            Expected("trainval", (annotations / "trainval.txt",)),
            Expected("test", (annotations / "test.txt",)),
        ]

    def _split(self, split: str) -> OxfordIIITPet:
        path = self.require()[split]
        try:
            return self.dataset(split)
        except ValueError as e:  # a line that is not 4 fields, a class that is not a number
            raise ValueError(
                f"{path}: {e}; every line must be '<image id> <class 1..37> <species 1..2> "
                "<breed id>' (extract annotations.tar.gz again)."
            ) from None

    def _check_numbering(self, dataset: OxfordIIITPet, classes: list[str], split: str) -> None:
        """``ValueError`` unless each class number k of ``dataset`` is one breed, ``classes[k]``
        (torchvision names the classes after the breeds in the image ids, by class number)."""
        numbers = sorted(set(dataset._labels))
        pairs = list(zip(numbers, dataset.classes))
        if len(dataset.classes) != len(numbers) or any(
            k >= len(classes) or classes[k] != name for k, name in pairs
        ):
            raise ValueError(
                f"{self.root / 'annotations' / f'{split}.txt'}: the class numbers do not match "
                "the breeds of the image ids (each class number must be one breed, the same in "
                "trainval.txt and test.txt, numbered from 1); extract annotations.tar.gz again."
            )

    def read_class_names(self) -> list[str]:
        dataset = self._split("trainval")
        classes = list(dataset.classes)
        self._check_numbering(dataset, classes, "trainval")
        return classes

    def read_records(self) -> OfficialSplits:
        classes = self.class_names
        splits = {}
        for split in ("trainval", "test"):
            dataset = self._split(split)
            self._check_numbering(dataset, classes, split)
            splits[split] = self.records(dataset)
        return OfficialSplits(train=splits["trainval"], test=splits["test"])
