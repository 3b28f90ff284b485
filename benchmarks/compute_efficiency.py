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

from benchmarks import common  # noqa: E402
from benchmarks import train_throughput  # noqa: E402

MODULE = "benchmarks.compute_efficiency"
TARGET = 0.75
HEADERS = ["training input", "training images/s", "training GFLOP/s", "matmul GFLOP/s", "efficiency",
           "target", "met"]
FLOP_HEADERS = ["layer", "type", "forward MFLOPs/image"]


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
    parser.add_argument("--matmul-size", type=int, default=None, help="n of the n x n matmul (default 4096, "
                                                                     "--quick 1024)")
    parser.add_argument("--matmul-repeats", type=int, default=None, help="matmuls before and after the "
                                                                        "training (default 5 each, --quick 3)")
    parser.add_argument("--steps", type=int, default=None, help="timed training steps per repeat (default 50, "
                                                               "--quick 5)")
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
            args, Path(temporary), limit=train_throughput.QUICK_IMAGES if args.quick else None)
        if warmup + steps > len(splits.train[1]) // args.batch_size:
            raise SystemExit(f"--warmup + --steps ({warmup + steps}) must fit in one epoch of full batches")
        model = common.build_compiled_model(model_config, input_shape=splits.input_shape,
                                            num_classes=splits.num_classes, steps_per_epoch=1)
        forward, layers = common.count_flops(model)
        del model
        print(f"training: {len(splits.train[1])} images, batch {args.batch_size}, {repeats} repeats of "
              f"{warmup} + {steps} steps, inputs B (ours) and A (in-memory)", flush=True)
        measured = train_throughput.measure(["B", "A"], pipeline_config=pipeline_config, model_config=model_config,
                                            splits=splits, batch_size=args.batch_size, warmup=warmup,
                                            steps=steps, repeats=repeats)
    print(f"matmul {size}x{size} fp32 again, {matmul_repeats} repeats ...", flush=True)
    matmul_rates += matmul_flops_per_second(size, matmul_repeats)

    train_flops = 3 * forward
    matmul = common.median(matmul_rates)
    rows, results = [], {}
    for variant, label in (("B", "ours (cifar10_aug pipeline)"), ("A", "in-memory tensors, no augmentation")):
        images_per_second = common.median(measured[variant])
        achieved = images_per_second * train_flops
        efficiency = achieved / matmul
        results[variant] = {"images_per_second": images_per_second, "flops_per_second": achieved,
                            "efficiency": efficiency}
        rows.append([label, images_per_second, achieved / 1e9, matmul / 1e9, f"{efficiency:.3f}",
                     f">= {TARGET:g}", efficiency >= TARGET])
    table = common.markdown_table(HEADERS, rows)
    flop_table = common.markdown_table(FLOP_HEADERS, [[name, kind, f"{flops / 1e6:.3f}"] for name, kind, flops in layers]
                                       + [["total forward", "", f"{forward / 1e6:.3f}"],
                                          ["training (x3)", "", f"{train_flops / 1e6:.3f}"]])
    title = (f"Compute efficiency: {train_throughput.MODEL_EXPERIMENT} training FLOP/s over {size}x{size} fp32 "
             f"matmul FLOP/s, batch {args.batch_size}")
    print(f"\n{title}\n\n{table}\n\nFLOPs counted from the model:\n\n{flop_table}")
    matmul_low, matmul_high = min(matmul_rates) / 1e9, max(matmul_rates) / 1e9
    notes = (f"Training FLOPs per image: {train_flops / 1e6:.1f} M (3 x {forward / 1e6:.1f} M forward, Conv2D and "
             f"Dense multiply-adds x 2). Matmul: median of {len(matmul_rates)} ({matmul_low:.1f} to "
             f"{matmul_high:.1f} GFLOP/s), half before and half after the training. Training: median of "
             f"{repeats} repeats of {steps} steps after {warmup} warm-up steps.\n\n{flop_table}")
    common.finish(args, title=title, module=MODULE, argv=argv, table=table, notes=notes, info=info)
    return {"forward_flops": forward, "train_flops": train_flops, "matmul_flops_per_second": matmul,
            "inputs": results}


if __name__ == "__main__":
    main()
