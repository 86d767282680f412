"""Attention operators: pure functions on tensors, batched, differentiable by autograd."""

from raccn.ops.boxcar import boxcar_mask
from raccn.ops.components import largest_component_boxes
from raccn.ops.glimpse import glimpse
from raccn.ops.stn_zoom import stn_zoom
from raccn.ops.zoom import zoom

__all__ = ["boxcar_mask", "glimpse", "largest_component_boxes", "stn_zoom", "zoom"]
