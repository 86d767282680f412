"""Oxford Flowers-102 (Nilsback and Zisserman, 2008): 8,189 photos of 102 flower species; the
official lists give 1,020 training, 1,020 validation and 6,149 test images.

Read by ``torchvision.datasets.Flowers102`` from the published files in ``flowers-102/``: the
images ``jpg/image_<id>.jpg`` (102flowers.tgz), ``imagelabels.mat`` (``labels``, 1..102 per image
id) and ``setid.mat`` (``trnid``, ``valid``, ``tstid``). torchvision checks the two .mat files'
MD5 sums.
"""

from __future__ import annotations

from torchvision.datasets import Flowers102
from torchvision.datasets.utils import check_integrity

from raccn.datamodules.finegrained import Expected, OfficialSplits
from raccn.datamodules.torchvision_finegrained import TorchvisionFineGrainedDataModule

MAT_FILES = ("label", "setid")  # keys of Flowers102._file_dict: (file name, MD5)


class Flowers102DataModule(TorchvisionFineGrainedDataModule):
    """Oxford Flowers-102: 102 species; trains on the official training and validation lists
    together (2,040 images, as is customary) and tests on the test list. Class names are
    torchvision's (``pink primrose``, ...). No boxes. Arguments: see
    :class:`~raccn.datamodules.torchvision_finegrained.TorchvisionFineGrainedDataModule`.
    """

    NAME = "Oxford Flowers-102"
    SOURCE = (
        "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/ (102flowers.tgz, extracted into "
        "flowers-102/ as jpg/, with imagelabels.mat and setid.mat beside it)"
    )
    DATASET = Flowers102
    FOLDER = "flowers-102"
    URL = Flowers102._download_url_prefix + Flowers102._file_dict["image"][0]

    def expected(self) -> list[Expected]:
        root = self.root
        return [Expected("images", (root / "jpg",), folder=True)] + [
            Expected(key, (root / Flowers102._file_dict[key][0],)) for key in MAT_FILES
        ]

    def _split(self, split: str) -> Flowers102:
        files = self.require()
        for key in MAT_FILES:
            if not check_integrity(str(files[key]), Flowers102._file_dict[key][1]):
                raise ValueError(
                    f"{files[key]} fails torchvision's MD5 check: it is damaged or another "
                    f"file; delete it and download it again from "
                    f"{Flowers102._download_url_prefix}{files[key].name}."
                )
        return self.dataset(split)

    def read_class_names(self) -> list[str]:
        return list(Flowers102.classes)

    def read_records(self) -> OfficialSplits:
        train, val, test = (self.records(self._split(s)) for s in ("train", "val", "test"))
        return OfficialSplits(train=train + val, test=test)
