"""Losses."""

from raccn.losses.ram_loss import RAMLoss, ram_loss
from raccn.losses.ranking import ranking_loss

__all__ = ["RAMLoss", "ram_loss", "ranking_loss"]
