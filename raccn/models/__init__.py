"""Models (``nn.Module``s holding the math). Training procedures live in ``raccn.lit``."""

from raccn.models.agcnn import AGCNN, AGCNNOutput
from raccn.models.dram import DRAM, DeepRecurrentAttentionModel, DRAMOutput
from raccn.models.racnn import RACNN, RACNNOutput
from raccn.models.ram import RAMOutput, RecurrentAttentionModel
from raccn.models.sequence_cnn import SequenceCNN

__all__ = [
    "AGCNN",
    "DRAM",
    "RACNN",
    "AGCNNOutput",
    "DRAMOutput",
    "DeepRecurrentAttentionModel",
    "RACNNOutput",
    "RAMOutput",
    "RecurrentAttentionModel",
    "SequenceCNN",
]
