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

__all__ = ["draw_glimpse_path", "draw_zoom_chain", "grid", "loc_to_pixels", "scale_colour", "slot_colours",
           "to_pil"]

# Step colours: from blue (first glimpse) to red (last), readable on black and white.
_START, _END = (40, 120, 255), (255, 60, 40)


def _step_colour(t: int, steps: int) -> tuple[int, int, int]:
    a = t / max(steps - 1, 1)
    return tuple(round(s + a * (e - s)) for s, e in zip(_START, _END))


# Label-slot colours of DRAM's glimpses: slot 1, 2, ... (then again from the first).
_SLOT_COLOURS = ((40, 120, 255), (255, 60, 40), (40, 200, 60), (255, 170, 0), (200, 60, 255), (0, 210, 210))


def slot_colours(steps: int, per_slot: int) -> list[tuple[int, int, int]]:
    """Colours of ``steps`` glimpses taken ``per_slot`` per label slot (DRAM): the glimpses
    of slot s (steps ``s * per_slot .. (s + 1) * per_slot - 1``) share slot s's colour."""
    return [_SLOT_COLOURS[(t // per_slot) % len(_SLOT_COLOURS)] for t in range(steps)]


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
    colours: Sequence[tuple[int, int, int]] | None = None,
) -> Image.Image:
    """Draw a glimpse trajectory on an image.

    Args:
        image (Tensor[C, H, W]): the image, values in [0, 1].
        locations (Tensor[T, 2]): glimpse centres (x, y) in [-1, 1], in order.
        patch_size, scales, scale_factor: the glimpse sensor's geometry; for every step the
            nested squares of side ``patch_size * scale_factor**j`` are drawn.
        upscale: integer magnification of the picture.
        caption: text written under the image (e.g. prediction and target).
        colours: one RGB colour per step (e.g. :func:`slot_colours`); default: from blue
            (first step) to red (last).

    Returns:
        PIL RGB image: squares in the steps' colours, the step number
        at each centre, consecutive centres joined by a line, the caption below.
    """
    _, H, W = image.shape
    pil = to_pil(image, upscale)
    draw = ImageDraw.Draw(pil)  # drawing on the image itself clips squares at its border
    centres = (loc_to_pixels(locations.detach().float().cpu(), H, W) * upscale).tolist()
    steps = len(centres)
    if steps > 1:
        draw.line([tuple(c) for c in centres], fill=(255, 255, 0), width=1)
    if colours is not None and len(colours) != steps:
        raise ValueError(f"colours must give one colour per step ({steps}), got {len(colours)}")
    for t, (cx, cy) in enumerate(centres):
        colour = tuple(colours[t]) if colours is not None else _step_colour(t, steps)
        for j in range(scales):
            half = 0.5 * patch_size * scale_factor**j * upscale
            draw.rectangle([cx - half, cy - half, cx + half - 1, cy + half - 1], outline=colour, width=1)
        draw.text((cx + 2, cy + 1), str(t + 1), fill=colour)
    return _with_caption(pil, caption)


TRUE_BOX_COLOUR = (0, 255, 0)
# Scale colours of RA-CNN boxes: scale 2's box, scale 3's box, ...
_SCALE_COLOURS = ((255, 200, 0), (0, 220, 255), (255, 60, 200), (120, 255, 80))


def scale_colour(s: int) -> tuple[int, int, int]:
    """Colour of the box that makes scale ``s``'s input (s = 2, 3, ...)."""
    return _SCALE_COLOURS[(s - 2) % len(_SCALE_COLOURS)]


def _with_caption(pil: Image.Image, caption: str | None) -> Image.Image:
    if not caption:
        return pil
    lines = caption.split("\n")
    canvas = Image.new("RGB", (pil.width, pil.height + 12 * len(lines) + 2), (255, 255, 255))
    canvas.paste(pil, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(lines):
        draw.text((2, pil.height + 1 + 12 * i), line, fill=(0, 0, 0))
    return canvas


def draw_zoom_chain(
    image: Tensor,
    boxes: Tensor,
    crops: Sequence[Tensor] = (),
    upscale: int = 1,
    caption: str | None = None,
    pad: int = 4,
    true_box: Tensor | None = None,
) -> Image.Image:
    """Draw RA-CNN's attention: every scale's box on the full image, then the amplified crops.

    Args:
        image (Tensor[C, H, W]): the scale-1 input, values in [0, 1].
        boxes (Tensor[N-1, 3]): (tx, ty, tl) in the pixels of ``image`` (centre and half side)
            of the boxes that make scales 2..N's inputs (composed across scales, see
            ``raccn.ops.boxes.compose_squares``).
        crops (sequence of Tensor[C, S_s, S_s]): the amplified inputs of scales 2..N, drawn to
            the right of the image at the image's height (nearest-neighbour), each framed in its
            box's colour.
        upscale: integer magnification of the full image.
        caption: text under the picture (``\\n`` separates lines).
        true_box (Tensor[4], optional): the object's true box (x0, y0, x1, y1) in image pixels,
            drawn in green.

    Returns:
        PIL RGB image. A box's outline covers image pixels [tx - tl, tx + tl) (x) and
        [ty - tl, ty + tl) (y), times ``upscale``, in ``scale_colour(s)``.
    """
    pil = to_pil(image, upscale)
    draw = ImageDraw.Draw(pil)
    if true_box is not None:
        x0, y0, x1, y1 = (round(v * upscale) for v in true_box.detach().float().cpu().tolist())
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=TRUE_BOX_COLOUR, width=1)
    for s, (tx, ty, tl) in enumerate(boxes.detach().float().cpu().tolist(), start=2):
        x0, y0, x1, y1 = ((v * upscale) for v in (tx - tl, ty - tl, tx + tl, ty + tl))
        draw.rectangle([round(x0), round(y0), round(x1) - 1, round(y1) - 1], outline=scale_colour(s), width=2)
        draw.text((round(x0) + 3, round(y0) + 2), str(s), fill=scale_colour(s))
    side = pil.height
    sheet = Image.new("RGB", (pil.width + len(crops) * (side + pad), side), (255, 255, 255))
    sheet.paste(pil, (0, 0))
    for i, crop in enumerate(crops):
        c = to_pil(crop).resize((side, side), Image.NEAREST)
        ImageDraw.Draw(c).rectangle([0, 0, side - 1, side - 1], outline=scale_colour(i + 2), width=2)
        sheet.paste(c, (pil.width + pad + i * (side + pad), 0))
    return _with_caption(sheet, caption)


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
