"""One training run: data -> model -> fit (resumable) -> evaluate best checkpoint -> export.

Run directory layout (`runs/<experiment>/<YYYYmmdd-HHMMSS>/` or `--run-dir`):
    config.yaml          the fully resolved config (written once, before training)
    classes.txt          class names, one per line, index order
    checkpoints/         best.keras, last.keras (atomic writes)
    backup/              resume state (CrashSafeBackupAndRestore: weights + optimizer + callback state)
    tensorboard/         train/validation scalars, learning rate
    history.csv          one row per epoch
    metrics.json         written last: its presence marks a finished run
    export/              SavedModel(s) in TF Serving layout
"""

from __future__ import annotations

import datetime
import math
from pathlib import Path

import keras
import numpy as np

import models
from pipeline import callbacks as run_callbacks
from pipeline import config as config_lib
from pipeline import datasets, input_pipeline, optim, preprocessing
from pipeline.config import PROJECT_ROOT, Config


class RunError(RuntimeError):
    """A run cannot start or continue; the message says why and what to do."""


def default_run_dir(name: str) -> Path:
    return PROJECT_ROOT / "runs" / name / datetime.datetime.now().strftime("%Y%m%d-%H%M%S")


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------

class Splits:
    """Train/validation/test arrays of one experiment, with what the model needs to know about them."""

    def __init__(self, config: Config):
        data = datasets.load_dataset(config.dataset.name, data_dir=config.dataset.data_dir,
                                     mirror_dir=config.dataset.mirror_dir)
        self.class_names = data.class_names
        self.num_classes = len(data.class_names)
        if config.dataset.validation_split > 0:
            kept, held_out = datasets.stratified_split(data.train_labels, config.dataset.validation_split,
                                                       config.seed)
        else:
            kept, held_out = np.arange(len(data.train_labels)), np.arange(0)
        self.train = (data.train_images[kept], data.train_labels[kept])
        self.validation = (data.train_images[held_out], data.train_labels[held_out])
        self.test = (data.test_images, data.test_labels)
        height, width, channels = data.image_shape
        if config.input.image_size:
            height, width = config.input.image_size
        self.input_shape = (int(height), int(width), int(config.input.channels or channels))


def input_options(config: Config) -> dict:
    """Keyword arguments shared by every pipeline and by the export: the eval transform's settings."""
    return {"image_size": config.input.image_size, "channels": config.input.channels,
            "resize_method": config.input.resize_method}


def eval_dataset(config: Config, images, labels, num_classes: int, batch_size: int | None = None):
    return input_pipeline.make_eval_dataset(images, labels, batch_size=batch_size or config.train.batch_size,
                                            num_classes=num_classes, **input_options(config))


# --------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------

def build_model(config: Config, *, input_shape, num_classes: int, train_images=None) -> keras.Model:
    """The registered network behind a normalisation layer, so saved models carry their normalisation."""
    mean = std = None
    if config.input.normalization == "standardize":
        prepared = preprocessing.prepare_images(train_images[:1], **input_options(config))
        if prepared.shape[-1] != train_images.shape[-1]:
            raise RunError("input.normalization: standardize needs input.channels to match the dataset's "
                           "channels; use normalization: unit with a channel conversion")
        mean, std = preprocessing.channel_statistics(train_images)
    network = models.build_model(config.model.name, input_shape=input_shape, num_classes=num_classes,
                                 **config.model.options)
    inputs = keras.Input(shape=input_shape, name="image")
    normalized = preprocessing.normalization_layer(config.input.normalization, mean=mean, std=std)(inputs)
    return keras.Model(inputs, network(normalized), name=config.name)


def compile_model(model: keras.Model, config: Config, steps_per_epoch: int) -> None:
    train = config.train
    schedule = optim.build_schedule(**vars_of(train.schedule), learning_rate=train.optimizer.learning_rate,
                                    steps_per_epoch=steps_per_epoch, epochs=train.epochs)
    optimizer_options = vars_of(train.optimizer)
    optimizer_options["learning_rate"] = schedule
    model.compile(optimizer=optim.build_optimizer(**optimizer_options),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=train.label_smoothing),
                  metrics=["accuracy"], jit_compile=resolve_jit_compile(train.jit_compile))


def resolve_jit_compile(setting) -> bool:
    """`auto` means XLA on a GPU only: measured 5x slower than plain TF for cifar10_deep on a 2-core CPU
    (198 vs 1,026 images/s), while Keras' own `auto` would turn it on there too."""
    if setting == "auto":
        import tensorflow as tf
        return bool(tf.config.list_physical_devices("GPU"))
    return bool(setting)


def vars_of(section) -> dict:
    """A config section as plain keyword arguments (nested sections excluded)."""
    return {key: value for key, value in config_lib.to_dict(section).items() if not isinstance(value, dict)}


# --------------------------------------------------------------------------------------------------
# Run directory
# --------------------------------------------------------------------------------------------------

def check_run_dir(run_dir: Path, config: Config) -> str:
    """'new', 'resume' or 'finished'. Refuses a directory that belongs to another config or isn't a run."""
    config_path = run_dir / "config.yaml"
    if not run_dir.exists() or (run_dir.is_dir() and not any(run_dir.iterdir())):
        return "new"
    if not config_path.is_file():
        raise RunError(f"--run-dir {run_dir}: the directory exists and is not a run directory "
                       f"(no config.yaml); choose a new or empty directory")
    try:
        previous = config_lib.from_dict(config_lib.yaml_load(config_path.read_text()))
    except (config_lib.ConfigError, config_lib.yaml.YAMLError) as error:
        raise RunError(f"{config_path}: cannot read the run's config ({error})") from None
    if previous != config:
        old, new = _flatten(config_lib.to_dict(previous)), _flatten(config_lib.to_dict(config))
        changed = [f"{key}: {old.get(key)!r} -> {new.get(key)!r}" for key in sorted(set(old) | set(new))
                   if old.get(key) != new.get(key)]
        raise RunError(f"--run-dir {run_dir} holds a run with a different config:\n  " + "\n  ".join(changed)
                       + "\nResume it with the same experiment and --set values, or use a new --run-dir.")
    return "finished" if (run_dir / "metrics.json").is_file() else "resume"


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def build_callbacks(config: Config, run_dir: Path, images_per_epoch: int) -> tuple[list, dict]:
    options = config.train.callbacks
    checkpoints = run_callbacks.Checkpoints(run_dir / "checkpoints", monitor=options.checkpoint.monitor,
                                            mode=options.checkpoint.mode)
    timer = run_callbacks.Timer(images_per_epoch)
    stateful = {"checkpoints": checkpoints, "timer": timer}
    callback_list = [run_callbacks.LearningRateLogger(), timer]
    if options.terminate_on_nan:
        callback_list.append(keras.callbacks.TerminateOnNaN())
    callback_list.append(checkpoints)
    if options.early_stopping.enabled:
        stopper = run_callbacks.ResumableEarlyStopping(monitor=options.early_stopping.monitor,
                                                       patience=options.early_stopping.patience,
                                                       min_delta=options.early_stopping.min_delta)
        stateful["early_stopping"] = stopper
        callback_list.append(stopper)
    if options.csv_log:
        callback_list.append(keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True))
    if options.tensorboard.enabled:
        update_freq = options.tensorboard.update_freq
        callback_list.append(keras.callbacks.TensorBoard(
            str(run_dir / "tensorboard"), histogram_freq=options.tensorboard.histogram_freq,
            update_freq=update_freq))
    # Last: saves after the others updated their state, restores after their on_train_begin reset it.
    callback_list.append(run_callbacks.CrashSafeBackupAndRestore(run_dir / "backup", stateful=stateful))
    return callback_list, stateful


# --------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------

def train(config: Config, *, run_dir: Path | None = None, log=print) -> dict:
    """Trains (or resumes) one experiment and returns its metrics. See the module docstring for files.

    Raises:
        RunError: the run directory belongs to another config, or training diverged.
        datasets.DatasetError: the dataset cannot be found or read.
    """
    from pipeline import evaluate, export  # late: they import this module

    run_dir = Path(run_dir) if run_dir else default_run_dir(config.name)
    state = check_run_dir(run_dir, config)
    if state == "finished":
        log(f"{run_dir} is a finished run (metrics.json exists); nothing to do. "
            f"Use `python -m pipeline evaluate {run_dir}` to re-evaluate, or a new --run-dir to train again.")
        return evaluate.read_metrics(run_dir)

    splits = Splits(config)  # before anything is written: a missing dataset leaves no run directory
    run_dir.mkdir(parents=True, exist_ok=True)
    if state == "new":
        run_callbacks.atomic_write_text(run_dir / "classes.txt", "\n".join(splits.class_names) + "\n")
        config_lib.save_config(config, run_dir / "config.yaml")  # last: its presence marks a run dir
        log(f"run directory: {run_dir}")
    else:
        log(f"resuming {run_dir}")

    keras.utils.set_random_seed(config.seed)
    keras.mixed_precision.set_dtype_policy(config.train.mixed_precision)
    try:
        model = build_model(config, input_shape=splits.input_shape, num_classes=splits.num_classes,
                            train_images=splits.train[0])
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    batch_size = config.train.batch_size
    steps_per_epoch = math.ceil(len(splits.train[0]) / batch_size)
    compile_model(model, config, steps_per_epoch)

    augment = config_lib.to_dict(config.input.augment)
    train_data = input_pipeline.make_train_dataset(
        *splits.train, batch_size=batch_size, num_classes=splits.num_classes, seed=config.seed,
        augment=augment, shuffle_buffer=config.input.shuffle_buffer,
        deterministic=config.input.deterministic, **input_options(config))
    validation_data = (eval_dataset(config, *splits.validation, splits.num_classes)
                       if len(splits.validation[0]) else None)
    callback_list, stateful = build_callbacks(config, run_dir, len(splits.train[0]))

    metadata = run_callbacks.read_backup_metadata(run_dir / "backup")
    if metadata and metadata.get("finished"):
        log(f"training already complete ({metadata['epoch']} epochs); evaluating and exporting")
        for name, callback in stateful.items():
            callback.set_state(metadata["callbacks"].get(name, {}))
        epochs_completed = metadata["epoch"]
    else:
        if metadata:
            log(f"resuming after epoch {metadata['epoch']} of {config.train.epochs}")
        history = model.fit(train_data, validation_data=validation_data, epochs=config.train.epochs, shuffle=False,
                            callbacks=callback_list, verbose=config.train.verbose)
        losses = history.history.get("loss", [])
        if losses and not math.isfinite(losses[-1]):
            raise RunError(f"training diverged: the loss became {losses[-1]} in epoch "
                           f"{len(losses) + (metadata or {}).get('epoch', 0)}. Lower "
                           f"train.optimizer.learning_rate (now {config.train.optimizer.learning_rate}) "
                           f"or add warm-up; checkpoints of the last good epoch are in {run_dir}/checkpoints")
        epochs_completed = run_callbacks.read_backup_metadata(run_dir / "backup")["epoch"]

    timer = stateful["timer"]
    test_metrics = evaluate.evaluate_model(run_dir / "checkpoints" / "best.keras", config, splits)
    metrics = {
        "test": test_metrics,
        "best_validation": {stateful["checkpoints"].monitor: stateful["checkpoints"].best},
        "epochs_completed": epochs_completed,
        "train_seconds": round(timer.fit_seconds, 2),
        "images_per_second": round(timer.images_per_second, 1),
        "train_images": len(splits.train[0]),
        "validation_images": len(splits.validation[0]),
        "test_images": len(splits.test[0]),
    }
    if config.export.enabled:
        metrics["export"] = str(export.export_run(run_dir, config=config))
    evaluate.write_metrics(run_dir, metrics)
    log(f"test accuracy {test_metrics['accuracy']:.4f}, loss {test_metrics['loss']:.4f} after "
        f"{epochs_completed} epochs; {metrics['images_per_second']:.0f} images/s; metrics in {run_dir}/metrics.json")
    return metrics
