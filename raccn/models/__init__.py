"""Models (``nn.Module``s holding the math). Training procedures live in ``raccn.lit``."""

from raccn.models.ram import RAMOutput, RecurrentAttentionModel

__all__ = ["RAMOutput", "RecurrentAttentionModel"]

from raccn.models.racnn import RACNN, RACNNOutput  # noqa: E402

__all__ += ["RACNN", "RACNNOutput"]
