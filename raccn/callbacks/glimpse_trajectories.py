"""RAM and DRAM glimpse trajectories: pictures and a per-step table, as PNG files and in W&B."""

from __future__ import annotations

import torch
from torch import Tensor

from raccn.callbacks.attention_pictures import AttentionPictureCallback, Rendered
from raccn.lit.sequence_accuracy import label_strings
from raccn.losses import dram_loss
from raccn.viz import draw_glimpse_path, loc_to_pixels, slot_colours

COLUMNS = ["image_id", "step", "x", "y", "x_px", "y_px", "log_prob", "baseline", "reward", "pred", "target"]
DRAM_COLUMNS = ["image_id", "slot", *COLUMNS[1:]]


class GlimpseTrajectoryWriter(AttentionPictureCallback):
    """Where a RAM or DRAM looked on K fixed validation (every ``every_n_epochs`` epochs) and test images.

    One picture per image (``raccn.viz.draw_glimpse_path``: the nested squares of each scale at
    every step, numbered, joined by a line; caption: predicted / true class) and a table with one
    row per (image, step) with columns ``image_id``, ``step`` (1..T), ``x``, ``y`` (glimpse centre
    in [-1, 1]), ``x_px``, ``y_px`` (in pixels), ``log_prob`` (log pi of the sampled location;
    empty for step 1, whose location is not sampled by the policy), ``baseline`` (likewise),
    ``reward`` (1 if the final prediction of the rollout is right, else 0: RAM's reward),
    ``pred`` (prediction after that glimpse) and ``target``. One stochastic rollout per image,
    as in training (fixed seed). W&B keys: ``val/glimpses``, ``val/glimpses_table`` (and ``test/``).
    Arguments: see ``AttentionPictureCallback``.

    DRAM (a net with ``glimpses_per_digit``; batches ``(images, targets Tensor[K, S], ...)``):
    each label slot's glimpses in its own colour (``raccn.viz.slot_colours``), caption ``read
    <number> / true <number>``; the table has a ``slot`` column (1..S) after ``image_id``,
    ``log_prob`` and ``baseline`` at every step (every DRAM location is sampled), ``reward`` as
    the module's loss rewards the rollout (``reward`` setting), ``pred`` and ``target`` the
    slot's label read and true label (digits as text, ``EOS`` for the end).
    """

    def __init__(self, num_images: int = 8, dirname: str = "glimpses", key: str = "glimpses",
                 every_n_epochs: int = 1, upscale: int = 4, seed: int = 0) -> None:
        super().__init__(num_images, dirname, key, every_n_epochs, upscale, seed)

    def render(self, pl_module, images: Tensor, targets: Tensor, extras: list[Tensor],
               to_display) -> Rendered:
        if hasattr(pl_module.net, "glimpses_per_digit"):
            return self.render_sequences(pl_module, images, targets, to_display)
        sensor = pl_module.net.glimpse_net
        out = pl_module.net(images)
        K, T = out.locations.shape[:2]
        preds = out.logits.argmax(-1)  # (K, T)
        reward = (preds[:, -1] == targets).float()  # (K,)
        pixels = loc_to_pixels(out.locations, *images.shape[-2:])  # (K, T, 2)
        pad = torch.full((K, 1), float("nan"), device=images.device)
        log_pi = torch.cat([pad, out.log_pi], 1)  # (K, T), step 1 has none
        baseline = torch.cat([pad, out.baselines], 1)
        columns = [out.locations[..., 0], out.locations[..., 1], pixels[..., 0], pixels[..., 1],
                   log_pi, baseline]
        values = torch.stack(columns, -1).cpu().tolist()  # (K, T, 6)
        preds_l, targets_l, reward_l = preds.cpu().tolist(), targets.cpu().tolist(), reward.cpu().tolist()
        display = to_display(images)
        rows, pictures, captions = [], [], []
        for i in range(K):
            for t in range(T):
                x, y, xp, yp, lp, b = values[i][t]
                rows.append([i, t + 1, x, y, xp, yp, None if t == 0 else lp, None if t == 0 else b,
                             reward_l[i], preds_l[i][t], targets_l[i]])
            caption = f"pred {preds_l[i][-1]} / true {targets_l[i]}"
            captions.append(caption)
            pictures.append(draw_glimpse_path(display[i], out.locations[i], sensor.patch_size, sensor.scales,
                                              sensor.scale_factor, self.upscale, caption=caption))
        return Rendered(pictures, captions, list(COLUMNS), rows)

    def render_sequences(self, pl_module, images: Tensor, targets: Tensor, to_display) -> Rendered:
        """DRAM's pictures and table (class docstring); targets (Tensor[K, S])."""
        net, sensor = pl_module.net, pl_module.net.glimpse_net
        out = net(images)
        K, T = out.locations.shape[:2]
        N, eos = net.glimpses_per_digit, net.eos_index
        preds = out.logits.argmax(-1)  # (K, S)
        reward = dram_loss(out, targets, reward=pl_module.hparams.get("reward", "sequence")).reward
        pixels = loc_to_pixels(out.locations, *images.shape[-2:])  # (K, T, 2)
        columns = [out.locations[..., 0], out.locations[..., 1], pixels[..., 0], pixels[..., 1],
                   out.log_pi, out.baselines]
        values = torch.stack(columns, -1).cpu().tolist()  # (K, T, 6)

        def name(k: int) -> str:
            return "EOS" if k == eos else str(k)

        preds_l, targets_l, reward_l = preds.cpu().tolist(), targets.cpu().tolist(), reward.cpu().tolist()
        read, true = label_strings(preds, eos), label_strings(targets, eos)
        colours = slot_colours(T, N)
        display = to_display(images)
        rows, pictures, captions = [], [], []
        for i in range(K):
            for t in range(T):
                s = t // N
                rows.append([i, s + 1, t + 1, *values[i][t], reward_l[i], name(preds_l[i][s]),
                             name(targets_l[i][s])])
            caption = f"read {read[i] or '-'} / true {true[i] or '-'}"
            captions.append(caption)
            pictures.append(draw_glimpse_path(display[i], out.locations[i], sensor.patch_size, sensor.scales,
                                              sensor.scale_factor, self.upscale, caption=caption,
                                              colours=colours))
        return Rendered(pictures, captions, list(DRAM_COLUMNS), rows)
