"""Attention operators: pure functions on tensors, batched, differentiable by autograd."""

from raccn.ops.glimpse import glimpse

__all__ = ["glimpse"]
