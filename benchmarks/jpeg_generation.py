"""A second JPEG generation of an image class-folder tree: how much accuracy one more lossy pass costs.

The mirror's CIFAR-10 is JPEG (quality 75, 4:2:0 chroma) while the fast-training references (airbench94,
ResNet-9) report on the lossless arrays, and no lossless copy can be had offline. This script makes the
nearest controlled experiment: every image padded by reflection (`--shift` pixels, so the 8x8 JPEG blocks
no longer line up with the first encoding's and the pass loses about as much as a first one would),
encoded again with PIL at `--quality` and `--subsampling` (2 = 4:2:0, as the mirror), decoded, cropped back
and stored losslessly (PNG) in the same tree layout. Training the same recipe on both trees, each tested
on its own generation, shows what one JPEG pass costs the recipe (benchmarks/RESULTS.md, issue 15):

    .venv/bin/python -m benchmarks.jpeg_generation --source data/cifar10-jpg/cifar10 --out /tmp/gen2/cifar10
    .venv/bin/python -m pipeline train cifar10_fast --set dataset.mirror_dir=/tmp/gen2 \
        --set dataset.data_dir=/tmp/gen2-data

Prints the number of images, the mean absolute change per pixel value (0-255 levels) and the PSNR (dB)
between the two generations.
"""

from __future__ import annotations

import argparse
import io
import math
from pathlib import Path

import numpy as np
from PIL import Image

SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def recompress(image: np.ndarray, *, quality: int = 75, subsampling: int = 2, shift: int = 4) -> np.ndarray:
    """One more JPEG pass over uint8 [H, W, 3] `image`: reflect-pad by `shift` pixels (0 keeps the block
    grid), encode (PIL, `quality` 1-95, `subsampling` 0 = 4:4:4, 1 = 4:2:2, 2 = 4:2:0), decode, crop back.
    Returns uint8 [H, W, 3]. Raises ValueError for a shift of the image's size or more (reflect padding)."""
    height, width = image.shape[:2]
    if shift >= min(height, width):
        raise ValueError(f"shift must be below the image size {height}x{width}. Received: shift={shift}")
    padded = np.pad(image, ((shift, shift), (shift, shift), (0, 0)), mode="reflect") if shift else image
    buffer = io.BytesIO()
    Image.fromarray(padded).save(buffer, "JPEG", quality=quality, subsampling=subsampling)
    buffer.seek(0)
    decoded = np.asarray(Image.open(buffer).convert("RGB"))
    return decoded[shift : shift + height, shift : shift + width]


def recompress_tree(source: Path, out: Path, **options) -> dict:
    """`recompress` every image under `source` into the same relative path under `out` (as .png).
    Returns {"images": N, "mean_abs_change": levels, "psnr_db": dB} over all pixel values.
    Raises FileNotFoundError when `source` holds no image."""
    paths = sorted(path for path in Path(source).rglob("*") if path.suffix.lower() in SUFFIXES)
    if not paths:
        raise FileNotFoundError(f"no images under {source}")
    abs_sum = squared_sum = values = 0
    for path in paths:
        with Image.open(path) as opened:
            image = np.asarray(opened.convert("RGB"))
        again = recompress(image, **options)
        difference = again.astype(np.int64) - image
        abs_sum += np.abs(difference).sum()
        squared_sum += (difference**2).sum()
        values += difference.size
        target = Path(out) / path.relative_to(source).with_suffix(".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(again).save(target)
    mse = squared_sum / values
    return {
        "images": len(paths),
        "mean_abs_change": abs_sum / values,
        "psnr_db": math.inf if mse == 0 else 10 * math.log10(255**2 / mse),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source", type=Path, required=True, help="a class-folder tree (e.g. cifar10/{train,test}/...)"
    )
    parser.add_argument("--out", type=Path, required=True, help="where the second generation goes (PNG files)")
    parser.add_argument("--quality", type=int, default=75)
    parser.add_argument("--subsampling", type=int, default=2, choices=[0, 1, 2])
    parser.add_argument("--shift", type=int, default=4, help="pixels of reflect padding before encoding")
    args = parser.parse_args(argv)
    found = recompress_tree(args.source, args.out, quality=args.quality, subsampling=args.subsampling, shift=args.shift)
    print(
        f"{found['images']:,} images -> {args.out}: mean absolute change {found['mean_abs_change']:.2f} "
        f"levels, PSNR {found['psnr_db']:.1f} dB (quality {args.quality}, subsampling {args.subsampling}, "
        f"shift {args.shift})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
