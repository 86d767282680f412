"""FGVC-Aircraft (Maji et al., 2013): 10,000 photos of aircraft, 100 per model variant; the
customary split trains on the 6,667 ``trainval`` images and tests on the 3,334 ``test`` ones.

Read by ``torchvision.datasets.FGVCAircraft`` from the archive ``fgvc-aircraft-2013b.tar.gz``
as extracted: ``fgvc-aircraft-2013b/data/`` with ``images/<id>.jpg``, the class lists
``variants.txt`` / ``families.txt`` / ``manufacturers.txt`` and the split lists
``images_<level>_trainval.txt``, ``images_<level>_test.txt`` (``<id> <class name>``); the boxes
from ``images_box.txt`` (``<id> <xmin> <ymin> <xmax> <ymax>``) when it is there.
"""

from __future__ import annotations

from pathlib import Path

from torchvision.datasets import FGVCAircraft

from raccn.datamodules.finegrained import Expected, OfficialSplits
from raccn.datamodules.torchvision_finegrained import TorchvisionFineGrainedDataModule

CLASS_FILES = {"variant": "variants.txt", "family": "families.txt", "manufacturer": "manufacturers.txt"}


def read_aircraft_boxes(path: Path) -> dict[str, tuple[float, float, float, float]]:
    """``{image id: (x, y, w, h)}`` from ``images_box.txt``, the corners as written
    (``x = xmin``, ``w = xmax - xmin``); ``ValueError`` naming file and line if malformed."""
    boxes = {}
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            image_id, (x0, y0, x1, y1) = fields[0], (float(v) for v in fields[1:])
        except ValueError:
            raise ValueError(
                f"{path} line {line_no}: expected '<id> <xmin> <ymin> <xmax> <ymax>', got {line!r}."
            ) from None
        boxes[image_id] = (x0, y0, x1 - x0, y1 - y0)
    return boxes


class FGVCAircraftDataModule(TorchvisionFineGrainedDataModule):
    """FGVC-Aircraft: 100 variants (or 70 families, 30 manufacturers), ``trainval`` / ``test``.

    Class names as in the class list (``707-320``, ``A300B4``, ...). ``train_set.boxes`` /
    ``test_set.boxes`` are Tensor[N, 4] ``(x, y, w, h)`` from ``images_box.txt`` (corners as
    written), or ``None`` without that file. The photos keep the 20-pixel copyright banner at
    their bottom, as torchvision reads them.

    Args:
        data_dir (str): the folder holding ``fgvc-aircraft-2013b/``, or that folder.
        annotation_level (str): the classes: ``"variant"`` (100, the usual benchmark),
            ``"family"`` (70) or ``"manufacturer"`` (30).
        **kwargs: see :class:`~raccn.datamodules.torchvision_finegrained.
            TorchvisionFineGrainedDataModule` (``download``) and
            :class:`~raccn.datamodules.finegrained.FineGrainedDataModule`.
    """

    NAME = "FGVC-Aircraft"
    SOURCE = (
        "https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/ (fgvc-aircraft-2013b.tar.gz; "
        "extracting it gives the folder fgvc-aircraft-2013b/)"
    )
    BOX_SOURCE = "data/images_box.txt"
    DATASET = FGVCAircraft
    FOLDER = "fgvc-aircraft-2013b"
    URL = FGVCAircraft._URL

    def __init__(self, data_dir: str = "data", annotation_level: str = "variant", **kwargs) -> None:
        if annotation_level not in CLASS_FILES:
            raise ValueError(
                f"annotation_level={annotation_level!r} must be one of {tuple(CLASS_FILES)}."
            )
        super().__init__(data_dir=data_dir, **kwargs)
        self.annotation_level = annotation_level

    def expected(self) -> list[Expected]:
        data, level = self.root / "data", self.annotation_level
        return [
            Expected("images", (data / "images",), folder=True),
            Expected("classes", (data / CLASS_FILES[level],)),
            Expected("trainval", (data / f"images_{level}_trainval.txt",)),
            Expected("test", (data / f"images_{level}_test.txt",)),
        ]

    def _split(self, split: str) -> FGVCAircraft:
        self.require()
        try:
            return self.dataset(split, annotation_level=self.annotation_level)
        except (KeyError, ValueError) as e:  # a label that the class list lacks, a bad line
            path = self.root / "data" / f"images_{self.annotation_level}_{split}.txt"
            raise ValueError(
                f"{path}: {type(e).__name__}: {e}; every line must be '<image id> <class name>' "
                f"with a class of {path.parent / CLASS_FILES[self.annotation_level]} (one of "
                "the two is damaged or cut short, or they are of different versions; extract "
                "them again)."
            ) from None

    def read_class_names(self) -> list[str]:
        return list(self._split("test").classes)

    def read_records(self) -> OfficialSplits:
        box_file = self.root / "data" / "images_box.txt"
        boxes = read_aircraft_boxes(box_file) if box_file.is_file() else {}
        if self.boxes and box_file.is_file() and not boxes:
            raise ValueError(
                f"boxes=True, but {box_file} holds no boxes (empty or damaged); extract it again "
                "from fgvc-aircraft-2013b.tar.gz, or set --data.init_args.boxes false."
            )
        splits = []
        for split in ("trainval", "test"):
            records = self.records(self._split(split))
            splits.append([r._replace(box=boxes.get(r.path.stem)) for r in records])
        return OfficialSplits(train=splits[0], test=splits[1])

