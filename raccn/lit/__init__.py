"""LightningModules: training procedures (losses, optimisers, metrics)."""

from raccn.lit.racnn_module import RACNNLitModule
from raccn.lit.ram_module import RAMLitModule

__all__ = ["RACNNLitModule", "RAMLitModule"]
