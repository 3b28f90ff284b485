"""Input pipeline alone: images/s to augmented, batched training tensors, and peak memory.

Two sources of the CIFAR-10 training split, both with cifar10_aug's input settings (augmentation:
shift 0.1 + horizontal flip, 32x32x3, seed, shuffle buffer, deterministic) at batch 128:
  files:  the JPEG class folders (the mirror's cifar10-jpg.tar.gz) through `make_file_dataset`
          (decode in parallel, cache decoded images in memory, shuffle, crop/resize, batch, augment);
  arrays: the in-memory uint8 arrays (data/cifar10/cifar10.npz) through `make_train_dataset`.
The first epoch includes decoding (files) and tracing; later epochs read the cache (files) or the arrays.
Each source runs in its own fresh process so its peak RSS (ru_maxrss) is its own; "RSS before data" is
that process's peak after importing TensorFlow, before loading anything.

    .venv/bin/python -m benchmarks.input_pipeline [--epochs 4] [--quick] [--synthetic] [--no-record]
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common  # noqa: E402

MODULE = "benchmarks.input_pipeline"
EXPERIMENT = "cifar10_aug"
QUICK_IMAGES = 2000
HEADERS = [
    "source",
    "images/epoch",
    "first epoch s",
    "first epoch images/s",
    "later epochs images/s (median)",
    "epochs",
    "peak RSS MiB",
    "RSS before data MiB",
]


def _epochs(dataset, epochs: int) -> list[tuple[int, float]]:
    """(images, seconds) of each full pass; the clock includes creating the iterator."""
    passes = []
    for _ in range(epochs):
        count = 0
        start = time.perf_counter()
        for images, _labels in dataset:
            count += int(images.shape[0])
        passes.append((count, time.perf_counter() - start))
    return passes


def measure_source(source: str, options: dict) -> dict:
    """Runs in a fresh process: builds the source's training pipeline and iterates it `epochs` times."""
    import tensorflow as tf  # noqa: F401  (imported before the baseline RSS is taken)

    from pipeline import config as config_lib
    from pipeline import experiment
    from pipeline.data import datasets, input_pipeline
    from pipeline.data.transform import EvalTransform

    baseline = common.peak_rss_mib()
    config = experiment.load_experiment(EXPERIMENT, options["overrides"])
    kwargs = dict(
        batch_size=options["batch_size"],
        num_classes=10,
        seed=config.seed,
        augment=config_lib.to_dict(config.input.augment),
        shuffle_buffer=config.input.shuffle_buffer,
        deterministic=config.input.deterministic,
        transform=EvalTransform.from_input_section(config.input),
    )
    if source == "files":
        paths, labels = options["paths"], options["labels"]
        kwargs.update(
            transform=kwargs["transform"].sized(
                image_size=config.input.image_size, channels=config.input.channels or 3
            ),
            cache="memory" if config.input.cache == "auto" else config.input.cache,  # cached epochs
            cache_suffix="-train",
        )
        dataset = input_pipeline.make_file_dataset(paths, labels, training=True, **kwargs)
    else:
        data = datasets.load_dataset(
            config.dataset.name, data_dir=config.dataset.data_dir, mirror_dir=config.dataset.mirror_dir
        )
        images, labels = common.subset((data.train_images, data.train_labels), options["limit"], config.seed)
        del data
        dataset = input_pipeline.make_train_dataset(images, labels, **kwargs)
    passes = _epochs(dataset, options["epochs"])
    return {"passes": passes, "peak_rss": common.peak_rss_mib(), "baseline_rss": baseline}


def _in_fresh_process(function, *args):
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(function, *args).result()


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = common.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument(
        "--epochs", type=int, default=None, help="passes per source (first + later); default 4, --quick 2"
    )
    parser.add_argument("--sources", default="files,arrays", help="comma-separated: files, arrays")
    args = parser.parse_args(argv)
    epochs = args.epochs or (2 if args.quick else 4)
    if epochs < 2:
        parser.error("--epochs must be >= 2 (a first epoch and at least one later epoch)")
    sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    if not sources or set(sources) - {"files", "arrays"}:
        parser.error("--sources: files and/or arrays")
    limit = QUICK_IMAGES if args.quick else None

    info = common.machine()
    print(f"machine: {common.machine_line(info)}")
    rows, results = [], {}
    with tempfile.TemporaryDirectory(prefix="bench-input-") as temporary:
        temporary = Path(temporary)
        overrides = common.data_overrides(args, temporary)
        for source in sources:
            options = {"overrides": overrides, "batch_size": args.batch_size, "epochs": epochs, "limit": limit}
            if source == "files":
                paths, labels = common.cifar10_jpeg_files(args, temporary)
                paths, labels = common.subset((paths, labels), limit)
                options.update(paths=[str(p) for p in paths], labels=labels)
            print(f"{source}: {epochs} passes in a fresh process ...", flush=True)
            result = _in_fresh_process(measure_source, source, options)
            passes = result["passes"]
            first_images, first_seconds = passes[0]
            later = [count / seconds for count, seconds in passes[1:]]
            results[source] = {
                "first_images_per_second": first_images / first_seconds,
                "later_images_per_second": common.median(later),
                "peak_rss_mib": result["peak_rss"],
                "passes": passes,
            }
            rows.append(
                [
                    source,
                    first_images,
                    first_seconds,
                    first_images / first_seconds,
                    common.median(later),
                    epochs,
                    result["peak_rss"],
                    result["baseline_rss"],
                ]
            )

    table = common.markdown_table(HEADERS, rows)
    title = f"Input pipeline: CIFAR-10 train split to augmented batches ({EXPERIMENT} augmentation, batch {args.batch_size})"
    notes = (
        "files: JPEGs extracted from the mirror archive into a temporary folder just before the run (so "
        "the first epoch reads them from the page cache, not a cold disk), decoded by make_file_dataset "
        "and cached in memory; arrays: make_train_dataset on the uint8 arrays. Each source in a fresh "
        "process; peak RSS is ru_maxrss of that process."
    )
    common.finish(args, title=title, module=MODULE, argv=argv, table=table, notes=notes, info=info)
    return results


if __name__ == "__main__":
    main()
