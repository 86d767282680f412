"""Pictures of where the attention looks."""

from raccn.viz.draw import draw_glimpse_path, grid, loc_to_pixels, to_pil

__all__ = ["draw_glimpse_path", "grid", "loc_to_pixels", "to_pil"]
