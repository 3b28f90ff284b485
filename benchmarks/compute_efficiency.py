"""Compute efficiency: the training FLOP/s of cifar10_deep over the FLOP/s of a large fp32 matmul.

FLOPs per image are counted from the model (2 x multiply-adds of every Conv2D and Dense layer, forward;
x 3 for forward + backward). Training images/s is measured here, in this run, as in train_throughput
(fit steps after a warm-up, median of repeats) for two inputs: our pipeline (cifar10_aug's augmentation,
what a run trains with: the headline) and in-memory tensors without augmentation (compute only). The
reference is an n x n fp32 `tf.matmul` (2 n^3 FLOPs; median of repeats, measured before and after the
training so load drift shows). Target: efficiency >= 0.75.

    .venv/bin/python -m benchmarks.compute_efficiency [--matmul-size 4096] [--steps 50] [--repeats 5]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import (
    common,  # noqa: E402
    train_throughput,  # noqa: E402
)

MODULE = "benchmarks.compute_efficiency"
TARGET = 0.75
HEADERS = ["training input", "training images/s", "training GFLOP/s", "matmul GFLOP/s", "efficiency", "target", "met"]
FLOP_HEADERS = ["layer", "type", "forward MFLOPs/image"]
PROFILE_HEADERS = ["part of a training step", "ms per batch", "share of the Keras step", "GFLOP/s"]


def _chain(model) -> list:
    """The model's layers in call order, nested models flattened, when the graph is a single chain
    (cifar10_deep is); None otherwise."""
    import keras

    from pipeline import compat

    flat = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.Model):
            inner = _chain(layer)
            if inner is None:
                return None
            flat.extend(inner)
        elif len(compat.inbound_nodes(layer)) != 1 or len(compat.inbound_nodes(layer)[0].input_tensors) != 1:
            return None
        else:
            flat.append(layer)
    return flat


def _milliseconds(function, repeats: int) -> float:
    """Median wall time of `function()` (a tf.function returning tensors), results fetched each call."""
    import tensorflow as tf

    tf.nest.map_structure(lambda t: t.numpy(), function())  # trace + warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        tf.nest.map_structure(lambda t: t.numpy(), function())
        times.append(time.perf_counter() - start)
    return 1000 * common.median(times)


def step_profile(model, *, batch_size: int, repeats: int, keras_step_ms: float, layer_flops: dict) -> list[list]:
    """Where a training step's time goes: each layer's forward + backward on its own (its input and
    weight gradients), the whole loss + gradients in one function, the optimizer update, against the
    Keras `fit` step (`keras_step_ms`). Rows for PROFILE_HEADERS."""
    import keras
    import tensorflow as tf

    num_classes = int(model.output_shape[-1])
    x = tf.random.uniform([batch_size, *model.input_shape[1:]], 0, 255, seed=1)
    y = tf.one_hot(tf.random.uniform([batch_size], 0, num_classes, dtype=tf.int32, seed=2), num_classes)
    rows = []

    def row(name, ms, flops_per_image=0):
        rate = flops_per_image * batch_size / (ms / 1000) / 1e9 if flops_per_image else ""
        rows.append([name, ms, f"{100 * ms / keras_step_ms:.1f}%", rate])

    chain = _chain(model)
    if chain is not None:
        activation, total = x, 0.0
        for layer in chain:

            def forward_backward(layer=layer, inputs=activation):
                with tf.GradientTape() as tape:
                    tape.watch(inputs)
                    out = layer(inputs, training=True)
                    loss = tf.reduce_sum(tf.cast(out, tf.float32))
                return tape.gradient(loss, [inputs, *layer.trainable_variables])

            ms = _milliseconds(tf.function(forward_backward), repeats)
            total += ms
            flops = 3 * layer_flops.get(layer.name, 0)
            row(f"{layer.name} ({type(layer).__name__}) forward + backward", ms, flops)
            activation = layer(activation, training=True)
        row("sum of the layers above", total, 3 * sum(layer_flops.values()))

    loss_fn = keras.losses.CategoricalCrossentropy()

    @tf.function
    def gradients():
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        return tape.gradient(loss, model.trainable_variables)

    gradient_ms = _milliseconds(gradients, repeats)
    row("whole model: loss + gradients (one tf.function)", gradient_ms, 3 * sum(layer_flops.values()))
    grads = gradients()
    optimizer = model.optimizer
    variables = model.trainable_variables

    @tf.function
    def update():
        optimizer.apply(grads, variables)
        return optimizer.iterations

    parameters = sum(int(tf.size(v)) for v in variables)
    row(f"optimizer update ({type(optimizer).__name__}, {parameters:,} parameters)", _milliseconds(update, repeats))
    row("Keras fit step (measured above: batch / images/s)", keras_step_ms, 3 * sum(layer_flops.values()))
    return rows


def matmul_flops_per_second(size: int, repeats: int) -> list[float]:
    """FLOP/s of repeated size x size fp32 matmuls (2 size^3 FLOPs each), one warm-up call first."""
    import tensorflow as tf

    a = tf.random.stateless_uniform([size, size], seed=[1, 2], dtype=tf.float32)
    b = tf.random.stateless_uniform([size, size], seed=[3, 4], dtype=tf.float32)

    @tf.function
    def product(x, y):
        return tf.reduce_sum(tf.matmul(x, y))  # a scalar out: fetching it waits for the matmul

    product(a, b).numpy()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        product(a, b).numpy()
        rates.append(2 * size**3 / (time.perf_counter() - start))
    return rates


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = common.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument(
        "--matmul-size", type=int, default=None, help="n of the n x n matmul (default 4096, --quick 1024)"
    )
    parser.add_argument(
        "--matmul-repeats",
        type=int,
        default=None,
        help="matmuls before and after the training (default 5 each, --quick 3)",
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="timed training steps per repeat (default 50, --quick 5)"
    )
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps per repeat (default 5, --quick 2)")
    parser.add_argument("--repeats", type=int, default=None, help="training repeats (default 5, --quick 2)")
    args = parser.parse_args(argv)
    size = args.matmul_size or (1024 if args.quick else 4096)
    matmul_repeats = args.matmul_repeats or (3 if args.quick else 5)
    steps = args.steps or (5 if args.quick else 50)
    warmup = args.warmup or (2 if args.quick else 5)
    repeats = args.repeats or (2 if args.quick else 5)

    info = common.machine()
    print(f"machine: {common.machine_line(info)}")
    print(f"matmul {size}x{size} fp32, {matmul_repeats} repeats ...", flush=True)
    matmul_rates = matmul_flops_per_second(size, matmul_repeats)
    with tempfile.TemporaryDirectory(prefix="bench-flops-") as temporary:
        pipeline_config, model_config, splits = train_throughput.load_training_data(
            args, Path(temporary), limit=train_throughput.QUICK_IMAGES if args.quick else None
        )
        if warmup + steps > len(splits.train[1]) // args.batch_size:
            raise SystemExit(f"--warmup + --steps ({warmup + steps}) must fit in one epoch of full batches")
        model = common.build_compiled_model(
            model_config, input_shape=splits.input_shape, num_classes=splits.num_classes, steps_per_epoch=1
        )
        forward, layers = common.count_flops(model)
        del model
        print(
            f"training: {len(splits.train[1])} images, batch {args.batch_size}, {repeats} repeats of "
            f"{warmup} + {steps} steps, inputs B (ours) and A (in-memory)",
            flush=True,
        )
        measured = train_throughput.measure(
            ["B", "A"],
            pipeline_config=pipeline_config,
            model_config=model_config,
            splits=splits,
            batch_size=args.batch_size,
            warmup=warmup,
            steps=steps,
            repeats=repeats,
        )
        print("profiling one training step ...", flush=True)
        model = common.build_compiled_model(
            model_config, input_shape=splits.input_shape, num_classes=splits.num_classes, steps_per_epoch=1
        )
        keras_step_ms = 1000 * args.batch_size / common.median(measured["A"])
        profile = step_profile(
            model,
            batch_size=args.batch_size,
            repeats=max(5, repeats * 2),
            keras_step_ms=keras_step_ms,
            layer_flops={name.rsplit("/", 1)[-1]: flops for name, _, flops in layers},
        )
    print(f"matmul {size}x{size} fp32 again, {matmul_repeats} repeats ...", flush=True)
    matmul_rates += matmul_flops_per_second(size, matmul_repeats)

    train_flops = 3 * forward
    matmul = common.median(matmul_rates)
    rows, results = [], {}
    for variant, label in (("B", "ours (cifar10_aug pipeline)"), ("A", "in-memory tensors, no augmentation")):
        images_per_second = common.median(measured[variant])
        achieved = images_per_second * train_flops
        efficiency = achieved / matmul
        results[variant] = {
            "images_per_second": images_per_second,
            "flops_per_second": achieved,
            "efficiency": efficiency,
        }
        rows.append(
            [
                label,
                images_per_second,
                achieved / 1e9,
                matmul / 1e9,
                f"{efficiency:.3f}",
                f">= {TARGET:g}",
                efficiency >= TARGET,
            ]
        )
    table = common.markdown_table(HEADERS, rows)
    flop_table = common.markdown_table(
        FLOP_HEADERS,
        [[name, kind, f"{flops / 1e6:.3f}"] for name, kind, flops in layers]
        + [["total forward", "", f"{forward / 1e6:.3f}"], ["training (x3)", "", f"{train_flops / 1e6:.3f}"]],
    )
    profile_table = common.markdown_table(PROFILE_HEADERS, profile)
    title = (
        f"Compute efficiency: {train_throughput.MODEL_EXPERIMENT} training FLOP/s over {size}x{size} fp32 "
        f"matmul FLOP/s, batch {args.batch_size}"
    )
    matmul_low, matmul_high = min(matmul_rates) / 1e9, max(matmul_rates) / 1e9
    notes = (
        f"Training FLOPs per image: {train_flops / 1e6:.1f} M (3 x {forward / 1e6:.1f} M forward, Conv2D and "
        f"Dense multiply-adds x 2). Matmul: median of {len(matmul_rates)} ({matmul_low:.1f} to "
        f"{matmul_high:.1f} GFLOP/s), half before and half after the training. Training: median of "
        f"{repeats} repeats of {steps} steps after {warmup} warm-up steps.\n\n{flop_table}\n\n"
        f"Profile of one training step, batch {args.batch_size} (median times; each layer alone on its "
        f"input, forward + gradients of its input and weights; GFLOP/s = 3 x forward FLOPs / time; the "
        f"Keras step is variant A's):\n\n{profile_table}"
    )
    common.finish(
        args,
        title=title,
        module=MODULE,
        argv=argv,
        table=table,
        notes=notes,
        info=info,
        printed_extra=f"FLOPs counted from the model:\n\n{flop_table}\n\nProfile of one training step "
        f"(in-memory batch):\n\n{profile_table}",
    )
    return {"forward_flops": forward, "train_flops": train_flops, "matmul_flops_per_second": matmul, "inputs": results}


if __name__ == "__main__":
    main()
