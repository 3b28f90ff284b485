"""One training run, top to bottom: data -> model -> fit (resumable, phase by phase) -> evaluate -> export.

Where things live: splits and tf.data in `splits`, the model in `modeling`, callbacks and resume state in
`callbacks`, the run directory's files in `rundir`, the test report in `evaluate`, the SavedModel in `export`.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import keras

from pipeline.config import Config, rundir
from pipeline.config.rundir import RunError
from pipeline.data.splits import Splits
from pipeline.distribute import workers
from pipeline.evaluation import evaluate, monitoring
from pipeline.serving import export, warmup
from pipeline.training import callbacks, phases
from pipeline.training import model_setup as modeling

# Image-file pipelines drop files that fail to decode (ignore_errors), so tf.data cannot know their
# length; Keras then learns it at the end of epoch 1 and warns about "running out of data". Expected.
warnings.filterwarnings("ignore", message="Your input ran out of data")


def train(config: Config, *, run_dir: Path | None = None, log=print) -> dict:
    """Trains (or resumes) one experiment and returns its metrics (also in RUN/metrics.json).

    Raises:
        RunError: the run directory belongs to another config, the model cannot be built, or training diverged.
        datasets.DatasetError: the dataset cannot be found or read.
    """
    run_dir = Path(run_dir) if run_dir else rundir.default_run_dir(config.name)
    # One writer per run directory: in a distributed run the chief locks and writes it, the other workers
    # write into a scratch copy removed at the end (pipeline/workers.py).
    with workers.writer_dir(run_dir, strategy=config.distribute.strategy) as out_dir:
        return _train(config, out_dir, log)


def _train(config: Config, run_dir: Path, log) -> dict:
    state = rundir.check_run_dir(run_dir, config)
    if state == "finished":
        log(
            f"{run_dir} is a finished run (metrics.json exists); nothing to do. "
            f"Use `python -m pipeline evaluate {run_dir}` to re-evaluate, or a new --run-dir to train again."
        )
        return rundir.read_metrics(run_dir)

    # Data and model first: a missing dataset, an input size the model refuses or a phase naming an
    # unknown layer stops the run before anything is written.
    modeling.configure_threads(intra_op=config.train.intra_op_threads, inter_op=config.train.inter_op_threads, log=log)
    # Before any other TensorFlow op: a multi-worker strategy sets up collective ops when it starts.
    strategy = workers.start(config.distribute.strategy, global_batch=config.train.batch_size, log=log)
    with workers.chief_first(strategy):  # one archive extraction and image scan; the others read the cache
        splits = Splits(config, log=log)
    with workers.scope(strategy):  # the model's variables live on every replica
        model = build_checked_model(config, splits, log=log)
    plan = workers.prepare_phases(
        phases.plan(config),
        strategy,
        global_batch=config.train.batch_size,
        scale_learning_rate=config.distribute.scale_learning_rate,
        base_batch=config.distribute.base_batch_size,
        log=log,
    )

    if state == "new":
        rundir.start(run_dir, config, splits.class_names)
        log(f"run directory: {run_dir}")
    else:
        log(f"resuming {run_dir}")
    steps_per_epoch = math.ceil(len(splits.train[1]) / config.train.batch_size)
    shard = workers.shard(strategy)  # each worker reads its share of the files (arrays: of each batch)
    train_data = splits.dataset("train", config, training=True, shard=shard)
    validation_data = splits.dataset("validation", config, shard=shard) if len(splits.validation[1]) else None
    train_data, validation_data = workers.without_short_batches(strategy, train_data, validation_data)
    callback_list, stateful = callbacks.build_callbacks(
        config.train.callbacks,
        run_dir,
        len(splits.train[1]),
        total_phases=len(plan),
        ema=all(phase.optimizer.ema for phase in plan),
        extra=workers.fit_callbacks(
            monitoring.start(config, run_dir, splits, model, validation_data, new=state == "new"), strategy, log=log
        ),
    )
    backup = callback_list[-1]

    metadata = callbacks.read_backup_metadata(run_dir / "backup")
    completed = metadata.get("completed_phases", 0) if metadata else 0
    workers.check_workers_agree(
        strategy,
        splits=(splits.train, splits.validation, splits.test),
        resume_epoch=metadata["epoch"] if metadata else 0,
        completed_phases=completed,
    )
    if metadata:  # rows of epochs after the resume point (a kill between the CSV row and the backup)
        callbacks.trim_history(run_dir / "history.csv", epochs=metadata["epoch"])
    if completed >= len(plan):
        log(f"training already complete ({metadata['epoch']} epochs); evaluating and exporting")
        for name, callback in stateful.items():
            callback.set_state(metadata["callbacks"].get(name, {}))
    elif metadata:
        log(f"resuming after epoch {metadata['epoch']} of {config.train.epochs}")
    for position, phase in enumerate(plan[completed:]):
        if len(plan) > 1:
            log(
                f"phase {phase.index + 1}/{len(plan)}: epochs {phase.start_epoch + 1}-{phase.end_epoch}, "
                f"trainable {phase.trainable}, {phase.optimizer.name} lr {phase.optimizer.learning_rate}"
            )
        phases.set_trainable(model, phase.trainable)
        with workers.scope(strategy):  # the phase's optimizer (and a cached-features head) replicated too
            modeling.compile_model(model, config, phase, steps_per_epoch)
            fitted, phase_train, phase_validation = model, train_data, validation_data
            if phase.cache_features:
                fitted, phase_train, phase_validation = modeling.cached_features_fit(
                    model, splits, config, phase, steps_per_epoch, validation_data, log=log
                )
        for callback in callback_list:  # those that save or evaluate the full model, not the head fitted
            if hasattr(callback, "target"):
                callback.target = model if fitted is not model else None
        backup.begin_phase(phase.index, restore=position == 0)
        history = fitted.fit(
            phase_train,
            validation_data=phase_validation,
            initial_epoch=phase.start_epoch,
            epochs=phase.end_epoch,
            shuffle=False,
            callbacks=callback_list,
            verbose=modeling.fit_verbosity(config.train.verbose),
        )
        check_finite(
            history.history.get("loss", []),
            phase,
            run_dir,
            diverged=backup.diverged,
            last_good_epoch=stateful["checkpoints"].last_good_epoch,
        )
    epochs_completed = callbacks.read_backup_metadata(run_dir / "backup")["epoch"]
    if not workers.is_chief(strategy):  # evaluation, export and metrics.json are the chief's
        workers.end_together(strategy)
        return {"epochs_completed": epochs_completed, "distribution": workers.summary(strategy)}

    timer = stateful["timer"]
    test_metrics = evaluate.evaluate_model(rundir.checkpoint_path(run_dir), config, splits, run_dir=run_dir, log=log)
    report = test_metrics.pop("report", None)
    metrics = {
        "test": test_metrics,
        "best_validation": {stateful["checkpoints"].monitor: stateful["checkpoints"].best},
        "epochs_completed": epochs_completed,
        "train_seconds": round(timer.fit_seconds, 2),
        "images_per_second": round(timer.images_per_second, 1),
        "train_images": len(splits.train[0]),
        "validation_images": len(splits.validation[0]),
        "test_images": len(splits.test[0]),
        "skipped_files": splits.skipped,
        "distribution": workers.summary(strategy),
    }
    if config.export.enabled:
        warmup_images = warmup.sample_images(splits)  # TF Serving's warm-up requests: a few test images
        metrics["export"] = str(export.export_run(run_dir, config=config, warmup_images=warmup_images))
    monitoring.finish(config, run_dir, report, test_metrics, epochs_completed)
    rundir.write_metrics(run_dir, metrics)  # last: marks the run finished
    workers.end_together(strategy)  # the other workers wait here for the chief
    log(
        f"test accuracy {test_metrics['accuracy']:.4f}, loss {test_metrics['loss']:.4f} after "
        f"{epochs_completed} epochs; {metrics['images_per_second']:.0f} images/s; metrics in {run_dir}/metrics.json"
    )
    return metrics


def build_checked_model(config: Config, splits: Splits, *, log=print) -> keras.Model:
    """The run's model, with every phase's trainable setting tried on it, so that a model the config
    cannot build stops the run before anything is written.

    Raises:
        RunError: the builder refused an option or the input, the weights are missing, or a phase names an
            unknown layer.
    """
    from models import applications  # WeightsError: weights files missing, unreadable or unfit

    keras.utils.set_random_seed(config.seed)
    keras.mixed_precision.set_dtype_policy(config.train.mixed_precision)
    try:
        statistics = splits.channel_statistics(config) if config.input.normalization == "standardize" else (None, None)
        model = modeling.build_model(
            config,
            input_shape=splits.input_shape,
            num_classes=splits.num_classes,
            statistics=statistics,
            sample_images=lambda: splits.sample_images(config),
            log=log,
        )
        for phase in phases.plan(config):
            phases.set_trainable(model, phase.trainable)
            if phase.cache_features:
                modeling.features.FeatureSplit(model)  # a model it cannot cut stops the run here
    except (ValueError, phases.PhaseError, applications.WeightsError) as error:
        raise RunError(f"model {config.model.name!r}: {error}") from None
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    return model


def check_finite(
    losses: list, phase: phases.Phase, run_dir: Path, *, diverged: bool = False, last_good_epoch: int | None = None
) -> None:
    """Raises RunError when the phase diverged (a non-finite loss or weights). Nothing non-finite was
    saved: the checkpoints and the resume state are those of the last good epoch, if there is one, and
    the run is not marked finished (a second `train` resumes from that epoch, it does not evaluate)."""
    if not diverged and not (losses and not math.isfinite(losses[-1])):
        return
    where = (
        f"the last good checkpoint is {rundir.checkpoint_path(run_dir, 'last')} (epoch {last_good_epoch})"
        if last_good_epoch
        else "no epoch finished with finite weights, so there is no good checkpoint"
    )
    raise RunError(
        f"training diverged: the loss became {losses[-1] if losses else 'NaN'} in epoch "
        f"{len(losses) + phase.start_epoch}; {where}. Lower {phase.key}.optimizer.learning_rate "
        f"(now {phase.optimizer.learning_rate}), add warm-up or clipnorm, and start a new --run-dir."
    )
