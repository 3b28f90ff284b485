"""Evaluation of a run's best checkpoint on the test split, and the run's metrics.json."""

from __future__ import annotations

import json
from pathlib import Path

import keras

import models  # noqa: F401  (registers custom layers that saved models may hold)
from pipeline import fileio
from pipeline import config as config_lib


class RunDirError(RuntimeError):
    """A path given as a run directory is not one, or lacks a file the command needs."""


def load_run_config(run_dir: Path) -> config_lib.Config:
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise RunDirError(f"{run_dir}: not a run directory (no config.yaml). Pass a directory written by "
                          f"`python -m pipeline train`, e.g. runs/<experiment>/<timestamp>")
    try:
        return config_lib.from_dict(config_lib.yaml_load(path.read_text()) or {})
    except (config_lib.ConfigError, config_lib.yaml.YAMLError) as error:
        raise RunDirError(f"{path}: invalid run config: {error}") from None


def load_checkpoint(path: Path) -> keras.Model:
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


def read_metrics(run_dir: Path) -> dict:
    path = Path(run_dir) / "metrics.json"
    if not path.is_file():
        return {}
    return json.loads(path.read_text())


def write_metrics(run_dir: Path, metrics: dict) -> None:
    fileio.atomic_write_json(Path(run_dir) / "metrics.json", metrics)


def evaluate_run(run_dir: Path, *, log=print) -> dict:
    """`python -m pipeline evaluate RUN_DIR`: re-evaluates best.keras and rewrites metrics.json's test entry."""
    from pipeline import train

    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    splits = train.Splits(config)
    test = evaluate_model(run_dir / "checkpoints" / "best.keras", config, splits)
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
