"""Evaluation of a run's best checkpoint on the test split (also `python -m pipeline evaluate RUN`)."""

from __future__ import annotations

from pathlib import Path

import keras

import models
from pipeline import config as config_lib
from pipeline import rundir
from pipeline.rundir import RunDirError, load_run_config, read_metrics, write_metrics  # noqa: F401
from pipeline.splits import Splits


def load_checkpoint(path: Path) -> keras.Model:
    """A saved .keras model of a run (every model module imported first: saved models may hold their
    custom layers). Raises RunDirError when the file is missing."""
    models.load_all()
    if not Path(path).is_file():
        raise RunDirError(f"{path}: checkpoint not found; the run has not finished an epoch yet. "
                          f"Resume it with `python -m pipeline train <experiment> --run-dir {Path(path).parent.parent}`")
    return keras.models.load_model(path)


def evaluate_model(checkpoint: Path, config: config_lib.Config, splits) -> dict:
    """Test loss and accuracy of a saved model, through the eval input pipeline."""
    model = load_checkpoint(checkpoint)
    data = splits.dataset("test", config)
    results = model.evaluate(data, verbose=0, return_dict=True)
    return {"accuracy": float(results["accuracy"]), "loss": float(results["loss"])}


def evaluate_run(run_dir: Path, *, log=print) -> dict:
    """`python -m pipeline evaluate RUN_DIR`: re-evaluates best.keras and rewrites metrics.json's test entry."""
    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    splits = Splits(config)
    test = evaluate_model(rundir.checkpoint_path(run_dir), config, splits)
    summary = (f"test accuracy {test['accuracy']:.4f}, loss {test['loss']:.4f} "
               f"({len(splits.test[0])} images)")
    metrics = read_metrics(run_dir)
    if not metrics:
        # metrics.json marks a finished run; an unfinished one must stay resumable.
        log(f"{summary}; the run has not finished, so metrics.json was not written")
        return {"test": test}
    metrics["test"] = test
    write_metrics(run_dir, metrics)
    log(f"{summary}; written to {run_dir / 'metrics.json'}")
    return metrics
