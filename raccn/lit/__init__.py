"""LightningModules: training procedures (losses, optimisers, metrics)."""

from raccn.lit.ram_module import RAMLitModule

__all__ = ["RAMLitModule"]
