"""Loggers: W&B that falls back to offline by itself."""

from raccn.loggers.wandb import WandbLogger, wandb_credentials_available

__all__ = ["WandbLogger", "wandb_credentials_available"]
