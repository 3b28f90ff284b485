"""`python -m pipeline data stats ROOT [--image-size H W] [--crop MODE]`: class counts, per-channel mean/std,
mean image.

Images are decoded and transformed exactly as training's evaluation path does (`decode.decode_image`: EXIF
orientation, the accurate JPEG IDCT; then the `EvalTransform`: channels, crop, resize), so the mean/std it
offers as `input.statistics` equal what `input.normalization: standardize` computes on the same images.
Streaming: memory does not grow with the dataset. Outputs are written atomically.
"""

from __future__ import annotations

import collections
import concurrent.futures
import os
from pathlib import Path

from pipeline.config.choices import CROP_MODES, RESIZE_METHODS
from pipeline.core import fileio
from pipeline.core.fileio import atomic_write, atomic_write_json
from pipeline.data import image_files, image_header
from pipeline.data.transform import EvalTransform
from pipeline.tools import common

HELP = "class counts, per-channel mean/std and the mean image"


def add_arguments(parser) -> None:
    """Adds ROOT, --image-size, --channels, --min-size and --out to the `data stats` sub-parser."""
    parser.add_argument("root", type=Path, metavar="ROOT")
    parser.add_argument("--image-size", type=int, nargs=2, default=[64, 64], metavar=("H", "W"))
    parser.add_argument("--channels", type=int, choices=[1, 3], default=3)
    parser.add_argument(
        "--crop", choices=CROP_MODES, default="none", metavar="MODE", help="input.crop.mode of the experiment"
    )
    parser.add_argument("--margin", type=int, default=0, metavar="N", help="input.crop.margin (square crop)")
    parser.add_argument(
        "--resize-method", choices=RESIZE_METHODS, default="bilinear", help="input.resize_method of the experiment"
    )
    parser.add_argument(
        "--min-size",
        type=int,
        default=8,
        metavar="N",
        help="skip images with a side shorter than N pixels (as `check` does)",
    )
    parser.add_argument("--out", type=Path, metavar="DIR", help="default ROOT/../<rootname>-stats/")


def _stats_files(root: Path) -> tuple[list[Path], list[str | None], list[str] | None]:
    """(files, class name of each or None, class names or None) from class folders, split folders
    (train/<class>/..., classes merged over the splits) or, without folders, every file."""
    splits = common.split_folders(root)
    if splits:
        files, names, classes = [], [], set()
        for directory in splits.values():
            found, labels, class_names = image_files.list_class_folders(directory)
            files += found
            names += [class_names[label] for label in labels]
            classes.update(class_names)
        return files, names, sorted(classes)
    files, labels, class_names = image_files.list_class_folders(root)
    if class_names:
        return files, [class_names[label] for label in labels], class_names
    files = [p for p in image_files.find_files(root) if not (p.parent == root and p.name in common.LIST_FILES)]
    return files, [None] * len(files), None


def _decoder(transform: EvalTransform):
    """A tf.function: encoded bytes (tf.string scalar) -> (decoded [height, width] int32, model input
    float32 [H, W, C] in 0..255), through the evaluation path's decode and transform (input_pipeline)."""
    import tensorflow as tf

    from pipeline.data import decode

    @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
    def prepare(encoded):
        image = decode.decode_image(encoded, channels=transform.channels)
        return tf.shape(image)[:2], transform(image)

    return prepare


def _load_transformed(path: Path, prepare, min_size: int):
    """float32 [H, W, C] in 0..255 (`prepare`'s model input), or None when the file is not a good image."""
    import tensorflow as tf

    if common.special_file(path):
        return None
    try:
        with open(path, "rb") as handle:
            data = handle.read()
        if image_header.too_many_pixels(data[: image_header.HEADER_BYTES]):
            return None  # a decompression bomb: never decoded; check_image gives the reason
        size, image = prepare(tf.constant(data))
    except (OSError, tf.errors.InvalidArgumentError, tf.errors.UnknownError):
        return None
    if min(size.numpy().tolist()) < min_size:
        return None
    return image.numpy()


def stats(
    root,
    *,
    image_size=(64, 64),
    channels: int = 3,
    crop: str = "none",
    margin: int = 0,
    resize_method: str = "bilinear",
    out=None,
    min_size: int = 8,
    workers: int | None = None,
) -> dict:
    """Class counts, per-channel mean/std and the mean image of ROOT's images, at `image_size`.

    Each image goes through training's evaluation path: `decode.decode_image` (EXIF orientation, the
    accurate JPEG IDCT, `channels`), then `EvalTransform(image_size, channels, resize_method, crop,
    margin)`, so the mean/std equal those `input.normalization: standardize` computes (`Splits.
    channel_statistics`) for an experiment with these input settings whose training split holds these
    images. Streaming: images are prepared a few at a time in threads and folded into float64 running
    sums (Chan et al.'s parallel mean/variance update, "Updating Formulae and a Pairwise Algorithm for
    Computing Sample Variances", 1979), so memory does not grow with the dataset. Bad files are skipped and listed. Writes stats.json, mean.png ([H, W, C] uint8)
    and mean.npy ([H, W, C] float32, 0..255) to `out` (default ROOT/../<rootname>-stats/).

    Returns:
        The stats.json content (mean/std per channel in 0..255 and in 0..1, class counts, skipped files).
    Raises:
        DataError: bad arguments, no decodable image, or an output that cannot be written.
    """
    import numpy as np

    root = common.existing_folder(root)
    height, width = (int(v) for v in image_size)
    if height < 1 or width < 1:
        raise common.DataError(f"--image-size must be positive; received {height} {width}")
    if channels not in (1, 3):
        raise common.DataError(f"--channels must be 1 or 3; received {channels}")
    if crop not in CROP_MODES or resize_method not in RESIZE_METHODS or margin < 0:
        raise common.DataError(
            f"--crop must be one of {', '.join(CROP_MODES)}, --resize-method one of {', '.join(RESIZE_METHODS)} "
            f"and --margin >= 0; received {crop!r}, {resize_method!r}, {margin}"
        )
    transform = EvalTransform(
        image_size=(height, width), channels=channels, resize_method=resize_method, crop=crop, margin=margin
    )
    prepare = _decoder(transform)
    out = Path(out) if out is not None else common.sibling(root, "-stats")
    files, names, class_names = _stats_files(root)
    count = 0
    mean = np.zeros(channels)
    m2 = np.zeros(channels)
    image_sum = np.zeros((height, width, channels))
    per_class = collections.Counter()
    skipped = []
    workers = workers or min(4, os.cpu_count() or 1)
    with (
        image_files.progress_bar(len(files), "computing statistics") as bar,
        concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool,
    ):
        pending = collections.deque()
        queue = iter(range(len(files)))

        def submit(limit):
            for index in queue:
                pending.append((index, pool.submit(_load_transformed, files[index], prepare, min_size)))
                if len(pending) >= limit:
                    return

        submit(2 * workers)
        while pending:
            index, future = pending.popleft()
            image = future.result()
            submit(2 * workers)
            bar.update()
            if image is None:
                reason = (
                    common.special_file(files[index])
                    or image_files.check_image(files[index], min_size=min_size).reason
                    or "cannot be decoded"
                )
                skipped.append({"path": common.relative(files[index], root), "reason": reason})
                continue
            pixels = image.astype(np.float64).reshape(-1, channels)
            n_b = len(pixels)
            mean_b = pixels.mean(axis=0)
            m2_b = np.square(pixels - mean_b).sum(axis=0)
            n_a = count * height * width
            delta = mean_b - mean
            total = n_a + n_b
            mean = mean + delta * n_b / total
            m2 = m2 + m2_b + np.square(delta) * n_a * n_b / total
            image_sum += image
            count += 1
            if names[index] is not None:
                per_class[names[index]] += 1
    if count == 0:
        raise common.DataError(f"{root}: no decodable images among {len(files)} files")
    std = np.sqrt(m2 / (count * height * width))
    mean_image = image_sum / count
    result = {
        "root": str(root),
        "images": count,
        "files": len(files),
        "image_size": [height, width],
        "channels": channels,
        "class_counts": {name: per_class[name] for name in class_names} if class_names is not None else None,
        "mean": mean.tolist(),
        "std": std.tolist(),
        "mean_unit": (mean / 255.0).tolist(),
        "std_unit": (std / 255.0).tolist(),
        "skipped": skipped,
        "transform": transform.to_dict(),
        "note": "mean/std: per channel over every pixel of the images as the model receives them (decoded and "
        "transformed as in evaluation); 'mean'/'std' in 0..255, "
        "'*_unit' in 0..1 (for input.normalization: standardize, use the 0..255 values)",
    }
    _write_outputs(out, mean_image, result)
    return result


def _write_outputs(out: Path, mean_image, result: dict) -> None:
    """mean.npy, mean.png and stats.json into `out`, each atomically."""
    import numpy as np
    import tensorflow as tf

    png = tf.io.encode_png(np.clip(np.round(mean_image), 0, 255).astype(np.uint8)).numpy()

    def write_png(temporary):
        with open(temporary, "wb") as handle:
            handle.write(png)

    try:
        atomic_write(
            out / "mean.npy", lambda temporary: np.save(temporary, mean_image.astype(np.float32)), suffix=".npy"
        )
        atomic_write(out / "mean.png", write_png, suffix=".png")
        atomic_write_json(out / "stats.json", result)
    except OSError as error:
        raise common.DataError(f"cannot write to {out} ({fileio.os_reason(error)}); choose another --out") from None


def run(args) -> int:
    """`data stats`: prints skipped files, class counts and mean/std; exit code 0."""
    result = stats(
        args.root,
        image_size=args.image_size,
        channels=args.channels,
        crop=args.crop,
        margin=args.margin,
        resize_method=args.resize_method,
        out=args.out,
        min_size=args.min_size,
    )
    out = Path(args.out) if args.out is not None else common.sibling(Path(args.root), "-stats")
    for entry in result["skipped"]:
        print(f"skipped {entry['path']}: {entry['reason']}")
    if result["class_counts"] is not None:
        for name, number in result["class_counts"].items():
            print(f"{name}: {number}")
    rounded = lambda values, digits: "[" + ", ".join(f"{v:.{digits}f}" for v in values) + "]"  # noqa: E731
    print(
        f"mean {rounded(result['mean'], 2)} std {rounded(result['std'], 2)} (0..255); "
        f"mean {rounded(result['mean_unit'], 4)} std {rounded(result['std_unit'], 4)} (0..1)"
    )
    print(f"{result['images']} images, {len(result['skipped'])} skipped; wrote {out}/stats.json, mean.png, mean.npy")
    return 0
