"""RA-CNN zoom chains: APN boxes on the image plus the amplified crops, as PNG files and in W&B."""

from __future__ import annotations

import torch
from torch import Tensor

from raccn.callbacks.attention_pictures import AttentionPictureCallback, Rendered
from raccn.viz import draw_zoom_chain

COLUMNS = ["image_id", "scale", "tx", "ty", "tl", "p_true"]


class ZoomChainWriter(AttentionPictureCallback):
    """Where RA-CNN zoomed on K fixed validation (every ``every_n_epochs`` epochs) and test images.

    One picture per image (``raccn.viz.draw_zoom_chain``: the box of every scale on the full
    image, the amplified crops beside it, the true box in green when the data carry one; caption:
    true and predicted (fused) class and each scale's probability of the true class) and a table
    with one row per (image, scale): ``image_id``, ``scale`` (1..N; scale 1 is the whole image),
    ``tx``, ``ty``, ``tl`` (the box making that scale's input, centre and half side in scale-1
    image pixels) and ``p_true`` (that scale's softmax probability of the true class).
    W&B keys: ``val/zoom_chains``, ``val/zoom_chains_table`` (and ``test/``).
    Arguments: see ``AttentionPictureCallback`` (``upscale`` defaults to 2 here).
    """

    def __init__(self, num_images: int = 8, dirname: str = "zoom_chains", key: str = "zoom_chains",
                 every_n_epochs: int = 1, upscale: int = 2, seed: int = 0) -> None:
        super().__init__(num_images, dirname, key, every_n_epochs, upscale, seed)

    def render(self, pl_module, images: Tensor, targets: Tensor, extras: list[Tensor],
               to_display) -> Rendered:
        out = pl_module.net(images)
        K, side = images.shape[0], images.shape[-1]
        whole = torch.tensor([[side / 2, side / 2, side / 2]], device=images.device).expand(K, 3)
        boxes = torch.stack([whole, *pl_module.image_boxes(out)], 1)  # (K, N, 3)
        p_true = torch.stack([z.softmax(-1).gather(1, targets[:, None])[:, 0] for z in out.logits], 1)
        pred = out.fused_logits.argmax(-1).cpu().tolist()
        true_boxes = extras[0].cpu() if extras and extras[0].shape[-1] == 4 else None
        display, crops = to_display(images), [to_display(x) for x in out.inputs[1:]]
        boxes_l, p_l, targets_l = boxes.cpu().tolist(), p_true.cpu().tolist(), targets.cpu().tolist()
        rows, pictures, captions = [], [], []
        for i in range(K):
            for s in range(boxes.shape[1]):
                rows.append([i, s + 1, *boxes_l[i][s], p_l[i][s]])
            probs = " ".join(f"s{s + 1} {p:.2f}" for s, p in enumerate(p_l[i]))
            caption = f"true {targets_l[i]} / pred {pred[i]}\np(true): {probs}"
            captions.append(caption)
            pictures.append(draw_zoom_chain(
                display[i], boxes[i, 1:], [c[i] for c in crops], self.upscale, caption,
                true_box=None if true_boxes is None else true_boxes[i],
            ))
        return Rendered(pictures, captions, list(COLUMNS), rows)
