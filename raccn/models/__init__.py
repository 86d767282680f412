"""Models (``nn.Module``s holding the math). Training procedures live in ``raccn.lit``."""

from raccn.models.ram import RAMOutput, RecurrentAttentionModel

__all__ = ["RAMOutput", "RecurrentAttentionModel"]
