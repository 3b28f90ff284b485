"""Distributed training figures: all-reduce bytes per step of every shipped model, and N local workers
vs one process (images/s) on this machine.

  allreduce   Each experiment's model, built as the experiment builds it (ImageNet weights replaced by
              random ones: only shapes matter), per training phase (a frozen backbone is not
              all-reduced). Data-parallel training all-reduces one gradient per trainable variable a step: sum of trainable sizes x 4 bytes (float32 gradients; with
              mixed_float16 the variables and so the gradients stay float32). A ring all-reduce moves
              2 (N - 1) / N times that through each worker's link.
  throughput  A small model on synthetic in-memory images at one global batch: one process under the
              default strategy, then `--workers` local processes (pipeline.distribute.launch, TF_CONFIG,
              MultiWorkerMirroredStrategy with pipeline.compat's workarounds, DATA sharding), alternated
              `--repeats` times. Each run trains `--warmup` steps, then times `--steps` steps.

    .venv/bin/python -m benchmarks.distributed allreduce
    .venv/bin/python -m benchmarks.distributed throughput [--experiment tiny] [--workers 2] [--batch 256]
        [--steps 30] [--warmup 5] [--repeats 3]

Prints markdown tables; records nothing (copy them into RESULTS.md with the command).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# (native image size, channels, classes) of each dataset an experiment names (hymenoptera photos vary
# in size; its experiments set input.image_size).
DATASET_SHAPES = {
    "cifar10": ([32, 32], 3, 10),
    "mnist": ([28, 28], 1, 10),
    "fashion_mnist": ([28, 28], 1, 10),
    "hymenoptera": (None, 3, 2),
}


def model_inputs(config) -> tuple[tuple[int, int, int], int]:
    size, channels, classes = DATASET_SHAPES[config.dataset.name]
    return (*(config.input.image_size or size), config.input.channels or channels), classes


def allreduce(workers: int) -> None:
    import models
    from pipeline import config as config_lib
    from pipeline.training import phases

    rows = []
    for path in sorted((PROJECT_ROOT / "experiments").glob("*.yaml")):
        config = config_lib.load_config(str(path), [])
        shape, classes = model_inputs(config)
        options = dict(config.model.options)
        if "weights" in options:
            options["weights"] = None  # random init: no download, same shapes
        model = models.build_model(config.model.name, input_shape=shape, num_classes=classes, **options)
        total = sum(int(v.numpy().size) for v in model.variables)
        counts = []
        for phase in phases.plan(config.train):  # a frozen backbone's gradients are not all-reduced
            phases.set_trainable(model, phase.trainable)
            counts.append(sum(int(v.numpy().size) for v in model.trainable_variables))
        sizes = [count * 4 / 2**20 for count in counts]
        rows.append(
            [
                path.stem,
                config.model.name,
                "x".join(map(str, shape)),
                f"{total:,}",
                " / ".join(f"{count:,}" for count in counts),
                " / ".join(f"{size:.2f}" for size in sizes),
                " / ".join(f"{size * 2 * (workers - 1) / workers:.2f}" for size in sizes),
            ]
        )
    headers = [
        "experiment",
        "model",
        "input",
        "params",
        "trainable (per phase)",
        "all-reduce MiB/step",
        f"ring traffic per worker MiB/step ({workers} workers)",
    ]
    print_table(headers, rows)


def print_table(headers, rows) -> None:
    print("| " + " | ".join(headers) + " |")
    print("|" + "---|" * len(headers))
    for row in rows:
        print("| " + " | ".join(map(str, row)) + " |")


WORKER = textwrap.dedent("""
    import json, os, sys, time
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    sys.path.insert(0, {root!r})
    from pipeline.distribute import strategy as distribute
    from pipeline.data import sharding
    strategy = distribute.resolve_strategy("auto")
    import numpy as np
    import tensorflow as tf
    import keras
    import models

    shape, classes, batch, steps, warmup = {shape!r}, {classes}, {batch}, {steps}, {warmup}
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(batch * 4, *shape)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, classes, batch * 4), classes)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(batch, drop_remainder=True)
    dataset = dataset.with_options(sharding.shard_options("array")).prefetch(2)
    with strategy.scope():
        model = models.build_model({model!r}, input_shape=shape, num_classes=classes, **{options!r})
        model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch_index, logs=None):
            if batch_index == warmup - 1:
                self.start = time.perf_counter()

        def on_train_end(self, logs=None):
            self.seconds = time.perf_counter() - self.start

    clock = Clock()
    model.fit(dataset, epochs=1, steps_per_epoch=warmup + steps, verbose=0, callbacks=[clock])
    print("RESULT " + json.dumps({{"images_per_s": batch * steps / clock.seconds,
                                  "step_ms": 1000 * clock.seconds / steps,
                                  "replicas": strategy.num_replicas_in_sync,
                                  "per_replica": distribute.per_replica_batch(batch, strategy)}}))
""")


def throughput(experiment: str, workers: int, batch: int, steps: int, warmup: int, repeats: int) -> None:
    from pipeline import config as config_lib
    from pipeline.distribute import launch

    config = config_lib.load_config(experiment, [])
    shape, classes = model_inputs(config)
    script = WORKER.format(
        root=str(PROJECT_ROOT),
        shape=shape,
        classes=classes,
        batch=batch,
        steps=steps,
        warmup=warmup,
        model=config.model.name,
        options=dict(config.model.options),
    )
    runs = {1: [], workers: []}
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "worker.py"
        path.write_text(script)
        for _ in range(repeats):
            for count, values in runs.items():
                if count == 1:  # one plain process, no TF_CONFIG: the default strategy
                    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
                    done = subprocess.run(
                        [sys.executable, str(path)], capture_output=True, text=True, env=env, check=True
                    )
                    lines = done.stdout.splitlines()
                else:
                    out = io.StringIO()
                    status = launch.launch(count, [], command=[sys.executable, str(path)], out=out, timeout=600)
                    if status:
                        sys.exit(f"{count} workers failed:\n{out.getvalue()[-3000:]}")
                    lines = out.getvalue().splitlines()
                results = [json.loads(line.partition("RESULT ")[2]) for line in lines if "RESULT " in line]
                values.append(min(result["images_per_s"] for result in results))  # workers run in lockstep
                print(f"{count} worker(s): {values[-1]:.0f} images/s", file=sys.stderr, flush=True)
    single = statistics.median(runs[1])
    rows = []
    for count, values in runs.items():
        median = statistics.median(values)
        rows.append(
            [
                count,
                "default" if count == 1 else "multi_worker",
                batch,
                batch // count,
                f"{median:.0f}",
                f"{min(values):.0f}-{max(values):.0f}",
                f"{median / single:.2f}",
            ]
        )
    print(
        f"{experiment} ({config.model.name}, input {'x'.join(map(str, shape))}), global batch {batch}, "
        f"{steps} timed steps after {warmup}, {repeats} alternated repeats, load average "
        f"{os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs"
    )
    print_table(
        ["processes", "strategy", "global batch", "per-replica batch", "images/s (median)", "range", "vs 1"], rows
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    reduce = commands.add_parser("allreduce")
    reduce.add_argument("--workers", type=int, default=2, help="workers for the ring traffic column")
    speed = commands.add_parser("throughput")
    speed.add_argument("--experiment", default="tiny")
    speed.add_argument("--workers", type=int, default=2)
    speed.add_argument("--batch", type=int, default=256)
    speed.add_argument("--steps", type=int, default=30)
    speed.add_argument("--warmup", type=int, default=5)
    speed.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if args.command == "allreduce":
        allreduce(args.workers)
    else:
        throughput(args.experiment, args.workers, args.batch, args.steps, args.warmup, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
