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
import warnings
from pathlib import Path

import keras
import numpy as np

import models
from pipeline import callbacks as run_callbacks
from pipeline import config as config_lib
from pipeline import datasets, fileio, input_pipeline, optim, phases, preprocessing
from pipeline.config import PROJECT_ROOT, Config


# Image-file pipelines drop files that fail to decode (ignore_errors), so tf.data cannot know their
# length; Keras then learns it at the end of epoch 1 and warns about "running out of data". Expected.
warnings.filterwarnings("ignore", message="Your input ran out of data")


class RunError(RuntimeError):
    """A run cannot start or continue; the message says why and what to do."""


def default_run_dir(name: str) -> Path:
    return PROJECT_ROOT / "runs" / name / datetime.datetime.now().strftime("%Y%m%d-%H%M%S")


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------

class Splits:
    """Train/validation/test data of one experiment, with what the model needs to know about it.

    In-memory datasets (MNIST, CIFAR-10) hold arrays; image-file datasets hold paths, checked once
    before training (cached): unreadable files are skipped and reported (`skipped`), or with
    `dataset.strict` the run stops before training with the full list.
    """

    def __init__(self, config: Config, *, log=print):
        options = config.dataset
        data = datasets.load_dataset(options.name, data_dir=options.data_dir, mirror_dir=options.mirror_dir,
                                     root=options.root, lists=options.lists, classes=options.classes)
        self.class_names = data.class_names
        self.num_classes = len(data.class_names)
        self.skipped: list[dict] = []
        if isinstance(data, datasets.ArrayDataset):
            self.kind = "arrays"
            parts = {"train": (data.train_images, data.train_labels), "test": (data.test_images, data.test_labels)}
            height, width, channels = data.image_shape
        else:
            self.kind = "files"
            parts = self._checked_files(data, config, log)
            if not config.input.image_size:
                raise config_lib.ConfigError(f"input.image_size: required for dataset {options.name!r}, whose "
                                             f"images have many sizes; e.g. --set input.image_size=[224,224]")
            height, width, channels = None, None, 3
        parts = self._carve(parts, config)
        self.train, self.validation, self.test = parts["train"], parts["validation"], parts["test"]
        if config.input.image_size:
            height, width = config.input.image_size
        self.input_shape = (int(height), int(width), int(config.input.channels or channels))

    def _checked_files(self, data, config: Config, log) -> dict:
        from pipeline import image_files

        every = [path for paths, _ in data.splits.values() for path in paths]
        checks = image_files.scan_images(
            every, min_size=config.dataset.min_image_size,
            cache_dir=datasets.resolve_data_dir(config.dataset.data_dir) / ".scan-cache",
            progress=True, description=f"checking {len(every)} images")
        bad = {}
        for check in checks:
            if not check.ok:
                bad[check.path] = check.reason
            elif config.dataset.skip_placeholders and check.warning and "placeholder" in check.warning:
                bad[check.path] = check.warning
        if bad and config.dataset.strict:
            listing = "\n  ".join(f"{path}: {reason}" for path, reason in bad.items())
            raise datasets.DatasetError(f"{len(bad)} unreadable image(s) and dataset.strict is true:\n  {listing}\n"
                                        f"Fix or remove them (`python -m pipeline data check ROOT --quarantine DIR` "
                                        f"moves them aside), or set dataset.strict=false to skip them.")
        for path, reason in bad.items():
            log(f"skipping {path}: {reason}")
        train_paths, train_labels = data.splits["train"]
        usable = {label for path, label in zip(train_paths, train_labels) if path not in bad}
        empty = [name for index, name in enumerate(data.class_names) if index not in usable]
        if empty:
            raise datasets.DatasetError(
                f"{data.root}: class folder(s) {', '.join(empty)} hold no readable training image; every "
                f"sub-folder of the dataset root is taken as a class. Remove or move the folder(s), or point "
                f"dataset.root at the folder that holds only class folders.")
        parts = {}
        for split, (paths, labels) in data.splits.items():
            keep = np.asarray([path not in bad for path in paths], bool)
            parts[split] = (np.asarray(paths, object)[keep] if len(paths) else np.asarray([], object),
                            np.asarray(labels, np.int64)[keep] if len(paths) else np.zeros(0, np.int64))
        self.skipped = [{"path": path, "reason": reason} for path, reason in bad.items()]
        return parts

    @staticmethod
    def _carve(parts: dict, config: Config) -> dict:
        """Fills in missing splits, stratified by class and seeded. A source with train and validation
        but no test (e.g. hymenoptera's train/ and val/) uses its validation folder as the test split, and
        validation is carved from train: the test split must never steer training."""
        parts = dict(parts)
        if "test" not in parts:
            if "validation" in parts:
                parts["test"] = parts.pop("validation")
            else:
                kept, held = datasets.stratified_split(parts["train"][1], config.dataset.test_split, config.seed + 1)
                parts["test"] = tuple(a[held] for a in parts["train"])
                parts["train"] = tuple(a[kept] for a in parts["train"])
        if "validation" not in parts:
            if config.dataset.validation_split > 0:
                kept, held = datasets.stratified_split(parts["train"][1], config.dataset.validation_split,
                                                       config.seed)
            else:
                kept, held = np.arange(len(parts["train"][1])), np.arange(0)
            parts["validation"] = tuple(a[held] for a in parts["train"])
            parts["train"] = tuple(a[kept] for a in parts["train"])
        return parts

    def dataset(self, split: str, config: Config, *, training: bool = False, batch_size: int | None = None):
        """The tf.data pipeline of one split: training (shuffled, augmented) or evaluation."""
        inputs, labels = getattr(self, split)
        batch_size = batch_size or config.train.batch_size
        common = dict(batch_size=batch_size, num_classes=self.num_classes, **input_options(config))
        if self.kind == "files":
            common.update(channels=self.input_shape[-1], cache=config.input.cache, cache_suffix=f"-{split}")
            if training:
                return input_pipeline.make_file_dataset(
                    inputs, labels, training=True, seed=config.seed, augment=config_lib.to_dict(config.input.augment),
                    shuffle_buffer=config.input.shuffle_buffer, deterministic=config.input.deterministic, **common)
            return input_pipeline.make_file_dataset(inputs, labels, training=False, **common)
        if training:
            return input_pipeline.make_train_dataset(
                inputs, labels, seed=config.seed, augment=config_lib.to_dict(config.input.augment),
                shuffle_buffer=config.input.shuffle_buffer, deterministic=config.input.deterministic, **common)
        return input_pipeline.make_eval_dataset(inputs, labels, **common)

    def channel_statistics(self, config: Config) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of the training split after the eval transform (for `standardize`),
        or those of `input.statistics` (a `data stats` JSON file)."""
        if config.input.statistics:
            return read_statistics(config.input.statistics, channels=self.input_shape[-1])
        batches = (images for images, _ in self.dataset("train", config, batch_size=256).as_numpy_iterator())
        return preprocessing.channel_statistics(batches)


def read_statistics(path: str, *, channels: int) -> tuple[list[float], list[float]]:
    """mean/std (pixel units) from a `python -m pipeline data stats` JSON file."""
    import json

    file = Path(path).expanduser()
    file = file if file.is_file() else PROJECT_ROOT / path
    try:
        stats = json.loads(file.read_text())
        mean, std = [float(v) for v in stats["mean"]], [float(v) for v in stats["std"]]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise RunError(f"input.statistics: {path} is not a `data stats` JSON file with mean and std "
                       f"({error!r})") from None
    if len(mean) != channels or len(std) != channels:
        raise RunError(f"input.statistics: {path} has {len(mean)} channels, the model takes {channels}")
    return mean, std


def input_options(config: Config) -> dict:
    """Keyword arguments of the eval transform shared by every pipeline and by the export."""
    return {"image_size": config.input.image_size, "channels": config.input.channels,
            "resize_method": config.input.resize_method, "crop": config.input.crop.mode,
            "margin": config.input.crop.margin}


# --------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------

def build_model(config: Config, *, input_shape, num_classes: int, statistics=(None, None)) -> keras.Model:
    """The registered network behind a normalisation layer, so saved models carry their normalisation.

    Args:
        statistics: (mean, std) per channel in pixel units, for `input.normalization: standardize`.
    """
    mean, std = statistics
    network = models.build_model(config.model.name, input_shape=input_shape, num_classes=num_classes,
                                 **config.model.options)
    inputs = keras.Input(shape=input_shape, name="image")
    if models.includes_preprocessing(config.model.name):
        outputs = network(inputs)  # the network turns [0, 255] pixels into its backbone's input itself
    else:
        normalized = preprocessing.normalization_layer(config.input.normalization, mean=mean, std=std)(inputs)
        outputs = network(normalized)
    return keras.Model(inputs, outputs, name=config.name)


def compile_model(model: keras.Model, config: Config, phase: phases.Phase, steps_per_epoch: int,
                  optimizer=None) -> None:
    """Compiles for one phase: its optimizer (fresh state, unless `optimizer` is given) and its schedule
    over its own epochs."""
    train = config.train
    if optimizer is None:
        schedule = optim.build_schedule(**vars_of(phase.schedule), learning_rate=phase.optimizer.learning_rate,
                                        steps_per_epoch=steps_per_epoch, epochs=phase.epochs)
        optimizer_options = vars_of(phase.optimizer)
        optimizer_options["learning_rate"] = schedule
        optimizer = optim.build_optimizer(**optimizer_options)
    model.compile(optimizer=optimizer,
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=train.label_smoothing),
                  metrics=["accuracy"], jit_compile=resolve_jit_compile(train.jit_compile))


def cached_features_fit(model: keras.Model, splits: "Splits", config: Config, phase: phases.Phase,
                        steps_per_epoch: int, validation_data, *, log=print):
    """What a `cache_features` phase fits instead of `model`: (head model, train data, validation data).

    The head is made of `model`'s layers and compiled with `model`'s optimizer (already compiled for
    this phase), built on the head's variables, so that the full model's checkpoints and resume state
    carry the optimizer the head trains with."""
    from pipeline import features

    split = features.FeatureSplit(model)
    compile_model(split.head, config, phase, steps_per_epoch, optimizer=model.optimizer)
    model.optimizer.build(split.head.trainable_variables)
    if config.input.augment and any(config_lib.to_dict(config.input.augment).values()):
        log(f"{phase.key}.cache_features: this phase trains on un-augmented images (input.augment applies "
            f"to the other phases)")
    train_data, validation_data = features.feature_datasets(
        split, splits.dataset("train", config), validation_data, batch_size=config.train.batch_size,
        seed=config.seed + phase.index, log=log)
    return split.head, train_data, validation_data


def configure_threads(*, intra_op: int, inter_op: int, log=print) -> None:
    """Applies thread settings; TensorFlow accepts them only before its runtime starts (first op)."""
    import tensorflow as tf

    threading = tf.config.threading
    for name, wanted, get, set_ in (
            ("intra_op_threads", intra_op, threading.get_intra_op_parallelism_threads,
             threading.set_intra_op_parallelism_threads),
            ("inter_op_threads", inter_op, threading.get_inter_op_parallelism_threads,
             threading.set_inter_op_parallelism_threads)):
        if wanted and get() != wanted:
            try:
                set_(wanted)
            except RuntimeError:
                log(f"train.{name}={wanted} ignored: TensorFlow was already running in this process")


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


def build_callbacks(config: Config, run_dir: Path, images_per_epoch: int,
                    total_phases: int = 1) -> tuple[list, dict]:
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
    callback_list.append(run_callbacks.CrashSafeBackupAndRestore(run_dir / "backup", stateful=stateful,
                                                                 total_phases=total_phases))
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

    configure_threads(intra_op=config.train.intra_op_threads, inter_op=config.train.inter_op_threads, log=log)
    # Data and model first: a missing dataset, an input size the model refuses or a phase naming an
    # unknown layer stops the run before anything is written.
    splits = Splits(config, log=log)
    keras.utils.set_random_seed(config.seed)
    keras.mixed_precision.set_dtype_policy(config.train.mixed_precision)
    try:
        statistics = (splits.channel_statistics(config) if config.input.normalization == "standardize"
                      else (None, None))
        model = build_model(config, input_shape=splits.input_shape, num_classes=splits.num_classes,
                            statistics=statistics)
        for phase in phases.plan(config):
            phases.set_trainable(model, phase.trainable)
            if phase.cache_features:
                from pipeline import features
                features.FeatureSplit(model)  # a model it cannot cut stops the run here, before any file
    except (ValueError, phases.PhaseError, models.applications.WeightsError) as error:
        # Builders validate their arguments (Keras style); weights may be missing or offline.
        raise RunError(f"model {config.model.name!r}: {error}") from None
    finally:
        keras.mixed_precision.set_dtype_policy("float32")

    run_dir.mkdir(parents=True, exist_ok=True)
    if state == "new":
        fileio.atomic_write_text(run_dir / "classes.txt", "\n".join(splits.class_names) + "\n")
        config_lib.save_config(config, run_dir / "config.yaml")  # last: its presence marks a run dir
        log(f"run directory: {run_dir}")
    else:
        log(f"resuming {run_dir}")
    batch_size = config.train.batch_size
    steps_per_epoch = math.ceil(len(splits.train[1]) / batch_size)
    train_data = splits.dataset("train", config, training=True)
    validation_data = splits.dataset("validation", config) if len(splits.validation[1]) else None
    plan = phases.plan(config)
    callback_list, stateful = build_callbacks(config, run_dir, len(splits.train[1]), total_phases=len(plan))
    backup = callback_list[-1]

    metadata = run_callbacks.read_backup_metadata(run_dir / "backup")
    completed = metadata.get("completed_phases", 0) if metadata else 0
    if completed >= len(plan):
        log(f"training already complete ({metadata['epoch']} epochs); evaluating and exporting")
        for name, callback in stateful.items():
            callback.set_state(metadata["callbacks"].get(name, {}))
    else:
        if metadata:
            log(f"resuming after epoch {metadata['epoch']} of {config.train.epochs}")
        first = True
        for phase in plan[completed:]:
            if len(plan) > 1:
                log(f"phase {phase.index + 1}/{len(plan)}: epochs {phase.start_epoch + 1}-{phase.end_epoch}, "
                    f"trainable {phase.trainable}, {phase.optimizer.name} lr {phase.optimizer.learning_rate}")
            phases.set_trainable(model, phase.trainable)
            compile_model(model, config, phase, steps_per_epoch)
            fitted, phase_train, phase_validation = model, train_data, validation_data
            if phase.cache_features:
                fitted, phase_train, phase_validation = cached_features_fit(
                    model, splits, config, phase, steps_per_epoch, validation_data, log=log)
            for callback in (stateful["checkpoints"], backup):
                callback.target = model if fitted is not model else None
            backup.begin_phase(phase.index, restore=first)
            first = False
            history = fitted.fit(phase_train, validation_data=phase_validation, initial_epoch=phase.start_epoch,
                                 epochs=phase.end_epoch, shuffle=False, callbacks=callback_list,
                                 verbose=config.train.verbose)
            losses = history.history.get("loss", [])
            if losses and not math.isfinite(losses[-1]):
                raise RunError(f"training diverged: the loss became {losses[-1]} in epoch {len(losses) + phase.start_epoch}. "
                               f"Lower {phase.key}.optimizer.learning_rate (now {phase.optimizer.learning_rate}) "
                               f"or add warm-up; "
                               f"checkpoints of the last good epoch are in {run_dir}/checkpoints")
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
        "skipped_files": splits.skipped,
    }
    if config.export.enabled:
        metrics["export"] = str(export.export_run(run_dir, config=config))
    evaluate.write_metrics(run_dir, metrics)
    log(f"test accuracy {test_metrics['accuracy']:.4f}, loss {test_metrics['loss']:.4f} after "
        f"{epochs_completed} epochs; {metrics['images_per_second']:.0f} images/s; metrics in {run_dir}/metrics.json")
    return metrics
