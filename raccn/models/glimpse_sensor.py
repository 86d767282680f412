"""The sensor every glimpse network shares: the retina ρ(x, l) and its once-per-batch part.

    ρ(x, l) = ``scales`` square patches of ``patch_size`` pixels centred at l, patch j covering
              ``patch_size * scale_factor**j`` pixels, each area-averaged to ``patch_size``
              (``raccn.ops.glimpse``)

RAM's and DRAM's glimpse networks differ only in how they turn ρ(x, l) and l into the glimpse
feature, so they subclass ``GlimpseSensor`` and write that fusion in ``fuse``.
"""

from __future__ import annotations

from torch import Tensor, nn

from raccn.ops.glimpse import GlimpseSource, check_glimpse_args, glimpse, prepare_glimpses


class GlimpseSensor(nn.Module):
    """Glimpse sensor followed by a what/where fusion that subclasses define in ``fuse``.

    Args:
        patch_size: side of each glimpse patch in pixels.
        scales: number of patches per glimpse.
        scale_factor: patch ``j`` covers ``patch_size * scale_factor**j`` pixels.
    """

    def __init__(self, patch_size: int, scales: int, scale_factor: float) -> None:
        super().__init__()
        check_glimpse_args(patch_size, scales, scale_factor)
        self.patch_size, self.scales, self.scale_factor = patch_size, scales, scale_factor

    def prepare(self, images: Tensor) -> GlimpseSource:
        """``prepare_glimpses`` for this sensor: the location-independent part of every glimpse of ``images``."""
        return prepare_glimpses(images, self.patch_size, self.scales, self.scale_factor)

    def forward(self, images: Tensor, loc: Tensor, source: GlimpseSource | None = None) -> Tensor:
        """
        Args:
            images (Tensor[B, C, H, W]): images.
            loc (Tensor[B, 2]): glimpse centres (x, y) in [-1, 1] (see ``raccn.ops.glimpse``).
            source (GlimpseSource, optional): ``self.prepare(images)``, made once by a caller
                that takes several glimpses of the same images (made here when None).

        Returns:
            Tensor[B, D]: the glimpse feature, ``self.fuse(ρ(x, l), l)``.
        """
        return self.fuse(glimpse(images, loc, self.patch_size, self.scales, self.scale_factor, source), loc)

    def fuse(self, rho: Tensor, loc: Tensor) -> Tensor:
        """The what/where fusion.

        Args:
            rho (Tensor[B, scales, C, patch_size, patch_size]): the glimpse ρ(x, l).
            loc (Tensor[B, 2]): its centre l.

        Returns:
            Tensor[B, D]: the glimpse feature.
        """
        raise NotImplementedError
