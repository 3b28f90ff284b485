"""The Keras model of a run: the registered network behind its normalisation layer, compiled per phase.

Also the process-wide settings a model needs before it runs (XLA, thread pools) and the head model a
`cache_features` phase fits instead of the full model.
"""

from __future__ import annotations

from pathlib import Path

import keras

import models
from pipeline import config as config_lib
from pipeline.config import PROJECT_ROOT, Config
from pipeline.data import image_ops as preprocessing
from pipeline.training import feature_cache as features
from pipeline.training import optimizers as optim
from pipeline.training import phases


def resolve_option_paths(options: dict) -> dict:
    """Model options that name files (`weights: runs/.../best.keras`) are relative to the project, like the
    config's other paths; builders get absolute paths (models know nothing of the project layout)."""
    resolved = dict(options)
    weights = resolved.get("weights")
    if isinstance(weights, str) and weights != "imagenet":
        path = Path(weights).expanduser()
        if not path.is_absolute() and not path.exists() and (PROJECT_ROOT / path).exists():
            resolved["weights"] = str(PROJECT_ROOT / path)
    return resolved


def build_model(
    config: Config, *, input_shape, num_classes: int, statistics=(None, None), sample_images=None, log=print
) -> keras.Model:
    """The registered network behind a normalisation layer, so saved models carry their normalisation.

    Args:
        statistics: (mean, std) per channel in pixel units, for `input.normalization: standardize`.
        sample_images: a function returning training images, float32 [N, H, W, C] in pixel units (eval
            transform), for builders with a data-dependent initialisation (`builder.data_init`, e.g.
            cifar10_fast's `whiten`); called only when the builder has one.
    """
    mean, std = statistics
    options = resolve_option_paths(config.model.options)
    network = models.build_model(config.model.name, input_shape=input_shape, num_classes=num_classes, **options)
    inputs = keras.Input(shape=input_shape, name="image")
    if models.includes_preprocessing(config.model.name):
        normalize = None
        outputs = network(inputs)  # the network turns [0, 255] pixels into its backbone's input itself
    else:
        normalize = preprocessing.normalization_layer(config.input.normalization, mean=mean, std=std)
        outputs = network(normalize(inputs))
    data_init = models.data_init(config.model.name)
    if data_init is not None and sample_images is not None:
        # The network sees normalised images: the same layer the model applies turns the sample into them.
        done = data_init(network, lambda: (normalize or (lambda x: x))(sample_images()), **options)
        if done:
            log(f"model {config.model.name}: {done}")
            augment = config.input.augment
            if augment.random_erasing and augment.random_erasing_fill is None:
                # A data-fitted first layer (whitening) amplifies the noise fill's high frequencies into
                # BatchNorm statistics that clean images never match (RESULTS.md, cifar10_fast run 7).
                log(
                    f"warning: input.augment.random_erasing fills with noise, which {config.model.name}'s "
                    f"data-fitted first layer amplifies (validation accuracy collapsed in a measured run); "
                    f"set input.augment.random_erasing_fill, e.g. the training mean [125, 123, 114] for CIFAR-10"
                )
    return keras.Model(inputs, outputs, name=config.name)


def compile_model(
    model: keras.Model, config: Config, phase: phases.Phase, steps_per_epoch: int, optimizer=None
) -> None:
    """Compiles for one phase: its optimizer (fresh state, unless `optimizer` is given) and its schedule
    over its own epochs."""
    train = config.train
    if optimizer is None:
        schedule = optim.build_schedule(
            **vars_of(phase.schedule),
            learning_rate=phase.optimizer.learning_rate,
            steps_per_epoch=steps_per_epoch,
            epochs=phase.epochs,
        )
        optimizer_options = vars_of(phase.optimizer)
        optimizer_options["learning_rate"] = schedule
        optimizer = optim.build_optimizer(**optimizer_options)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=train.label_smoothing),
        metrics=["accuracy"],
        jit_compile=resolve_jit_compile(train.jit_compile),
    )


def cached_features_fit(
    model: keras.Model, splits, config: Config, phase: phases.Phase, steps_per_epoch: int, validation_data, *, log=print
):
    """What a `cache_features` phase fits instead of `model`: (head model, train data, validation data).

    The head is made of `model`'s layers and compiled with `model`'s optimizer (already compiled for
    this phase), built on the head's variables, so that the full model's checkpoints and resume state
    carry the optimizer the head trains with."""
    split = features.FeatureSplit(model)
    compile_model(split.head, config, phase, steps_per_epoch, optimizer=model.optimizer)
    model.optimizer.build(split.head.trainable_variables)
    if config.input.augment and any(config_lib.to_dict(config.input.augment).values()):
        log(
            f"{phase.key}.cache_features: this phase trains on un-augmented images (input.augment applies "
            f"to the other phases)"
        )
    train_data, validation_data = features.feature_datasets(
        split,
        splits.dataset("train"),
        validation_data,
        batch_size=config.train.batch_size,
        seed=config.seed + phase.index,
        log=log,
    )
    return split.head, train_data, validation_data


def configure_threads(*, intra_op: int, inter_op: int, log=print) -> None:
    """Applies thread settings; TensorFlow accepts them only before its runtime starts (first op)."""
    import tensorflow as tf

    threading = tf.config.threading
    for name, wanted, get, set_ in (
        (
            "intra_op_threads",
            intra_op,
            threading.get_intra_op_parallelism_threads,
            threading.set_intra_op_parallelism_threads,
        ),
        (
            "inter_op_threads",
            inter_op,
            threading.get_inter_op_parallelism_threads,
            threading.set_inter_op_parallelism_threads,
        ),
    ):
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


def fit_verbosity(setting) -> int:
    """Keras' convention for `train.verbose: auto`: a live progress bar (1) on a terminal, one line per
    epoch (2) when the output is piped or logged, where a bar would fill the log with carriage returns."""
    if setting == "auto":
        import sys

        return 1 if sys.stdout.isatty() else 2
    return int(setting)
