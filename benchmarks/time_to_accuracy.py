"""Time to accuracy on CIFAR-10: one of our experiments (default cifar10_aug) against the Keras book recipe.

  ours:  the experiment (--experiment) through the pipeline's own pieces (Splits, build_model, compile_model, the
         training dataset with its augmentation, validation each epoch): Adam with warm-up + cosine
         decay, label smoothing, shift 0.1 + flip, for cifar10_aug. `train.epochs` is set to --ours-epochs
         so the schedule runs its full course within them (warm-up shortened only if it would not fit); the
         batch is the experiment's (--ours-batch-size to change it); a model's data-dependent init
         (cifar10_fast's `whiten`) and `evaluation.tta` apply as in `train`.
  book:  the same cifar10_deep net, RMSprop 1e-3, batch 128,
         `ImageDataGenerator(width_shift_range=0.1, height_shift_range=0.1, horizontal_flip=True)
         .flow(x_train, y_train, batch_size=128)` into `fit`, validation data as arrays.
Both: the same 40,000 train / 10,000 validation split (stratified, seed 42) for cifar10_aug (the book
recipe runs only beside an experiment with that split), validation each epoch (inside the clock). After each epoch a callback evaluates the test set (10,000
images, the eval pipeline, identical for both); its time is excluded from the clock. The clock starts
just before `fit` (tracing included). Run-directory callbacks (checkpoints, TensorBoard, CSV) are not
used by either. Prints per epoch (training seconds, test accuracy) and the first time each reaches the
target accuracy (--target, default 75%; several may be given), and book time / our time.

Long: 15 epochs x 2 recipes by default.
    .venv/bin/python -m benchmarks.time_to_accuracy [--epochs 15] [--ours-epochs N] [--book-epochs N]
    .venv/bin/python -m benchmarks.time_to_accuracy --experiment cifar10_fast --recipes ours --epochs 24 \
        --target 0.93 0.94 --evaluate-from 12
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common  # noqa: E402

MODULE = "benchmarks.time_to_accuracy"
OURS = "cifar10_aug"
BOOK_MODEL = "cifar10_deep"
QUICK_TRAIN = 4000
QUICK_EVAL = 1000
HEADERS = ["epoch", "ours s", "ours test acc", "book s", "book test acc"]
SUMMARY_HEADERS = [
    "recipe",
    "epochs",
    "final test acc",
    "best test acc",
    "target",
    "seconds to target",
    "epoch reached",
]


class EpochLog:
    """Builds the callback that evaluates the test set after each epoch, off the clock."""

    def __init__(self, name: str, test_data, start: float, log=print, tta: str = "none", evaluate_from: int = 1):
        import keras

        from pipeline.evaluation import tta as tta_lib

        outer = self
        evaluated = {}  # the model evaluated after each epoch: the trained one, or its TTA wrapper (shared weights)

        def evaluation_model(model):
            if tta == "none":
                return model
            if "model" not in evaluated:
                evaluated["model"] = tta_lib.with_tta(model, tta)
                evaluated["model"].compile(loss="categorical_crossentropy", metrics=["accuracy"])
            return evaluated["model"]

        self.rows: list[tuple[int, float, float | None]] = []  # (epoch, training seconds, test accuracy or None)
        self.excluded = 0.0
        self.start = start

        class Callback(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                now = time.perf_counter()
                elapsed = now - outer.start - outer.excluded
                accuracy = None
                if epoch + 1 >= evaluate_from:
                    result = evaluation_model(self.model).evaluate(test_data, verbose=0, return_dict=True)
                    accuracy = float(result["accuracy"])
                outer.rows.append((epoch + 1, elapsed, accuracy))
                validation = (logs or {}).get("val_accuracy")
                log(
                    f"  {name} epoch {epoch + 1}: {elapsed:.1f} s, test accuracy "
                    + ("not evaluated" if accuracy is None else f"{accuracy:.4f}")
                    + (f", validation {validation:.4f}" if validation is not None else ""),
                    flush=True,
                )
                outer.excluded += time.perf_counter() - now

        self.callback = Callback()

    def first_reaching(self, target: float):
        for epoch, seconds, accuracy in self.rows:
            if accuracy is not None and accuracy >= target:
                return epoch, seconds
        return None, None


def ours_config(args, data_overrides: list[str], epochs: int):
    """The experiment with train.epochs = epochs (the schedule spans them); warm-up scaled only if needed."""
    from pipeline import experiment

    overrides = data_overrides + list(args.set)
    if args.ours_batch_size:
        overrides.append(f"train.batch_size={args.ours_batch_size}")
    base = experiment.load_experiment(args.experiment, overrides)
    overrides.append(f"train.epochs={epochs}")
    warmup = base.train.schedule.warmup_epochs
    if warmup and warmup >= epochs:
        overrides.append(f"train.schedule.warmup_epochs={warmup * epochs / base.train.epochs:g}")
    return experiment.load_experiment(args.experiment, overrides)


def run_ours(config, splits, test_data, epochs: int, log=print, evaluate_from: int = 1) -> EpochLog:
    from pipeline import experiment  # noqa: F401
    from pipeline.training import model_setup as modeling
    from pipeline.training import phases

    statistics = splits.channel_statistics() if config.input.normalization == "standardize" else (None, None)
    steps_per_epoch = -(-len(splits.train[1]) // config.train.batch_size)
    model = common.build_compiled_model(
        config,
        input_shape=splits.input_shape,
        num_classes=splits.num_classes,
        steps_per_epoch=steps_per_epoch,
        statistics=statistics,
        sample_images=lambda: splits.sample_images(),
    )
    schedule = config.train.schedule
    optimizer = config.train.optimizer
    log(
        f"ours: {config.name}, {epochs} epochs, batch {config.train.batch_size}, {optimizer.name} "
        f"{optimizer.learning_rate:g}, schedule {schedule.name} (warm-up {schedule.warmup_epochs:g} epochs), "
        f"label smoothing {config.train.label_smoothing:g}, test TTA {config.evaluation.tta}",
        flush=True,
    )
    train_data = splits.dataset("train", training=True)
    validation_data = splits.dataset("validation")
    recorder = EpochLog(
        "ours", test_data, time.perf_counter(), log, tta=config.evaluation.tta, evaluate_from=evaluate_from
    )
    for index, phase in enumerate(phases.plan(config.train)):
        if index:  # multi-phase configs: recompile for each phase, as pipeline.run does
            phases.set_trainable(model, phase.trainable)
            modeling.compile_model(
                model,
                phase,
                steps_per_epoch,
                label_smoothing=config.train.label_smoothing,
                jit_compile=config.train.jit_compile,
            )
        model.fit(
            train_data,
            validation_data=validation_data,
            initial_epoch=phase.start_epoch,
            epochs=phase.end_epoch,
            shuffle=False,
            callbacks=[recorder.callback],
            verbose=0,
        )
    return recorder


def run_book(config, splits, test_data, epochs: int, batch_size: int, log=print) -> EpochLog:
    import numpy as np

    from benchmarks import train_throughput

    steps_per_epoch = -(-len(splits.train[1]) // batch_size)
    model = common.build_compiled_model(
        config, input_shape=splits.input_shape, num_classes=splits.num_classes, steps_per_epoch=steps_per_epoch
    )
    optimizer = config.train.optimizer
    log(
        f"book: {BOOK_MODEL}, {epochs} epochs, {optimizer.name} {optimizer.learning_rate:g}, "
        f"ImageDataGenerator shift 0.1 + flip",
        flush=True,
    )
    images, labels = splits.train
    flow = train_throughput.book_flow(
        images, labels, batch_size=batch_size, num_classes=splits.num_classes, seed=config.seed
    )
    x_validation = splits.validation[0].astype("float32")
    y_validation = np.eye(splits.num_classes, dtype="float32")[splits.validation[1]]
    recorder = EpochLog("book", test_data, time.perf_counter(), log)
    model.fit(
        flow,
        epochs=epochs,
        validation_data=(x_validation, y_validation),
        validation_batch_size=batch_size,
        callbacks=[recorder.callback],
        verbose=0,
    )
    return recorder


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = common.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=None, help="epochs of each recipe (default 15, --quick 2)")
    parser.add_argument("--ours-epochs", type=int, default=None, help="epochs of ours (default --epochs)")
    parser.add_argument("--book-epochs", type=int, default=None, help="epochs of the book recipe (default --epochs)")
    parser.add_argument("--experiment", default=OURS, help="our recipe: an experiment name or YAML file")
    parser.add_argument(
        "--ours-batch-size",
        type=int,
        default=None,
        help="batch of ours (default: the experiment's; --batch-size is the book recipe's)",
    )
    parser.add_argument("--target", type=float, nargs="+", default=[0.75], help="test accuracies to reach")
    parser.add_argument("--recipes", default="ours,book", help="comma-separated: ours, book")
    parser.add_argument(
        "--evaluate-from",
        type=int,
        default=1,
        metavar="EPOCH",
        help="ours: evaluate the test set only from this epoch on (saves the TTA passes of "
        "epochs that cannot reach the target yet)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra override for ours' config (repeatable), e.g. --set train.label_smoothing=0",
    )
    args = parser.parse_args(argv)
    epochs = args.epochs or (2 if args.quick else 15)
    ours_epochs, book_epochs = args.ours_epochs or epochs, args.book_epochs or epochs
    if min(ours_epochs, book_epochs) < 1:
        parser.error("epochs must be >= 1")
    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    if not recipes or set(recipes) - {"ours", "book"}:
        parser.error("--recipes: ours and/or book")
    if "book" in recipes:
        from benchmarks import train_throughput

        if not train_throughput.have_scipy():
            raise SystemExit(
                "the book recipe (ImageDataGenerator) needs scipy: "
                ".venv/bin/pip install -r requirements-bench.txt, or --recipes ours"
            )

    from pipeline import experiment  # noqa: F401
    from pipeline.data import splits as splits_lib

    info = common.machine()
    print(f"machine: {common.machine_line(info)}")
    recorders = {}
    with tempfile.TemporaryDirectory(prefix="bench-tta-") as temporary:
        overrides = common.data_overrides(args, Path(temporary))
        config = ours_config(args, overrides, ours_epochs)
        # The book's recipe exactly: constant RMSprop 1e-3 on 40,000 / 10,000 (the shipped cifar10_deep
        # decays the rate and trains on 45,000).
        book_config = experiment.load_experiment(
            BOOK_MODEL,
            overrides
            + [f"train.batch_size={args.batch_size}", "train.schedule.name=constant", "dataset.validation_split=0.2"],
        )
        if "book" in recipes and book_config.dataset != config.dataset:
            raise SystemExit(
                f"{config.name} and {BOOK_MODEL} use different dataset settings; both recipes must "
                f"train on the same split (use --recipes ours)"
            )
        splits = splits_lib.Splits.from_config(config, log=lambda *_: None)
        if args.quick:
            splits.train = common.subset(splits.train, QUICK_TRAIN, config.seed)
            splits.validation = common.subset(splits.validation, QUICK_EVAL, config.seed)
            splits.test = common.subset(splits.test, QUICK_EVAL, config.seed)
        print(
            f"{len(splits.train[1])} train / {len(splits.validation[1])} validation / {len(splits.test[1])} test "
            f"images",
            flush=True,
        )
        test_data = splits.dataset("test")
        if "ours" in recipes:
            recorders["ours"] = run_ours(config, splits, test_data, ours_epochs, evaluate_from=args.evaluate_from)
        if "book" in recipes:
            recorders["book"] = run_book(book_config, splits, test_data, book_epochs, args.batch_size)

    longest = max(len(r.rows) for r in recorders.values())
    rows = []
    for index in range(longest):
        row = [index + 1]
        for name in ("ours", "book"):
            entry = recorders[name].rows[index] if name in recorders and index < len(recorders[name].rows) else None
            row += [f"{entry[1]:.1f}", "" if entry[2] is None else f"{entry[2]:.4f}"] if entry else ["", ""]
        rows.append(row)
    summary, verdicts, results = [], [], {}
    for target in args.target:
        reached = {}
        for name, recorder in recorders.items():
            epoch, seconds = recorder.first_reaching(target)
            reached[name] = seconds
            accuracies = [accuracy for _, _, accuracy in recorder.rows if accuracy is not None]
            summary.append(
                [
                    name,
                    len(recorder.rows),
                    f"{accuracies[-1]:.4f}",
                    f"{max(accuracies):.4f}",
                    f"{target:.0%}",
                    "not reached" if seconds is None else f"{seconds:.1f}",
                    "" if epoch is None else epoch,
                ]
            )
        results[target] = reached
        if "book" in recorders and "ours" in recorders:
            verdicts.append(f"Time to {target:.0%} test accuracy, book / ours: {_verdict(reached, recorders)}")
    table = "\n\n".join(
        [common.markdown_table(HEADERS, rows), common.markdown_table(SUMMARY_HEADERS, summary), *verdicts]
    )
    targets = ", ".join(f"{target:.0%}" for target in args.target)
    shown = {
        "ours": f"{config.name} ({ours_epochs} epochs, batch {config.train.batch_size})",
        "book": f"the book recipe ({book_epochs} epochs, batch {args.batch_size})",
    }
    title = f"Time to {targets} test accuracy on CIFAR-10: {' vs '.join(shown[r] for r in recipes)}"
    notes = (
        f"Training seconds exclude the per-epoch test evaluation and include validation. Ours: {config.name} "
        f"with train.epochs={ours_epochs} (schedule warm-up {config.train.schedule.warmup_epochs:g} epochs), "
        f"test TTA {config.evaluation.tta}. Test accuracy on the {len(splits.test[1])}-image test split "
        f"through the eval pipeline."
    )
    common.finish(args, title=title, module=MODULE, argv=argv, table=table, notes=notes, info=info)
    first = args.target[0]
    ratio = _ratio(results[first])
    return {
        name: {
            "rows": recorder.rows,
            "seconds_to_target": results[first][name],
            "seconds_to": {target: results[target][name] for target in args.target},
        }
        for name, recorder in recorders.items()
    } | {"ratio": ratio}


def _ratio(reached: dict):
    """book seconds / our seconds to a target, or None unless both reached it."""
    return reached["book"] / reached["ours"] if reached.get("book") and reached.get("ours") else None


def _verdict(reached: dict, recorders: dict) -> str:
    ratio = _ratio(reached)
    if ratio is not None:
        return f"{ratio:.2f}"
    if reached.get("ours"):
        # The book never got there: its whole run is a lower bound of its time to the target.
        book_seconds = recorders["book"].rows[-1][1]
        return f"more than {book_seconds / reached['ours']:.2f} (the book did not reach it in its {book_seconds:.1f} s)"
    return "n/a (not reached by both)"


if __name__ == "__main__":
    main()
