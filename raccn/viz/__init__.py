"""Pictures of where the attention looks."""

from raccn.viz.draw import (
    draw_glimpse_path,
    draw_zoom_chain,
    grid,
    loc_to_pixels,
    scale_colour,
    slot_colours,
    to_pil,
)

__all__ = ["draw_glimpse_path", "draw_zoom_chain", "grid", "loc_to_pixels", "scale_colour", "slot_colours", "to_pil"]
