"""What a run records besides Keras' scalars: TensorBoard's images, confusion matrices, hparams, config text,
op graph and profiler (via `tensorboard_logging`), `curves.png`, and the test evaluation in TensorBoard.

`start` is called when a run starts or resumes (it writes the once-per-run summaries only for a new run)
and returns the callbacks; `finish` after the test evaluation.
"""

from __future__ import annotations

import os
from pathlib import Path

import keras

from pipeline import config as config_lib
from pipeline.config import rundir
from pipeline.data.splits import Splits
from pipeline.evaluation import report as evaluation_report
from pipeline.evaluation import tensorboard_logging

# The resolved config's keys shown as hparams; the same for every run, because TensorBoard takes the
# HParams table's columns from the first run it reads.
HPARAM_KEYS = (
    "dataset.name",
    "model.name",
    "seed",
    "input.image_size",
    "input.crop.mode",
    "train.epochs",
    "train.batch_size",
    "train.optimizer.name",
    "train.optimizer.learning_rate",
    "train.schedule.name",
    "train.label_smoothing",
    "train.mixed_precision",
    "evaluation.tta",
)


def run_callbacks(
    log_dir: os.PathLike,
    *,
    class_names,
    sample_data,
    validation_data,
    images: bool = True,
    confusion_matrix_freq: int = 1,
    profile_steps=None,
) -> list:
    """The callbacks a run adds beside Keras' TensorBoard (the chief's only, when distributed).

    Args:
        sample_data: a training pipeline instance that `fit` does not use (for the augmented samples).
        validation_data: the validation pipeline, or None.
        confusion_matrix_freq: every N epochs; 0 writes none.
        profile_steps: [first, last] training step to profile, or None.
    """
    callbacks = []
    if images:
        callbacks.append(
            tensorboard_logging.InputSamples(
                log_dir, class_names=class_names, train_data=sample_data, eval_data=validation_data
            )
        )
    if confusion_matrix_freq and validation_data is not None:
        callbacks.append(
            tensorboard_logging.ValidationConfusion(
                log_dir, validation_data=validation_data, class_names=class_names, freq=confusion_matrix_freq
            )
        )
    if profile_steps:
        callbacks.append(tensorboard_logging.ProfileSteps(log_dir, steps=list(profile_steps)))
    return callbacks


def write_run_start(
    log_dir: os.PathLike,
    *,
    flat_config: dict,
    config_yaml: str,
    model: keras.Model | None,
    trial_id: str,
    hparams: bool = True,
) -> None:
    """Once, when a run starts: its hparams session (`HPARAM_KEYS` of `flat_config`, a {dotted key: value}
    dict), its resolved config as text and, given a model, its op graph."""
    if hparams:
        tensorboard_logging.write_hparams(
            log_dir, {key: flat_config.get(key) for key in HPARAM_KEYS}, trial_id=trial_id
        )
    tensorboard_logging.write_config_text(log_dir, config_yaml)
    if model is not None:
        tensorboard_logging.write_op_graph(log_dir, model)


def start(
    options, run_dir: Path, splits: Splits, model: keras.Model, validation_data, *, new: bool, resolved: dict
) -> list:
    """What TensorBoard shows beyond Keras' scalars: written once for a new run (hparams, config, op
    graph), and the callbacks (input samples, validation confusion matrix, profiler).

    Args:
        options: the `train.callbacks.tensorboard` section.
        resolved: the run's resolved config as a plain dict (`config.to_dict`), shown as text and hparams.
    """
    if not options.enabled:
        return []
    log_dir = rundir.RunLayout(run_dir).tensorboard
    if new:
        write_run_start(
            log_dir,
            flat_config=rundir.flatten(resolved),
            config_yaml=config_lib.yaml.safe_dump(resolved, sort_keys=False, default_flow_style=None),
            model=model if options.graph else None,
            trial_id=f"{resolved['name']}/{run_dir.name}",
            hparams=options.hparams,
        )
    return run_callbacks(
        log_dir,
        class_names=splits.class_names,
        validation_data=validation_data,
        images=options.images,
        sample_data=splits.dataset("train", training=True) if options.images else None,
        confusion_matrix_freq=options.confusion_matrix_freq,
        profile_steps=options.profile_steps,
    )


def finish(run_dir: Path, report: dict | None, test: dict, epochs: int, *, name: str, callbacks) -> None:
    """RUN/curves.png from history.csv, and the test evaluation in TensorBoard's test/ run.

    Args:
        name: the experiment's (the curves' title); callbacks: the `train.callbacks` section.
    """
    layout = rundir.RunLayout(run_dir)
    if callbacks.csv_log and layout.history.is_file():
        evaluation_report.plot_curves(layout.history, layout.curves, title=name)
    if report is not None and callbacks.tensorboard.enabled:
        tensorboard_logging.write_evaluation_summary(
            layout.tensorboard, report, step=max(epochs - 1, 0), loss=test["loss"]
        )
