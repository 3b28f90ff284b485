"""Training speed of `cifar10_fast` at a few widths, beside the budget's reference speed.

Each row: images/s of `fit` steps (after warm-up steps, median of repeats) on in-memory 32x32 tensors
(the data does not matter for speed), SGD with Nesterov momentum, label-smoothed cross-entropy; its
parameters, forward GFLOPs per image, and the time per epoch of 45,000 images that speed implies. The
reference row is issue 15's yardstick: the Keras book's cifar10 deep net (`cifar10_deep`), plain `fit` on
in-memory arrays at batch 128.

    .venv/bin/python -m benchmarks.fast_resnet_speed [--widths 64 48 32] [--activations gelu relu]
        [--precisions float32 mixed_bfloat16] [--batch-size 512] [--steps 6] [--warmup 2] [--repeats 2]

The reference row is always float32 (the budget is defined by it).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common  # noqa: E402

MODULE = "benchmarks.fast_resnet_speed"
EPOCH_IMAGES = 45_000
HEADERS = ["model", "batch", "params", "forward GFLOPs/image", "training images/s", "s per 45k epoch"]


def _speed(model, *, batch_size: int, steps: int, warmup: int, repeats: int) -> float:
    import keras
    import tensorflow as tf

    count = batch_size * 4
    images = tf.random.stateless_uniform([count, 32, 32, 3], [0, 1], -2.0, 2.0)
    labels = tf.one_hot(tf.random.stateless_uniform([count], [0, 2], 0, 10, dtype=tf.int32), 10)
    data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size, drop_remainder=True).cache().repeat()
    model.compile(
        keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.2),
    )
    speeds = [
        common.timed_fit(model, data.prefetch(2), warmup=warmup, steps=steps, batch_size=batch_size)
        for _ in range(repeats)
    ]
    return common.median(speeds)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.set_defaults(batch_size=512)
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 48, 32])
    parser.add_argument("--activations", nargs="+", default=["gelu", "relu"])
    parser.add_argument(
        "--precisions",
        nargs="+",
        default=["float32"],
        choices=["float32", "mixed_bfloat16", "mixed_float16"],
        help="Keras dtype policies for the cifar10_fast rows",
    )
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--reference-steps", type=int, default=30)
    args = parser.parse_args(argv)
    if args.quick:
        args.widths, args.activations, args.steps, args.repeats, args.reference_steps = [16], ["relu"], 2, 1, 4

    from models import build_model

    rows = []
    import keras

    for precision in args.precisions:
        keras.mixed_precision.set_global_policy(precision)
        for activation in args.activations:
            for width in args.widths:
                model = build_model(
                    "cifar10_fast", input_shape=(32, 32, 3), num_classes=10, width=width, activation=activation
                )
                flops, _ = common.count_flops(model)
                speed = _speed(
                    model, batch_size=args.batch_size, steps=args.steps, warmup=args.warmup, repeats=args.repeats
                )
                suffix = "" if precision == "float32" else f" {precision}"
                rows.append(
                    [
                        f"cifar10_fast width {width} {activation}{suffix}",
                        args.batch_size,
                        model.count_params(),
                        flops / 1e9,
                        speed,
                        EPOCH_IMAGES / speed,
                    ]
                )
    keras.mixed_precision.set_global_policy("float32")
    reference = build_model("cifar10_deep", input_shape=(32, 32, 3), num_classes=10)
    flops, _ = common.count_flops(reference)
    speed = _speed(reference, batch_size=128, steps=args.reference_steps, warmup=5, repeats=args.repeats)
    rows.append(["reference: cifar10_deep", 128, reference.count_params(), flops / 1e9, speed, EPOCH_IMAGES / speed])
    table = common.markdown_table(
        HEADERS, [[r[0], r[1], r[2], common.fmt(r[3], 3), common.fmt(r[4], 0), common.fmt(r[5], 0)] for r in rows]
    )
    common.finish(
        args,
        title="cifar10_fast training speed (synthetic in-memory 32x32 data)",
        module=MODULE,
        argv=argv,
        table=table,
        notes=f"fit steps: median of {args.repeats} repeats of {args.steps} steps after {args.warmup} "
        f"warm-up steps (reference: {args.reference_steps} after 5).",
    )


if __name__ == "__main__":
    main()
