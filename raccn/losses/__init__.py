"""Losses."""

from raccn.losses.ram_loss import RAMLoss, ram_loss

__all__ = ["RAMLoss", "ram_loss"]
