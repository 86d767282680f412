"""Lightning callbacks: attention pictures (PNG + W&B), the test report, prediction files, and the
fault tolerance of training (exact resume, interrupts, non-finite steps), rank 0's buffers
under DDP."""

from raccn.callbacks.attention_pictures import AttentionPictureCallback, Rendered
from raccn.callbacks.buffer_sync import BufferSync
from raccn.callbacks.eval_report import EvalReportWriter
from raccn.callbacks.glimpse_trajectories import GlimpseTrajectoryWriter
from raccn.callbacks.interrupt_checkpoint import InterruptCheckpoint
from raccn.callbacks.non_finite_guard import NonFiniteGuard, NonFiniteLossError
from raccn.callbacks.predictions import PredictionWriter
from raccn.callbacks.resume_state import ResumeState
from raccn.callbacks.wall_clock import WallClock
from raccn.callbacks.zoom_chains import ZoomChainWriter

__all__ = [
    "AttentionPictureCallback",
    "BufferSync",
    "EvalReportWriter",
    "GlimpseTrajectoryWriter",
    "InterruptCheckpoint",
    "NonFiniteGuard",
    "NonFiniteLossError",
    "PredictionWriter",
    "Rendered",
    "ResumeState",
    "WallClock",
    "ZoomChainWriter",
]
