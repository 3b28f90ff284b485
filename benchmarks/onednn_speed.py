"""Eigen's against oneDNN's CPU kernels (TF_ENABLE_ONEDNN_OPTS=0 / 1) on the shipped experiments' models.

TensorFlow turns oneDNN's kernels on by itself only on CPUs with AVX512_VNNI, AVX512_BF16, AVX_VNNI or AMX;
the command line turns them on for every x86 CPU (pipeline/core/cpu_kernels.py). This measures what that
changes, per experiment: training images/s (the run's model built and compiled as pipeline.run does it,
random inputs of its size, its batch size), the latency of one image through the model (serving's
unbatched case) and forward images/s at batch 64. Each measurement runs in a fresh child process, since
TensorFlow reads the variable at import; children alternate 0, 1, 0, 1, ... so drifting machine speed
hits both alike. Reported: medians over the rounds and oneDNN / Eigen ratios.

    .venv/bin/python -m benchmarks.onednn_speed [--experiments cifar10_fast cifar10_deep ...] [--rounds 2]
        [--seconds 8] [--quick] [--no-record]

On a CPU that has AVX512_VNNI, AVX512_BF16, AVX_VNNI or AMX, `0` gives Eigen's kernels and `1` oneDNN's,
which TensorFlow would have used anyway; on other machines (ARM) the variable does nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MODULE = "benchmarks.onednn_speed"
EXPERIMENTS = ["cifar10_fast", "cifar10_deep", "mnist_lenet", "hymenoptera_scratch", "cifar10_mobilenet_pretrain"]
SETTINGS = ("0", "1")  # TF_ENABLE_ONEDNN_OPTS: Eigen, oneDNN
HEADERS = [
    "experiment",
    "batch",
    "train images/s Eigen",
    "oneDNN",
    "ratio",
    "1-image ms Eigen",
    "oneDNN",
    "batch-64 images/s Eigen",
    "oneDNN",
    "ratio",
]


def _timed(call, *, seconds: float, minimum: int, maximum: int) -> list[float]:
    """Seconds per call of `call()` (which blocks until done), repeated until `seconds` or `maximum`."""
    times, start = [], time.perf_counter()
    while len(times) < maximum and (len(times) < minimum or time.perf_counter() - start < seconds):
        began = time.perf_counter()
        call()
        times.append(time.perf_counter() - began)
    return times


def measure(experiment: str, *, seconds: float) -> dict:
    """One child's figures for `experiment` under whatever TF_ENABLE_ONEDNN_OPTS it was started with."""
    import keras
    import numpy as np

    from benchmarks import common  # the parent set TF_ENABLE_ONEDNN_OPTS in this child's environment
    from pipeline import experiment as experiment_lib
    from pipeline.inspection import summary

    overrides = ["model.options.weights=null"] if "weights" in _model_options(experiment) else []
    config = experiment_lib.load_experiment(experiment, overrides)
    input_shape = summary.input_shape_for(config)
    num_classes = summary.num_classes_for(config)
    batch = config.train.batch_size
    model = common.build_compiled_model(config, input_shape=input_shape, num_classes=num_classes, steps_per_epoch=100)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch, *input_shape)).astype("float32")
    labels = keras.utils.to_categorical(rng.integers(0, num_classes, batch), num_classes)

    def train_step():
        model.train_on_batch(images, labels)  # returns the loss as a number: the step has finished

    for _ in range(2):  # tracing, oneDNN's primitive creation
        train_step()
    train = _timed(train_step, seconds=seconds, minimum=2, maximum=30)
    one = images[:1]
    sixty_four = np.resize(images, (64, *input_shape))
    for _ in range(3):
        model.predict_on_batch(one)
        model.predict_on_batch(sixty_four)
    latency = _timed(lambda: model.predict_on_batch(one), seconds=seconds / 4, minimum=10, maximum=200)
    forward = _timed(lambda: model.predict_on_batch(sixty_four), seconds=seconds / 2, minimum=3, maximum=50)
    return {
        "experiment": experiment,
        "batch": batch,
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
        "train_images_per_s": batch / float(np.median(train)),
        "latency_ms": 1000 * float(np.median(latency)),
        "forward_images_per_s": 64 / float(np.median(forward)),
    }


def _model_options(experiment: str) -> set:
    import models
    from pipeline import experiment as experiment_lib

    config = experiment_lib.load_experiment(experiment, [])
    return set(models.MODELS.options(config.model.name))


def _child(experiment: str, setting: str, *, seconds: float) -> dict:
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS=setting, TF_CPP_MIN_LOG_LEVEL="2")
    command = [sys.executable, "-m", MODULE, "--child", experiment, "--seconds", str(seconds)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{experiment} with TF_ENABLE_ONEDNN_OPTS={setting} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    from benchmarks import common

    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--experiments", nargs="+", default=EXPERIMENTS)
    parser.add_argument("--rounds", type=int, default=2, help="children per setting and experiment, alternated")
    parser.add_argument("--seconds", type=float, default=8.0, help="timed training seconds per child")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # one measurement, in the variable's setting
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child, seconds=args.seconds)), flush=True)
        return
    if args.quick:
        args.experiments, args.rounds, args.seconds = ["mnist_lenet"], 1, 1.0

    results = {name: {setting: [] for setting in SETTINGS} for name in args.experiments}
    for round_index in range(args.rounds):
        for name in args.experiments:
            for setting in SETTINGS if round_index % 2 == 0 else SETTINGS[::-1]:
                figures = _child(name, setting, seconds=args.seconds)
                results[name][setting].append(figures)
                print(
                    f"round {round_index + 1} {name} TF_ENABLE_ONEDNN_OPTS={setting}: "
                    f"train {figures['train_images_per_s']:.1f} images/s, 1 image {figures['latency_ms']:.2f} ms, "
                    f"batch 64 {figures['forward_images_per_s']:.0f} images/s",
                    flush=True,
                )
    rows = []
    for name in args.experiments:
        median = {
            setting: {
                key: common.median([figures[key] for figures in results[name][setting]])
                for key in ("train_images_per_s", "latency_ms", "forward_images_per_s")
            }
            for setting in SETTINGS
        }
        eigen, onednn = median["0"], median["1"]
        rows.append(
            [
                name,
                results[name]["0"][0]["batch"],
                common.fmt(eigen["train_images_per_s"]),
                common.fmt(onednn["train_images_per_s"]),
                f"{onednn['train_images_per_s'] / eigen['train_images_per_s']:.2f}x",
                common.fmt(eigen["latency_ms"], 2),
                common.fmt(onednn["latency_ms"], 2),
                common.fmt(eigen["forward_images_per_s"], 0),
                common.fmt(onednn["forward_images_per_s"], 0),
                f"{onednn['forward_images_per_s'] / eigen['forward_images_per_s']:.2f}x",
            ]
        )
    common.finish(
        args,
        title=f"Eigen's vs oneDNN's CPU kernels on the shipped models (TF_ENABLE_ONEDNN_OPTS 0 / 1, "
        f"{args.rounds} alternated children each)",
        module=MODULE,
        argv=argv,
        table=common.markdown_table(HEADERS, rows),
    )


if __name__ == "__main__":
    main()
