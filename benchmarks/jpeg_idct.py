"""Decode time of TensorFlow's fast JPEG IDCT (its default) against the accurate one the pipeline uses.

pipeline/data/decode.py asks libjpeg for the accurate inverse DCT (Pillow's pixels exactly). This measures what
that costs on a phone-size photo (4000x3000, quality 90, synthetic but smooth like a photo), at full size
and at the 1/8 DCT scale the training pipeline uses for large photos; median of `--repeats` decodes each:

    .venv/bin/python -m benchmarks.jpeg_idct [--repeats 9] [--size 4000x3000]
"""

from __future__ import annotations

import argparse
import io
import statistics
import time

import numpy as np


def photo_jpeg(width: int, height: int, quality: int = 90) -> bytes:
    """A smooth synthetic photo (random 1/8-size image enlarged bicubically), JPEG-encoded."""
    from PIL import Image

    small = np.random.default_rng(0).integers(0, 256, (max(height // 8, 1), max(width // 8, 1), 3), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(small).resize((width, height), Image.BICUBIC).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def measure(data: bytes, *, repeats: int) -> list[dict]:
    """[{method, ratio, median_ms}] for the fast ("") and accurate IDCT at DCT scale 1 and 8."""
    import tensorflow as tf

    encoded = tf.constant(data)
    rows = []
    for ratio in (1, 8):
        for method in ("", "INTEGER_ACCURATE"):
            tf.io.decode_jpeg(encoded, ratio=ratio, dct_method=method)  # warm-up
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                tf.io.decode_jpeg(encoded, ratio=ratio, dct_method=method)
                times.append((time.perf_counter() - start) * 1000)
            rows.append(
                {"method": method or "fast (TF default)", "ratio": ratio, "median_ms": statistics.median(times)}
            )
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--size", default="4000x3000", help="WIDTHxHEIGHT of the synthetic photo")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    print(f"| IDCT | DCT scale | median decode ms ({args.size}, {args.repeats} repeats) |\n| --- | --- | --- |")
    for row in measure(photo_jpeg(width, height), repeats=args.repeats):
        print(f"| {row['method']} | 1/{row['ratio']} | {row['median_ms']:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
