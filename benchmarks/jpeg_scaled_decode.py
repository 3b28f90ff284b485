"""Decoding a phone-size JPEG at full size versus with DCT scaling (pipeline/data/decode.py), one process each.

Writes a 4000x3000 JPEG (smooth synthetic photo, quality 90, EXIF Orientation=6 as phones store it),
then, in a fresh process per mode so peak RSS is that mode's own, decodes it `--repeats`
times and prints the median time, the decoded shape and bytes, and peak RSS (VmHWM) before/after decoding:
  full:       decode.decode_image (what the pipeline decoded before issue 13)
  ratio8:     decode.decode_image_at_least(min 224x224): libjpeg decodes at 1/8 scale
  working224: decode.decode_working_image(image_size 224x224, crop square margin 8): 1/8 + area resize

    .venv/bin/python benchmarks/jpeg_scaled_decode.py [--repeats 20]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MODES = ("full", "ratio8", "working224")


def _peak_mib() -> float:
    """This process's peak RSS: VmHWM, reset by exec (ru_maxrss keeps the parent's peak across fork+exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _measure(path: str, mode: str, repeats: int) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, str(PROJECT_ROOT))
    import tensorflow as tf

    from pipeline.data import decode

    data = tf.constant(Path(path).read_bytes())
    calls = {
        "full": lambda: decode.decode_image(data, channels=3),
        "ratio8": lambda: decode.decode_image_at_least(data, min_height=224, min_width=224, channels=3),
        "working224": lambda: decode.decode_working_image(
            data, image_size=(224, 224), crop="square", margin=8, channels=3
        )[0],
    }
    call = tf.function(calls[mode])
    call.get_concrete_function()  # trace outside the timing
    before = _peak_mib()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        image = call().numpy()
        times.append(time.perf_counter() - start)
    return {
        "mode": mode,
        "median_ms": 1000 * statistics.median(times),
        "shape": list(image.shape),
        "decoded_mib": image.nbytes / 2**20,
        "peak_rss_before_mib": before,
        "peak_rss_after_mib": _peak_mib(),
    }


def _write_photo(path: Path) -> None:
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:3000, 0:4000] / 4000.0
    rng = np.random.default_rng(0)
    channels = [127 + 90 * np.sin(9 * x + 6 * y + p) + rng.normal(0, 12, x.shape) for p in rng.uniform(0, 6, 3)]
    image = Image.fromarray(np.clip(np.stack(channels, -1), 0, 255).astype(np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90, exif=exif.tobytes())
    path.write_bytes(buffer.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--child", nargs=2, metavar=("PATH", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_measure(args.child[0], args.child[1], args.repeats)))
        return
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "phone.jpg"
        _write_photo(path)
        print(f"{path.name}: 4000x3000 stored, EXIF orientation 6, {path.stat().st_size / 2**20:.1f} MiB on disk")
        print(
            f"{'mode':<11} {'median ms':>9} {'decoded (HxWxC)':>16} {'MiB':>7} {'peak RSS before':>15} "
            f"{'after (MiB)':>11}"
        )
        for mode in MODES:
            output = subprocess.run(
                [sys.executable, __file__, "--child", str(path), mode, "--repeats", str(args.repeats)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            row = json.loads(output.strip().splitlines()[-1])
            shape = "x".join(map(str, row["shape"]))
            print(
                f"{mode:<11} {row['median_ms']:>9.1f} {shape:>16} {row['decoded_mib']:>7.2f} "
                f"{row['peak_rss_before_mib']:>15.0f} {row['peak_rss_after_mib']:>11.0f}"
            )


if __name__ == "__main__":
    main()
