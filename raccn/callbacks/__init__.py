"""Lightning callbacks (pictures, reports)."""

from raccn.callbacks.glimpse_trajectories import GlimpseTrajectoryWriter

__all__ = ["GlimpseTrajectoryWriter"]
