"""What the embedded proxy's RA-CNN recipe adds to the paper's (``RACNNLitModule``'s ``extras``).

The proxy trains small trunks from scratch on CPU, where the paper fine-tunes ImageNet VGG-19s;
these settings made its attention work there (docs/RESULTS.md). None is in the paper, and each
defaults to off, so that a config without ``extras`` runs the paper's recipe and an ablation
turns one of them off with one value.
"""

from __future__ import annotations

from dataclasses import dataclass

from raccn.models.racnn import TRUNK_MAPS


@dataclass(frozen=True)
class RecipeExtras:
    """Additions to the paper's recipe, from the embedded proxy (trunks trained from scratch);
    the defaults add none.

    Args:
        warmup_steps: classification-only steps before APN pre-training (a trunk from scratch
            has no meaningful responses to pre-train on yet).
        warmup_boxes: the boxes cropping the finer scales during warm-up: ``"apn"`` (the
            untrained APN's centred box) or ``"random"`` (uniformly random squares within the
            APN's bounds), so the finer scales learn to classify any crop that holds the object.
        box_jitter: in classification phases, crop with the APN's box moved by Gaussian noise of
            this std (fraction of the input side; centre and side), kept within the APN's bounds,
            so the finer classifiers stay robust to the boxes' later moves (0: none).
        reanchor_steps: pre-training steps between every classification and ranking phase, which
            move the APNs back onto the responses of the trunks the classification phase changed.
        pretrain_target: centre of the pre-training square: ``"peak"`` (paper), ``"centroid"``
            (of the map's excess over its minimum) or ``"cam"`` (of the true class's activation
            map on the last features, positive part; ignores responses that do not vote for it).
        pretrain_power: exponent p of the centroid's weights (> 0; larger leans to the peak).
        pretrain_features: the map ``"peak"`` and ``"centroid"`` read: null (the last map, which
            the APN reads; paper), ``"stride16"`` or ``"stride8"`` (finer, more precise).
    """

    warmup_steps: int = 0
    warmup_boxes: str = "apn"
    box_jitter: float = 0.0
    reanchor_steps: int = 0
    pretrain_target: str = "peak"
    pretrain_power: float = 2.0
    pretrain_features: str | None = None

    def __post_init__(self) -> None:
        if self.pretrain_features == "None":  # a command-line null here arrives so (jsonargparse)
            object.__setattr__(self, "pretrain_features", None)
        if self.warmup_boxes not in ("apn", "random"):
            raise ValueError(f"warmup_boxes must be 'apn' or 'random', got {self.warmup_boxes!r}")
        if not 0.0 <= self.box_jitter < 1.0:
            raise ValueError(f"box_jitter must be in [0, 1), got {self.box_jitter!r}")
        if self.pretrain_target not in ("peak", "centroid", "cam"):
            raise ValueError(f"pretrain_target must be 'peak', 'centroid' or 'cam', got {self.pretrain_target!r}")
        if not self.pretrain_power > 0:
            raise ValueError(f"pretrain_power must be > 0 (2: squared weights), got {self.pretrain_power!r}")
        if self.pretrain_features not in (None, *TRUNK_MAPS):
            raise ValueError(
                f"pretrain_features must be null or one of {tuple(TRUNK_MAPS)}, got {self.pretrain_features!r}"
            )


NO_EXTRAS = RecipeExtras()  #: the paper's recipe
