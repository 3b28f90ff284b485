"""Training throughput of cifar10_deep at batch 128, three input variants, alternated in one process.

  A  in-memory tensors, no augmentation: the training arrays through the eval transform
     (`prepare_images`: float32 in [0, 255]) once, up front, then a tf.data of ready batches, prefetched;
     the model's own first layer normalises, as in every run. The ceiling: no input work per step.
  B  our pipeline: `Splits.dataset("train", training=True)` of cifar10_aug (make_train_dataset with its
     augmentation: shift 0.1, horizontal flip; shuffled, seeded, deterministic).
  C  the Keras book recipe: `ImageDataGenerator(width_shift_range=0.1, height_shift_range=0.1,
     horizontal_flip=True).flow(x, y, batch_size=128)` fed to `fit` (needs scipy: requirements-bench.txt).

Every variant trains its own fresh model, built and compiled as pipeline.run does for cifar10_deep
(RMSprop 1e-3, categorical cross-entropy, accuracy, XLA per train.jit_compile), on the same training split
(cifar10_aug's 40,000 images). Rounds alternate A B C A B C ... so drifting machine load hits all
variants alike. One repeat = one `fit` call of warm-up + N steps; only the N steps after the warm-up are
timed (the warm-up absorbs iterator start-up). The first round only warms up (tracing) and is not
counted. Reported: median images/s over the repeats, and B/A (target >= 0.95), B/C (target >= 2).

    .venv/bin/python -m benchmarks.train_throughput [--steps 50] [--repeats 5] [--variants A,B,C]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common  # noqa: E402

MODULE = "benchmarks.train_throughput"
MODEL_EXPERIMENT = "cifar10_deep"  # model, optimizer and compile settings
PIPELINE_EXPERIMENT = "cifar10_aug"  # data split and our pipeline's augmentation (variant B)
QUICK_IMAGES = 4000
DESCRIPTIONS = {
    "A": "in-memory tensors, no augmentation",
    "B": "our pipeline, cifar10_aug augmentation",
    "C": "ImageDataGenerator.flow (book recipe)",
}
HEADERS = ["variant", "input", "images/s (median)", "min", "max", "repeats", "steps/repeat"]
RATIO_HEADERS = ["ratio", "value", "target", "met"]
TARGETS = {"B/A": 0.95, "B/C": 2.0}


def have_scipy() -> bool:
    try:
        import scipy  # noqa: F401
    except ImportError:
        return False
    return True


def load_training_data(args, temporary: Path, *, limit: int | None):
    """(pipeline config, model config, splits): cifar10_aug's train split (or synthetic stand-in)."""
    from pipeline import experiment  # noqa: F401
    from pipeline.data import splits as splits_lib

    overrides = common.data_overrides(args, temporary) + [f"train.batch_size={args.batch_size}"]
    pipeline_config = experiment.load_experiment(PIPELINE_EXPERIMENT, overrides)
    model_config = experiment.load_experiment(MODEL_EXPERIMENT, overrides)
    splits = splits_lib.Splits.from_config(pipeline_config, log=lambda *_: None)
    splits.train = common.subset(splits.train, limit, pipeline_config.seed)
    return pipeline_config, model_config, splits


def in_memory_dataset(images, labels, *, config, batch_size: int, num_classes: int):
    """Variant A: every batch prepared up front (eval transform, one-hot), served from memory."""
    import numpy as np
    import tensorflow as tf

    from pipeline.data.transform import EvalTransform

    batches = len(images) // batch_size
    images = images[: batches * batch_size]
    prepared = EvalTransform.from_input_section(config.input)(tf.constant(images)).numpy()
    one_hot = np.eye(num_classes, dtype=np.float32)[np.asarray(labels[: batches * batch_size])]
    dataset = tf.data.Dataset.from_tensor_slices(
        (prepared.reshape(batches, batch_size, *prepared.shape[1:]), one_hot.reshape(batches, batch_size, num_classes))
    )
    return dataset.prefetch(tf.data.AUTOTUNE)


def book_flow(images, labels, *, batch_size: int, num_classes: int, seed: int | None = None):
    """Variant C: the Keras book's augmentation, exactly as the book writes it (plus a seed)."""
    import numpy as np

    from pipeline import compat

    generator = compat.legacy_image_data_generator()(
        width_shift_range=0.1, height_shift_range=0.1, horizontal_flip=True
    )
    one_hot = np.eye(num_classes, dtype=np.float32)[np.asarray(labels)]
    return generator.flow(images, one_hot, batch_size=batch_size, seed=seed)


def make_inputs(variant: str, pipeline_config, splits, batch_size: int):
    images, labels = splits.train
    if variant == "A":
        return in_memory_dataset(
            images, labels, config=pipeline_config, batch_size=batch_size, num_classes=splits.num_classes
        )
    if variant == "B":
        return splits.dataset("train", training=True, batch_size=batch_size)  # splits built from pipeline_config
    if variant == "C":
        return book_flow(
            images, labels, batch_size=batch_size, num_classes=splits.num_classes, seed=pipeline_config.seed
        )
    raise ValueError(f"unknown variant {variant!r}")


def measure(
    variants: list[str],
    *,
    pipeline_config,
    model_config,
    splits,
    batch_size: int,
    warmup: int,
    steps: int,
    repeats: int,
    log=print,
) -> dict[str, list[float]]:
    """images/s of each repeat of each variant, alternating variants round by round."""
    steps_per_epoch = -(-len(splits.train[1]) // batch_size)
    setups = {}
    for variant in variants:
        model = common.build_compiled_model(
            model_config,
            input_shape=splits.input_shape,
            num_classes=splits.num_classes,
            steps_per_epoch=steps_per_epoch,
        )
        setups[variant] = (model, make_inputs(variant, pipeline_config, splits, batch_size))
    measured = {variant: [] for variant in variants}
    for round_index in range(repeats + 1):  # round 0: warm-up (tracing), not counted
        for variant in variants:
            model, data = setups[variant]
            rate = common.timed_fit(model, data, warmup=warmup, steps=steps, batch_size=batch_size)
            if round_index:
                measured[variant].append(rate)
            log(
                f"  round {round_index}{' (warm-up)' if not round_index else ''} {variant}: {rate:.1f} images/s",
                flush=True,
            )
    return measured


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = common.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=None, help="timed steps per repeat (default 50, --quick 5)")
    parser.add_argument(
        "--warmup", type=int, default=None, help="untimed steps at the start of each repeat (default 5, --quick 2)"
    )
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per variant (default 5, --quick 2)")
    parser.add_argument("--variants", default="A,B,C", help="comma-separated subset of A, B, C")
    args = parser.parse_args(argv)
    steps = args.steps or (5 if args.quick else 50)
    warmup = args.warmup or (2 if args.quick else 5)
    repeats = args.repeats or (2 if args.quick else 5)
    variants = [v.strip().upper() for v in args.variants.split(",") if v.strip()]
    if not variants or set(variants) - set(DESCRIPTIONS):
        parser.error("--variants: a comma-separated subset of A, B, C")
    if "C" in variants and not have_scipy():
        raise SystemExit(
            "variant C (ImageDataGenerator) needs scipy: "
            ".venv/bin/pip install -r requirements-bench.txt, or --variants A,B"
        )

    info = common.machine()
    print(f"machine: {common.machine_line(info)}")
    with tempfile.TemporaryDirectory(prefix="bench-train-") as temporary:
        pipeline_config, model_config, splits = load_training_data(
            args, Path(temporary), limit=QUICK_IMAGES if args.quick else None
        )
        full_batches = len(splits.train[1]) // args.batch_size
        if warmup + steps > full_batches:
            raise SystemExit(
                f"--warmup + --steps ({warmup + steps}) must fit in one epoch of full batches "
                f"({full_batches} of {args.batch_size} from {len(splits.train[1])} images)"
            )
        print(
            f"{len(splits.train[1])} training images, batch {args.batch_size}; variants {', '.join(variants)}; "
            f"{repeats} repeats of {warmup} + {steps} steps (+ a warm-up round)"
        )
        measured = measure(
            variants,
            pipeline_config=pipeline_config,
            model_config=model_config,
            splits=splits,
            batch_size=args.batch_size,
            warmup=warmup,
            steps=steps,
            repeats=repeats,
        )

    medians = {variant: common.median(rates) for variant, rates in measured.items()}
    rows = [
        [variant, DESCRIPTIONS[variant], medians[variant], min(rates), max(rates), len(rates), steps]
        for variant, rates in measured.items()
    ]
    ratio_rows = []
    for name, target in TARGETS.items():
        top, bottom = name.split("/")
        if top in medians and bottom in medians:
            value = medians[top] / medians[bottom]
            ratio_rows.append([name, f"{value:.2f}", f">= {target:g}", value >= target])
    table = common.markdown_table(HEADERS, rows)
    if ratio_rows:
        table += "\n\n" + common.markdown_table(RATIO_HEADERS, ratio_rows)
    title = f"Training throughput: {MODEL_EXPERIMENT}, batch {args.batch_size}, input variants A/B/C"
    notes = (
        f"Training split: {len(splits.train[1])} images ({PIPELINE_EXPERIMENT}'s split). Same model and "
        f"compile for every variant (fresh model each, {MODEL_EXPERIMENT}: "
        f"{model_config.train.optimizer.name} {model_config.train.optimizer.learning_rate:g}). Each repeat "
        f"times {steps} steps after {warmup} warm-up steps within one fit call; rounds alternate the "
        f"variants; a first warm-up round is not counted."
    )
    common.finish(args, title=title, module=MODULE, argv=argv, table=table, notes=notes, info=info)
    return {"images_per_second": medians, "repeats": measured, "ratios": {row[0]: float(row[1]) for row in ratio_rows}}


if __name__ == "__main__":
    main()
