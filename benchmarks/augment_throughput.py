"""Throughput of a batched CIFAR-size tf.data pipeline with and without each augmentation of issue 15.

The pipeline: in-memory uint8 CIFAR-10 training images (data/cifar10/cifar10.npz, or random ones with
--synthetic) -> shuffle -> [random resized crop, per image] -> batch -> float32 -> [batch augmentation,
`map(num_parallel_calls=AUTOTUNE)`] -> one-hot -> prefetch. Each row times `--batches` batches after
the first (which traces) and `--warmup` more, one pipeline at a time, median of `--repeats` rounds that
alternate the variants.

Columns: images/s; its ratio to the un-augmented pipeline; CPU ms per 1,000 images (process CPU time,
all threads; steadier than images/s on a shared machine) and the extra over no augmentation. On a
CPU-only machine that extra d (CPU seconds per image) is taken from training: training at R images/s
on c cores uses c / R CPU seconds per image, so with the augmentation it runs at about
c / (c / R + d), a ratio of 1 / (1 + R d / c): the "est. training ratio" column, for R = --training-speed
(an estimate, not a measurement; it assumes training keeps every core busy).

    .venv/bin/python -m benchmarks.augment_throughput [--batch-size 512] [--batches 20] [--warmup 8]
        [--repeats 3] [--training-speed 200] [--quick] [--synthetic] [--no-record]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common  # noqa: E402

MODULE = "benchmarks.augment_throughput"
HEADERS = [
    "augmentation",
    "images/s (median)",
    "ratio to none",
    "CPU ms per 1000 images",
    "extra CPU ms over none",
    "est. training ratio",
]
CROP = {"scale": (0.08, 1.0), "ratio": (3 / 4, 4 / 3)}
COLOR_JITTER = {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.05}
ISSUE_COMBINATION = dict(
    rand_augment={"num_ops": 2, "factor": 0.5}, color_jitter=COLOR_JITTER, random_erasing=0.25, mix_up=0.2, cut_mix=1.0
)
# name -> (random resized crop, flip + 2-pixel translate (the cifar10_fast preset's), batch layers)
VARIANTS = {
    "none": (False, False, {}),
    "flip + translate 2 px (shift_and_flip)": (False, True, {}),
    "random_resized_crop": (True, False, {}),
    "rand_augment 2 ops, 0.5": (False, False, {"rand_augment": ISSUE_COMBINATION["rand_augment"]}),
    "color_jitter 0.2/0.2/0.2/0.05": (False, False, {"color_jitter": COLOR_JITTER}),
    "random_erasing 0.25": (False, False, {"random_erasing": 0.25}),
    "mix_up 0.2": (False, False, {"mix_up": 0.2}),
    "cut_mix 1.0": (False, False, {"cut_mix": 1.0}),
    "issue 15 combination (crop + all five)": (True, False, ISSUE_COMBINATION),
}


def _arrays(args):
    import numpy as np

    path = common.PROJECT_ROOT / "data" / "cifar10" / "cifar10.npz"
    if args.synthetic or not path.is_file():
        if not args.synthetic:
            raise SystemExit(f"{path} not found (train once on cifar10 to create it), or pass --synthetic")
        return common.synthetic_arrays(4096)
    with np.load(path) as data:
        return data["train_images"], data["train_labels"]


def build_pipeline(images, labels, *, crop: bool, shift_flip: bool, layers: dict, batch_size: int, seed: int = 0):
    """The benchmark's train pipeline for one variant (see the module docstring); repeats forever."""
    import tensorflow as tf

    from pipeline.data import batch_augment as augment
    from pipeline.data import image_ops as preprocessing

    num_classes = int(labels.max()) + 1
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).shuffle(10_000, seed=seed).repeat()
    if crop:
        seeds = tf.data.Dataset.random(seed=seed + 1).batch(2)
        dataset = tf.data.Dataset.zip(dataset, seeds).map(
            lambda pair, s: (augment.random_resized_crop(pair[0], size=32, seed=s, **CROP), pair[1]),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    dataset = dataset.batch(batch_size, drop_remainder=True)
    dataset = dataset.map(
        lambda x, y: (tf.cast(x, tf.float32), tf.one_hot(y, num_classes)), num_parallel_calls=tf.data.AUTOTUNE
    )
    if shift_flip:
        seeds = tf.data.Dataset.random(seed=seed + 2).batch(2)
        dataset = tf.data.Dataset.zip(dataset, seeds).map(
            lambda batch, s: (
                preprocessing.shift_and_flip(batch[0], s, max_rows=2, max_cols=2, flip=True, fill_mode="reflect101"),
                batch[1],
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    dataset = augment.map_batch_augment(dataset, augment.build_batch_augment(**layers), seed=seed + 3)
    return dataset.prefetch(tf.data.AUTOTUNE)


def _time(iterator, *, batches: int, skip: int, batch_size: int) -> tuple[float, float]:
    """(images/s, CPU ms per 1000 images) over `batches` batches, counted after `skip` more: batches that
    finished in the background while the previous ones were read come out at once and would inflate it."""
    for _ in range(skip):
        next(iterator)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        next(iterator)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    images = batches * batch_size
    return images / wall, 1e6 * cpu / images


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.set_defaults(batch_size=512)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument(
        "--warmup", type=int, default=8, help="batches read before the clock starts (after the first, which traces)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--training-speed", type=float, default=200.0, help="training images/s the estimated training ratio assumes"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.batches, args.warmup, args.repeats, args.batch_size = 4, 2, 1, 64

    images, labels = _arrays(args)
    speeds = {name: [] for name in VARIANTS}
    cpu = {name: [] for name in VARIANTS}
    for _ in range(args.repeats):  # rounds alternate the variants, so load drift spreads over all of them
        for name, (crop, shift_flip, layers) in VARIANTS.items():
            # One pipeline at a time: an idle one would still fill its buffers in the background.
            iterator = iter(
                build_pipeline(
                    images, labels, crop=crop, shift_flip=shift_flip, layers=layers, batch_size=args.batch_size
                )
            )
            next(iterator)  # traces
            speed, cpu_ms = _time(iterator, batches=args.batches, skip=args.warmup, batch_size=args.batch_size)
            del iterator
            speeds[name].append(speed)
            cpu[name].append(cpu_ms)
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    base, base_cpu = common.median(speeds["none"]), common.median(cpu["none"])
    rows = []
    for name in VARIANTS:
        extra = max(common.median(cpu[name]) - base_cpu, 0.0)
        estimate = 1.0 / (1.0 + args.training_speed * extra / 1e6 / cores)
        rows.append(
            [
                name,
                common.fmt(common.median(speeds[name]), 0),
                common.fmt(common.median(speeds[name]) / base, 3),
                common.fmt(common.median(cpu[name]), 1),
                common.fmt(extra, 1),
                common.fmt(estimate, 3),
            ]
        )
    table = common.markdown_table(HEADERS, rows)
    source = "random uint8 images" if args.synthetic else "CIFAR-10 training images (data/cifar10/cifar10.npz)"
    common.finish(
        args,
        title=f"Augmentation throughput: batched tf.data pipeline, batch {args.batch_size}",
        module=MODULE,
        argv=argv,
        table=table,
        notes=f"{source}; {args.batches} batches per round after {args.warmup} warm-up batches, "
        f"median of {args.repeats} rounds alternating the variants. Estimated training "
        f"ratio at {args.training_speed:g} training images/s on {cores} cores.",
        printed_extra=common.machine_line(),
    )


if __name__ == "__main__":
    main()
