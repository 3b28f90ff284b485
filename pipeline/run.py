"""One training run, top to bottom: data -> model -> fit (resumable, phase by phase) -> evaluate -> export.

Where things live: the splits and their tf.data pipelines in `pipeline.data.splits`, the model and its
compilation in `pipeline.training.model_setup`, callbacks and the resume point in
`pipeline.training.callbacks`, the run directory's files in `pipeline.config.rundir`, the strategy and
who-writes-what in `pipeline.distribute.workers.Cluster`, the test report in `pipeline.evaluation.evaluate`,
the SavedModel in `pipeline.serving.export`.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import keras

from pipeline import config as config_lib
from pipeline.config import Config, rundir
from pipeline.config.rundir import RunError
from pipeline.core import cpu_kernels
from pipeline.data.augmentation import Augmentation
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
    # write into a scratch copy removed at the end (pipeline/distribute/workers.py).
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

    # Data, model and phases first: a missing dataset, an input size the model refuses or a phase naming
    # an unknown layer stops the run before anything is written.
    train = config.train
    log(cpu_kernels.describe())
    modeling.configure_threads(intra_op=train.intra_op_threads, inter_op=train.inter_op_threads, log=log)
    cluster = workers.Cluster.start(config.distribute.strategy, global_batch=train.batch_size, log=log)
    with cluster.chief_first():  # one archive extraction and image scan; the other workers read the cache
        splits = Splits.from_config(config, log=log)
    with cluster.scope():  # the model's variables live on every replica
        model = build_checked_model(config, splits, log=log)
    plan = cluster.prepare_phases(
        phases.plan(train),
        scale_learning_rate=config.distribute.scale_learning_rate,
        global_batch=train.batch_size,
        base_batch=config.distribute.base_batch_size,
        log=log,
    )
    if state == "new":
        rundir.start(run_dir, config, splits.class_names, split_sizes=rundir.split_sizes(splits))
        log(f"run directory: {run_dir}")
    else:
        # Renamed classes or moved images are not trained on: the run's record is the truth.
        rundir.check_same_data(run_dir, class_names=splits.class_names, split_sizes=rundir.split_sizes(splits))
        rundir.remove_leftovers(run_dir)  # half-written temporary files of a killed process
        log(f"resuming {run_dir}")

    train_data, validation_data = cluster.datasets(splits)  # this worker's share
    monitors = monitoring.start(
        train.callbacks.tensorboard,
        run_dir,
        splits,
        model,
        validation_data,
        new=state == "new",
        resolved=config_lib.to_dict(config),
    )
    run_callbacks = callbacks.build_callbacks(
        train.callbacks,
        run_dir,
        len(splits.train[1]),
        total_phases=len(plan),
        ema=all(phase.optimizer.ema for phase in plan),
        lookahead=train.lookahead,
        steps_per_epoch=math.ceil(len(splits.train[1]) / train.batch_size),
        extra=cluster.fit_callbacks(monitors, log=log),
    )
    resume = callbacks.ResumePoint.read(run_dir)
    cluster.check_agree(splits, resume)
    resume.trim_history(run_dir)
    if resume.completed_phases >= len(plan):
        log(f"training already complete ({resume.epoch} epochs); evaluating and exporting")
        run_callbacks.restore(resume)
    elif resume.epoch:
        log(f"resuming after epoch {resume.epoch} of {train.epochs}")
    for position, phase in enumerate(plan[resume.completed_phases :]):
        fit_phase(
            model,
            phase,
            splits,
            train_data,
            validation_data,
            run_callbacks,
            config,
            cluster,
            run_dir,
            first=position == 0,
            phases_in_plan=len(plan),
            log=log,
        )
    epochs_completed = callbacks.ResumePoint.read(run_dir).epoch
    if not cluster.is_chief:  # evaluation, export and metrics.json are the chief's
        cluster.end_together()
        return {"epochs_completed": epochs_completed, "distribution": cluster.summary()}

    test = evaluate.evaluate_model(
        rundir.checkpoint_path(run_dir),
        splits,
        evaluation=config.evaluation,
        label_smoothing=train.label_smoothing,
        run_dir=run_dir,
        log=log,
    )
    report = test.pop("report", None)
    metrics = rundir.metrics_record(
        test=test,
        best_validation={run_callbacks.checkpoints.monitor: run_callbacks.checkpoints.best},
        epochs_completed=epochs_completed,
        train_seconds=run_callbacks.timer.fit_seconds,
        images_per_second=run_callbacks.timer.images_per_second,
        split_sizes={name: len(getattr(splits, name)[0]) for name in ("train", "validation", "test")},
        skipped_files=splits.skipped,
        distribution=cluster.summary(),
        # TF Serving's warm-up requests (assets.extra/): a few of the run's test images.
        export=str(export.export_run(run_dir, config=config, warmup_images=warmup.sample_images(splits)))
        if config.export.enabled
        else None,
    )
    monitoring.finish(run_dir, report, test, epochs_completed, name=config.name, callbacks=train.callbacks)
    rundir.write_metrics(run_dir, metrics)  # last: marks the run finished
    cluster.end_together()  # the other workers wait here for the chief
    log(
        f"test accuracy {test['accuracy']:.4f}, loss {test['loss']:.4f} after {epochs_completed} epochs; "
        f"{metrics['images_per_second']:.0f} images/s; metrics in {run_dir}/metrics.json"
    )
    return metrics


def fit_phase(
    model,
    phase,
    splits,
    train_data,
    validation_data,
    run_callbacks,
    config,
    cluster,
    run_dir,
    *,
    first: bool,
    phases_in_plan: int,
    log=print,
) -> None:
    """Trains one phase from its start (or the resume point, when `first`) to its last epoch.

    Raises:
        RunError: the phase diverged (`check_finite`).
    """
    train = config.train
    if phases_in_plan > 1:
        log(
            f"phase {phase.index + 1}/{phases_in_plan}: epochs {phase.start_epoch + 1}-{phase.end_epoch}, "
            f"trainable {phase.trainable}, {phase.optimizer.name} lr {phase.optimizer.learning_rate}"
        )
    phases.set_trainable(model, phase.trainable)
    steps_per_epoch = math.ceil(len(splits.train[1]) / train.batch_size)
    compile_options = dict(label_smoothing=train.label_smoothing, jit_compile=train.jit_compile)
    with cluster.scope():  # the phase's optimizer (and a cached-features head) replicated too
        modeling.compile_model(model, phase, steps_per_epoch, **compile_options)
        fitted, phase_train, phase_validation = model, train_data, validation_data
        if phase.cache_features:
            fitted, phase_train, phase_validation = modeling.cached_features_fit(
                model,
                splits.dataset("train"),
                phase,
                steps_per_epoch,
                validation_data,
                batch_size=train.batch_size,
                seed=config.seed,
                augmented=Augmentation.from_section(config.input.augment).enabled,
                log=log,
                **compile_options,
            )
    run_callbacks.save_from(model, fitted)  # checkpoints and evaluation always see the full model
    run_callbacks.backup.begin_phase(phase.index, restore=first)
    history = fitted.fit(
        phase_train,
        validation_data=phase_validation,
        initial_epoch=phase.start_epoch,
        epochs=phase.end_epoch,
        shuffle=False,
        callbacks=run_callbacks.all,
        verbose=modeling.fit_verbosity(train.verbose),
    )
    check_finite(
        history.history.get("loss", []),
        phase,
        run_dir,
        diverged=run_callbacks.backup.diverged,
        last_good_epoch=run_callbacks.checkpoints.last_good_epoch,
    )


def build_checked_model(config: Config, splits: Splits, *, log=print) -> keras.Model:
    """The run's model, with every phase's trainable setting tried on it, so that a model the config
    cannot build stops the run before anything is written.

    Raises:
        RunError: the builder refused an option or the input, the weights are missing, or a phase names an
            unknown layer.
    """
    from models import applications  # WeightsError: weights files missing, unreadable or unfit

    keras.utils.set_random_seed(config.seed)
    keras.mixed_precision.set_dtype_policy(modeling.resolve_mixed_precision(config.train.mixed_precision, log=log))
    augment = config.input.augment
    try:
        statistics = splits.channel_statistics() if config.input.normalization == "standardize" else (None, None)
        model = modeling.build_model(
            name=config.name,
            model=config.model,
            normalization=config.input.normalization,
            input_shape=splits.input_shape,
            num_classes=splits.num_classes,
            statistics=statistics,
            sample_images=splits.sample_images,
            noise_erasing=bool(augment.random_erasing) and augment.random_erasing_fill is None,
            log=log,
        )
        for phase in phases.plan(config.train):
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
