"""LightningModules: training procedures (losses, optimisers, metrics)."""

from raccn.lit.agcnn_module import AGCNNLitModule
from raccn.lit.dram_module import DRAMLitModule
from raccn.lit.phase_schedule import PhaseSchedule
from raccn.lit.racnn_module import RACNNLitModule
from raccn.lit.ram_module import RAMLitModule
from raccn.lit.recipe_extras import RecipeExtras

__all__ = ["AGCNNLitModule", "DRAMLitModule", "PhaseSchedule", "RACNNLitModule", "RAMLitModule", "RecipeExtras"]
