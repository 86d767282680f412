"""Write the embedded digits as a folder of PNG class folders, to check the own-images path
(``ImageFolderDataModule``) against the built-in module on the same images.

    python benchmarks/export_digit_folder.py <out folder> [--upscale 3] [--canvas 24] [--distractors 0]

Builds ``ClutteredDigitsDataModule`` with that geometry and writes each split's canvases as
8-bit grey PNGs, ``<out>/{train,val,test}/<digit>/<index>.png`` (the index within the split).
Validation and test canvases are fixed by the module; training canvases are drawn once, so they
equal the module's only when nothing moves (``--canvas`` = 8 x ``--upscale``, no distractors,
the default). Prints one JSON line with the counts.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from PIL import Image

from raccn.datamodules import ClutteredDigitsDataModule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--upscale", type=int, default=3)
    parser.add_argument("--canvas", type=int, default=24)
    parser.add_argument("--distractors", type=int, default=0)
    parser.add_argument("--distractor-size", type=int, default=6)
    args = parser.parse_args()
    dm = ClutteredDigitsDataModule(upscale=args.upscale, canvas_size=args.canvas,
                                   num_distractors=args.distractors,
                                   distractor_size=args.distractor_size)
    torch.manual_seed(0)
    dm.setup("fit")
    counts = {}
    for split, dataset in (("train", dm.train_set), ("val", dm.val_set), ("test", dm.test_set)):
        batch = dataset.__getitems__(list(range(len(dataset))))
        pixels = (batch.images[:, 0] * 255).round().clamp(0, 255).to(torch.uint8).numpy()
        for i, (image, label) in enumerate(zip(pixels, batch.labels.tolist())):
            path = args.out / split / str(label) / f"{i:04d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(path)  # uint8 (H, W): mode "L"
        counts[split] = len(pixels)
    geometry = {k: v for k, v in vars(args).items() if k != "out"}
    print(json.dumps({"out": str(args.out), **geometry, **counts}))


if __name__ == "__main__":
    main()
