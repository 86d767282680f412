"""Losses."""

from raccn.losses.apn_pretrain import pretrain_squares
from raccn.losses.dram_loss import DRAMLoss, dram_loss
from raccn.losses.ram_loss import RAMLoss, ram_loss
from raccn.losses.ranking import ranking_loss

__all__ = ["DRAMLoss", "RAMLoss", "dram_loss", "pretrain_squares", "ram_loss", "ranking_loss"]
