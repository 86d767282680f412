"""LightningModules: training procedures (losses, optimisers, metrics)."""

from raccn.lit.ram_module import RAMLitModule

__all__ = ["RAMLitModule"]

from raccn.lit.racnn_module import RACNNLitModule  # noqa: E402

__all__ += ["RACNNLitModule"]
