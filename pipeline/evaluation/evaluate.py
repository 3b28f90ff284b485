"""Evaluation of a run's best checkpoint on the test split (also `python -m pipeline evaluate RUN`)."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

import models
from pipeline.config import rundir
from pipeline.config.rundir import RunDirError, load_run_config, read_metrics, write_metrics  # noqa: F401
from pipeline.core import fileio
from pipeline.data.splits import Splits


def load_checkpoint(path: Path) -> keras.Model:
    """A saved .keras model of a run (every model module imported first: saved models may hold their
    custom layers).

    Raises:
        RunDirError: the file is missing, or holds non-finite weights.
        fileio.DamagedFileError: the file is there but not a complete `.keras` archive (a copy cut short);
            Keras itself would call it "not found" (keras-team/keras#20259).
    """
    models.load_all()
    # A checkpoint's optimizer may name our classes: compat's optimizers, optim's schedules (WarmUp).
    from pipeline import compat  # noqa: F401
    from pipeline.training import optimizers  # noqa: F401

    if not Path(path).is_file():
        raise RunDirError(
            f"{path}: checkpoint not found; the run has not finished an epoch yet. "
            f"Resume it with `python -m pipeline train <experiment> --run-dir {Path(path).parent.parent}`"
        )
    fileio.check_zip(
        path,
        remedy="Copy it again from the machine that trained the run; `export --checkpoint last` exports "
        "checkpoints/last.keras instead.",
    )
    model = keras.models.load_model(path)
    from pipeline.training import callbacks

    if not callbacks.all_finite(model):
        raise RunDirError(
            f"{path}: holds NaN or infinite weights (a diverged run); it cannot be evaluated or "
            f"exported. Train again with a lower learning rate or from another checkpoint."
        )
    return model


def evaluate_model(
    checkpoint: Path, splits, *, evaluation, label_smoothing: float = 0.0, run_dir: Path | None = None, log=print
) -> dict:
    """Test metrics of a saved model through the eval input pipeline, and the evaluation report.

    One prediction pass over the test split gives everything: accuracy (exactly correct / N, also what
    metrics.json records), top-k, loss (the run's loss, label smoothing included), balanced accuracy and
    calibration. With `run_dir`, RUN/evaluation/ gets report.json, per_class.csv and the figures
    (confusion matrix, the most confident mistakes, reliability diagram). `evaluation.tta: flip`
    averages each image's and its mirror's probabilities.

    Args:
        splits: the run's `Splits` (its test split through the eval transform).
        evaluation: the `evaluation` section (tta, top_k, report); label_smoothing: `train.label_smoothing`
            (the loss is the run's).

    Returns:
        {"accuracy", "loss", "top_k", "top_k_accuracy", "balanced_accuracy", "tta"} (floats, ints, str).
    """
    from pipeline.evaluation import report as evaluation_report
    from pipeline.evaluation import tensorboard_logging, tta

    model = tta.with_tta(load_checkpoint(checkpoint), evaluation.tta)
    data = splits.dataset("test")
    labels, probabilities = tensorboard_logging.predict_labelled(model, data)
    report = evaluation_report.build_report(
        labels=labels, probabilities=probabilities, class_names=splits.class_names, top_k=evaluation.top_k
    )
    one_hot = np.eye(splits.num_classes, dtype=np.float32)[labels]
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)(one_hot, probabilities)
    test = {
        "accuracy": report["accuracy"],
        "loss": float(loss),
        "top_k": report["top_k"],
        "top_k_accuracy": report["top_k_accuracy"],
        "balanced_accuracy": report["balanced_accuracy"],
        "tta": evaluation.tta,
    }
    if run_dir is not None and evaluation.report:
        worst = evaluation_report.most_confident_mistakes(labels, probabilities)
        images = _images_at(data, worst) if len(worst) else np.zeros((0, 1, 1, 3), np.float32)
        paths = evaluation_report.write_report(
            report,
            rundir.RunLayout(run_dir).evaluation,
            labels=labels,
            probabilities=probabilities,
            class_names=splits.class_names,
            images=images,
            image_indices=worst,
        )
        log(f"evaluation report: {paths['report'].parent}")
        test["report"] = report
    return test


def _images_at(dataset, indices) -> np.ndarray:
    """The images [k, H, W, C] at positions `indices` of a batched (images, labels) dataset, in that order."""
    wanted = {int(index): order for order, index in enumerate(indices)}
    found, position = {}, 0
    for images, _ in dataset:
        images = np.asarray(images)
        for offset in range(len(images)):
            if position + offset in wanted:
                found[wanted[position + offset]] = images[offset]
        position += len(images)
        if len(found) == len(wanted):
            break
    return np.stack([found[order] for order in range(len(found))])


def evaluate_run(run_dir: Path, *, log=print) -> dict:
    """`python -m pipeline evaluate RUN_DIR`: re-evaluates best.keras and rewrites metrics.json's test entry."""
    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    with rundir.exclusive(run_dir):  # not while a `train` writes it
        return _evaluate_run(run_dir, config, log)


def _evaluate_run(run_dir: Path, config, log) -> dict:
    splits = Splits.from_config(config)
    # The run's record is the truth: data renamed, reordered or grown since training is refused, not scored.
    rundir.check_same_data(run_dir, class_names=splits.class_names, split_sizes=rundir.split_sizes(splits))
    test = evaluate_model(
        rundir.checkpoint_path(run_dir),
        splits,
        evaluation=config.evaluation,
        label_smoothing=config.train.label_smoothing,
        run_dir=run_dir,
        log=log,
    )
    test.pop("report", None)
    summary = f"test accuracy {test['accuracy']:.4f}, loss {test['loss']:.4f} ({len(splits.test[0])} images)"
    metrics = read_metrics(run_dir)
    if not metrics:
        # metrics.json marks a finished run; an unfinished one must stay resumable.
        log(f"{summary}; the run has not finished, so metrics.json was not written")
        return {"test": test}
    metrics["test"] = test
    write_metrics(run_dir, metrics)
    log(f"{summary}; written to {rundir.RunLayout(run_dir).metrics}")
    return metrics
