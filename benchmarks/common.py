"""Shared pieces of the benchmark scripts.

Machine description, peak RSS, medians, markdown tables, `record` (appends a section to
benchmarks/RESULTS.md), a FLOP counter for Keras models, the command-line options every script takes,
data sources (the real CIFAR-10 or a synthetic stand-in) and a step clock for `fit`.

Run the scripts from the project root as modules (`.venv/bin/python -m benchmarks.train_throughput`) or
as files (`.venv/bin/python benchmarks/train_throughput.py`); `make bench` runs all four.
"""

from __future__ import annotations

import argparse
import datetime
import io
import math
import os
import platform
import resource
import shlex
import statistics
import sys
import tarfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from pipeline.core import cpu_kernels  # noqa: E402

cpu_kernels.choose("onednn")  # train.cpu_kernels' default (before TensorFlow is imported)

import numpy as np  # noqa: E402

from pipeline.data.cifar_sources import CIFAR10_CLASSES  # noqa: E402

RESULTS_PATH = PROJECT_ROOT / "benchmarks" / "RESULTS.md"
RESULTS_HEADER = """# Benchmark results

Measurements of the input pipeline, training throughput, compute efficiency and time to accuracy on
CIFAR-10, appended by the scripts in `benchmarks/` (one section per run: date, machine, the exact
command and the table). Reproduce with `make bench` (or one script:
`.venv/bin/python -m benchmarks.<input_pipeline|train_throughput|compute_efficiency|time_to_accuracy>`);
`make bench-quick` is a smoke run that prints but records nothing. Figures depend on the machine and on
whatever else ran on it: compare sections measured on the same machine, and check its load average.
"""

SYNTHETIC_TRAIN = 512  # synthetic CIFAR-10 stand-in: train and test images
SYNTHETIC_TEST = 128


# --------------------------------------------------------------------------------------------------
# Machine, memory, statistics, tables
# --------------------------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        pass
    return None


def machine() -> dict:
    """What the figures were measured on (TensorFlow is imported here)."""
    import keras
    import tensorflow as tf

    nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpus = [device.name for device in tf.config.list_physical_devices("GPU")]
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "nproc": nproc,
        "cpu": cpu_model(),
        "memory_gib": memory_total_gib(),
        "gpus": gpus,
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "load_average": load,
    }


def machine_line(info: dict | None = None) -> str:
    info = info or machine()
    memory = f", {info['memory_gib']:.0f} GiB RAM" if info["memory_gib"] else ""
    gpus = ", GPU: " + ", ".join(info["gpus"]) if info["gpus"] else ", no GPU"
    load = f"; load average at start {info['load_average'][0]:.2f}" if info["load_average"] else ""
    return (
        f"{info['nproc']} CPUs (nproc), {info['cpu']}{memory}{gpus}; Python {info['python']}, "
        f"TensorFlow {info['tensorflow']}, Keras {info['keras']}{load}"
    )


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def median(values) -> float:
    values = [float(v) for v in values]
    if not values:
        raise ValueError("median of no values")
    return float(statistics.median(values))


def fmt(value, digits: int = 1) -> str:
    """A table cell: numbers without thousands separators (so they parse), None as n/a."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def markdown_table(headers: list[str], rows: list[list]) -> str:
    cells = [[str(h) for h in headers]] + [[c if isinstance(c, str) else fmt(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) + " |" for row in cells]
    lines.insert(1, "| " + " | ".join("-" * widths[i] for i in range(len(headers))) + " |")
    return "\n".join(lines)


def ensure_results_file(path: Path | None = None) -> None:
    path = Path(path or RESULTS_PATH)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(RESULTS_HEADER)


def record(
    title: str,
    command: str,
    table_markdown: str,
    *,
    notes: str = "",
    info: dict | None = None,
    path: Path | None = None,
) -> Path:
    """Appends one section to RESULTS.md (created with its header if absent); never rewrites it."""
    path = Path(path or RESULTS_PATH)
    info = info or machine()
    ensure_results_file(path)
    section = [
        f"\n## {title}\n",
        f"- Date: {info['date']}",
        f"- Machine: {machine_line(info)}",
        f"- Command: `{command}`",
        "",
        table_markdown.rstrip(),
        "",
    ]
    if notes:
        section += [notes.rstrip(), ""]
    existing = path.read_text()
    with open(path, "a") as handle:
        if existing and not existing.endswith("\n"):
            handle.write("\n")
        handle.write("\n".join(section))
    return path


def command_line(module: str, argv: list[str]) -> str:
    """The command that reproduces a run, from the project root."""
    python = Path(sys.executable)
    try:
        shown = str(python.relative_to(PROJECT_ROOT)) if python.is_relative_to(PROJECT_ROOT) else "python"
    except (ValueError, OSError):
        shown = "python"
    return shlex.join([shown, "-m", module, *argv])


def finish(
    args,
    *,
    title: str,
    module: str,
    argv: list[str],
    table: str,
    notes: str = "",
    info: dict | None = None,
    printed_extra: str = "",
) -> None:
    """Prints the title, the table (and `printed_extra`), then records the section unless --quick,
    --no-record or --synthetic (figures of random data have no place among the results)."""
    print(f"\n{title}\n\n{table}" + (f"\n\n{printed_extra}" if printed_extra else ""))
    reason = next(
        (
            flag
            for flag, on in (("--quick", args.quick), ("--no-record", args.no_record), ("--synthetic", args.synthetic))
            if on
        ),
        None,
    )
    if reason:
        print(f"\n(not recorded: {reason})")
        return
    path = record(title, command_line(module, argv), table, notes=notes, info=info)
    print(f"\nrecorded in {path}")


# --------------------------------------------------------------------------------------------------
# Options shared by the scripts
# --------------------------------------------------------------------------------------------------


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: small subset, few steps; prints, never records"
    )
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    parser.add_argument(
        "--synthetic",
        action="store_true",
        help="random uint8 images (and a few generated JPEGs) instead of CIFAR-10: "
        "needs no dataset mirror; for testing the script (never recorded)",
    )
    parser.add_argument("--batch-size", type=int, default=128, help="images per batch")
    return parser


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------


def synthetic_arrays(count: int, seed: int = 0, size: int = 32, num_classes: int = 10):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(count, size, size, 3), dtype=np.uint8)
    labels = (np.arange(count) % num_classes).astype(np.int64)
    rng.shuffle(labels)
    return images, labels


def write_synthetic_cifar10(
    data_dir: Path, *, train: int = SYNTHETIC_TRAIN, test: int = SYNTHETIC_TEST, seed: int = 0
) -> Path:
    """A synthetic cifar10.npz where the cifar10 loader looks first (its decoded cache in
    `<data_dir>/cifar10/`), so `Splits` and `load_dataset` run unchanged on it."""
    train_images, train_labels = synthetic_arrays(train, seed)
    test_images, test_labels = synthetic_arrays(test, seed + 1)
    store = Path(data_dir) / "cifar10"
    store.mkdir(parents=True, exist_ok=True)
    np.savez(
        store / "cifar10.npz",
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
    )
    return Path(data_dir)


def data_overrides(args, temporary_dir: Path) -> list[str]:
    """Config `--set` overrides that point the cifar10 dataset at synthetic data under --synthetic."""
    if not args.synthetic:
        return []
    write_synthetic_cifar10(temporary_dir / "data")
    return [f"dataset.data_dir={temporary_dir / 'data'}"]


def write_synthetic_jpeg_archive(path: Path, *, count: int, seed: int = 0) -> Path:
    """A small cifar10-jpg.tar.gz look-alike: cifar10/{train,test}/<class>/NNNN.jpg (random pixels)."""
    from PIL import Image

    images, labels = synthetic_arrays(count, seed)
    with tarfile.open(path, "w:gz") as archive:
        for index, (image, label) in enumerate(zip(images, labels)):
            split = "test" if index % 8 == 7 else "train"
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="JPEG", quality=90)
            info = tarfile.TarInfo(f"cifar10/{split}/{CIFAR10_CLASSES[label]}/{index:05d}.jpg")
            info.size = buffer.tell()
            buffer.seek(0)
            archive.addfile(info, buffer)
    return path


def cifar10_jpeg_files(args, temporary_dir: Path, split: str = "train"):
    """(paths, labels) of the CIFAR-10 JPEG class folders: the mirror's cifar10-jpg.tar.gz (or synthetic
    JPEGs) extracted with the `folder` dataset's own code into a temporary data dir (nothing is left in
    the project's data/), read with its folder reader."""
    from pipeline.data import datasets

    if args.synthetic:
        archive = write_synthetic_jpeg_archive(temporary_dir / "cifar10-jpg.tar.gz", count=256)
    else:
        mirror = datasets.resolve_mirror(None)
        archive = mirror / "cifar10-jpg.tar.gz" if mirror else None
        if archive is None or not archive.is_file():
            raise SystemExit(
                f"cifar10-jpg.tar.gz not found in the dataset mirror ({mirror or 'none configured'}); "
                f"set DATA_MIRROR, or pass --synthetic"
            )
    tree = datasets.load_dataset("folder", data_dir=str(temporary_dir / "data"), root=str(archive))
    paths, labels = tree.splits[split]
    return list(paths), np.asarray(labels, np.int64)


def subset(arrays: tuple, count: int | None, seed: int = 0) -> tuple:
    """The first `count` items of a seeded permutation (all of them when count is None or larger)."""
    total = len(arrays[0])
    if count is None or count >= total:
        return arrays
    keep = np.sort(np.random.default_rng(seed).permutation(total)[:count])
    return tuple(np.asarray(a)[keep] if not isinstance(a, list) else [a[i] for i in keep] for a in arrays)


# --------------------------------------------------------------------------------------------------
# Models and timing
# --------------------------------------------------------------------------------------------------


def build_compiled_model(
    config, *, input_shape, num_classes: int, steps_per_epoch: int, statistics=(None, None), sample_images=None
):
    """The run's model exactly as pipeline.run builds and compiles it (first phase), seeded;
    `sample_images` as for `pipeline.training.model_setup.build_model` (a model's data-dependent init)."""
    import keras

    from pipeline import experiment  # noqa: F401
    from pipeline.training import model_setup as modeling
    from pipeline.training import phases

    keras.utils.set_random_seed(config.seed)
    precision = modeling.resolve_mixed_precision(config.train.mixed_precision, log=lambda *_: None)  # `auto`
    keras.mixed_precision.set_dtype_policy(precision)
    try:
        model = modeling.build_model(
            name=config.name,
            model=config.model,
            normalization=config.input.normalization,
            input_shape=input_shape,
            num_classes=num_classes,
            statistics=statistics,
            sample_images=sample_images,
            log=lambda *_: None,
        )
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    phase = phases.plan(config.train)[0]
    phases.set_trainable(model, phase.trainable)
    modeling.compile_model(
        model,
        phase,
        steps_per_epoch,
        label_smoothing=config.train.label_smoothing,
        jit_compile=config.train.jit_compile,
    )
    return model


def step_clock(warmup: int, steps: int):
    """A callback timing `steps` training steps after `warmup` steps of the same `fit` call; it waits
    for each boundary step's results, so asynchronous devices are timed correctly."""
    import keras

    if warmup < 1 or steps < 1:
        raise ValueError("warmup and steps must be >= 1")

    class StepClock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.start = self.end = None

        def on_train_batch_end(self, batch, logs=None):
            if batch not in (warmup - 1, warmup + steps - 1):
                return
            for value in (logs or {}).values():
                keras.ops.convert_to_numpy(value)  # blocks until the step has finished
            now = time.perf_counter()
            if batch == warmup - 1:
                self.start = now
            else:
                self.end = now

        @property
        def seconds(self) -> float:
            if self.start is None or self.end is None:
                raise RuntimeError(f"fit ran fewer than {warmup + steps} steps")
            return self.end - self.start

    return StepClock()


def timed_fit(model, data, *, warmup: int, steps: int, batch_size: int) -> float:
    """Training images/s over `steps` steps after `warmup` steps, in one `fit` call."""
    clock = step_clock(warmup, steps)
    model.fit(data, epochs=1, steps_per_epoch=warmup + steps, verbose=0, callbacks=[clock], shuffle=False)
    return steps * batch_size / clock.seconds


def count_flops(model) -> tuple[int, list[tuple[str, str, int]]]:
    """Forward FLOPs per image: 2 x multiply-adds of every Conv (1D/2D/3D, depthwise) and Dense layer,
    nested models included. Returns (total, [(layer path, class, flops)]). Bias adds, activations,
    pooling and normalisation are not counted (they are a small fraction for these nets)."""
    import keras

    counted = (
        keras.layers.Conv1D,
        keras.layers.Conv2D,
        keras.layers.Conv3D,
        keras.layers.DepthwiseConv2D,
        keras.layers.Dense,
    )
    rows = []

    def visit(layer, prefix):
        if isinstance(layer, keras.Model):
            for inner in layer.layers:
                visit(inner, f"{prefix}{layer.name}/")
            return
        if isinstance(
            layer,
            (
                keras.layers.Conv1DTranspose,
                keras.layers.Conv2DTranspose,
                keras.layers.Conv3DTranspose,
                keras.layers.SeparableConv1D,
                keras.layers.SeparableConv2D,
            ),
        ):
            raise NotImplementedError(f"count_flops: {type(layer).__name__} ({layer.name}) is not supported")
        if not isinstance(layer, counted):
            return
        # Conv: kernel (*window, in/groups, filters) per output position; Dense: kernel (in, units) per
        # position of the leading axes; depthwise: (*window, in, multiplier). Same formula for all.
        output_positions = math.prod(int(d) for d in layer.output.shape[1:-1])
        macs = output_positions * math.prod(int(d) for d in layer.kernel.shape)
        rows.append((prefix + layer.name, type(layer).__name__, 2 * macs))

    visit(model, "")
    return sum(flops for _, _, flops in rows), rows
