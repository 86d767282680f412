"""Drawing of attention: glimpse trajectories (RAM/DRAM) on images, as PIL pictures.

One module for every model family; callbacks turn these pictures into PNG files (and W&B
images). Coordinates follow ``raccn.ops.glimpse``: (x, y) in [-1, 1], (-1, -1) the top-left
corner, mapped to pixels by ((x + 1) / 2 * W, (y + 1) / 2 * H).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image, ImageDraw
from torch import Tensor

__all__ = ["draw_glimpse_path", "grid", "loc_to_pixels", "to_pil"]

# Step colours: from blue (first glimpse) to red (last), readable on black and white.
_START, _END = (40, 120, 255), (255, 60, 40)


def _step_colour(t: int, steps: int) -> tuple[int, int, int]:
    a = t / max(steps - 1, 1)
    return tuple(round(s + a * (e - s)) for s, e in zip(_START, _END))


def loc_to_pixels(loc: Tensor, height: int, width: int) -> Tensor:
    """loc (Tensor[..., 2]) = (x, y) in [-1, 1] -> Tensor[..., 2] = (x, y) in pixel units."""
    scale = torch.tensor([width, height], dtype=loc.dtype, device=loc.device)
    return (loc + 1.0) * 0.5 * scale


def to_pil(image: Tensor, upscale: int = 1) -> Image.Image:
    """image (Tensor[C, H, W], values in [0, 1], C in {1, 3}) -> RGB PIL image, upscaled by an
    integer factor with nearest-neighbour so pixels stay visible."""
    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"image must be Tensor[C, H, W] with C in (1, 3), got {tuple(image.shape)}")
    array = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    if array.shape[0] == 1:
        array = array.expand(3, -1, -1)
    pil = Image.fromarray(array.permute(1, 2, 0).contiguous().numpy(), mode="RGB")
    if upscale > 1:
        pil = pil.resize((pil.width * upscale, pil.height * upscale), Image.NEAREST)
    return pil


def draw_glimpse_path(
    image: Tensor,
    locations: Tensor,
    patch_size: int,
    scales: int = 1,
    scale_factor: float = 2.0,
    upscale: int = 4,
    caption: str | None = None,
) -> Image.Image:
    """Draw a glimpse trajectory on an image.

    Args:
        image (Tensor[C, H, W]): the image, values in [0, 1].
        locations (Tensor[T, 2]): glimpse centres (x, y) in [-1, 1], in order.
        patch_size, scales, scale_factor: the glimpse sensor's geometry; for every step the
            nested squares of side ``patch_size * scale_factor**j`` are drawn.
        upscale: integer magnification of the picture.
        caption: text written under the image (e.g. prediction and target).

    Returns:
        PIL RGB image: squares coloured from blue (first step) to red (last), the step number
        at each centre, consecutive centres joined by a line, the caption below.
    """
    _, H, W = image.shape
    pil = to_pil(image, upscale)
    draw = ImageDraw.Draw(pil)  # drawing on the image itself clips squares at its border
    centres = (loc_to_pixels(locations.detach().float().cpu(), H, W) * upscale).tolist()
    steps = len(centres)
    if steps > 1:
        draw.line([tuple(c) for c in centres], fill=(255, 255, 0), width=1)
    for t, (cx, cy) in enumerate(centres):
        colour = _step_colour(t, steps)
        for j in range(scales):
            half = 0.5 * patch_size * scale_factor**j * upscale
            draw.rectangle([cx - half, cy - half, cx + half - 1, cy + half - 1], outline=colour, width=1)
        draw.text((cx + 2, cy + 1), str(t + 1), fill=colour)
    if not caption:
        return pil
    canvas = Image.new("RGB", (pil.width, pil.height + 14), (255, 255, 255))
    canvas.paste(pil, (0, 0))
    ImageDraw.Draw(canvas).text((2, pil.height + 1), caption, fill=(0, 0, 0))
    return canvas


def grid(pictures: Sequence[Image.Image], columns: int = 4, pad: int = 4) -> Image.Image:
    """Tile PIL pictures (any sizes) into one picture, ``columns`` per row."""
    if not pictures:
        raise ValueError("grid needs at least one picture")
    w = max(p.width for p in pictures)
    h = max(p.height for p in pictures)
    rows = (len(pictures) + columns - 1) // columns
    cols = min(columns, len(pictures))
    sheet = Image.new("RGB", (cols * (w + pad) + pad, rows * (h + pad) + pad), (255, 255, 255))
    for i, p in enumerate(pictures):
        sheet.paste(p, (pad + (i % columns) * (w + pad), pad + (i // columns) * (h + pad)))
    return sheet
