"""The Keras model of a run: the registered network behind its normalisation layer, compiled per phase.

Also the process-wide settings a model needs before it runs (XLA, thread pools) and the head model a
`cache_features` phase fits instead of the full model.
"""

from __future__ import annotations

from pathlib import Path

import keras

import models
from pipeline import config as config_lib
from pipeline.config import PROJECT_ROOT
from pipeline.core import cpu_kernels
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
    *,
    name: str,
    model,
    normalization: str,
    input_shape,
    num_classes: int,
    statistics=(None, None),
    sample_images=None,
    noise_erasing: bool = False,
    log=print,
) -> keras.Model:
    """The registered network behind a normalisation layer, so saved models carry their normalisation.

    Args:
        name: the Keras model's name (the experiment's).
        model: the `model` section (registered `name` and the builder's `options`).
        normalization: `input.normalization` ("unit" or "standardize").
        input_shape: (height, width, channels); num_classes: the classifier's outputs.
        statistics: (mean, std) per channel in pixel units, for `standardize`.
        sample_images: a function returning training images, float32 [N, H, W, C] in pixel units (eval
            transform), for builders with a data-dependent initialisation (`builder.data_init`, e.g.
            cifar10_fast's `whiten`); called only when the builder has one.
        noise_erasing: training erases rectangles with Keras' noise fill (a warning for data-fitted stems).
    """
    mean, std = statistics
    options = resolve_option_paths(model.options)
    network = models.build_model(model.name, input_shape=input_shape, num_classes=num_classes, **options)
    inputs = keras.Input(shape=input_shape, name="image")
    if models.includes_preprocessing(model.name):
        normalize = None
        outputs = network(inputs)  # the network turns [0, 255] pixels into its backbone's input itself
    else:
        normalize = preprocessing.normalization_layer(normalization, mean=mean, std=std)
        outputs = network(normalize(inputs))
    data_init = models.data_init(model.name)
    if data_init is not None and sample_images is not None:
        # The network sees normalised images: the same layer the model applies turns the sample into them.
        done = data_init(network, lambda: (normalize or (lambda x: x))(sample_images()), **options)
        if done:
            log(f"model {model.name}: {done}")
            if noise_erasing:
                # A data-fitted first layer (whitening) amplifies the noise fill's high frequencies into
                # BatchNorm statistics that clean images never match (RESULTS.md, cifar10_fast run 7).
                log(
                    f"warning: input.augment.random_erasing fills with noise, which {model.name}'s "
                    f"data-fitted first layer amplifies (validation accuracy collapsed in a measured run); "
                    f"set input.augment.random_erasing_fill, e.g. the training mean [125, 123, 114] for CIFAR-10"
                )
    return keras.Model(inputs, outputs, name=name)


def compile_model(
    model: keras.Model,
    phase: phases.Phase,
    steps_per_epoch: int,
    *,
    label_smoothing: float = 0.0,
    jit_compile="auto",
    optimizer=None,
) -> None:
    """Compiles for one phase: its optimizer (fresh state, unless `optimizer` is given) and its schedule
    over its own epochs, with `train.label_smoothing` and `train.jit_compile`."""
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
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
        metrics=["accuracy"],
        jit_compile=resolve_jit_compile(jit_compile),
    )


def cached_features_fit(
    model: keras.Model,
    train_data,
    phase: phases.Phase,
    steps_per_epoch: int,
    validation_data,
    *,
    batch_size: int,
    seed: int,
    augmented: bool = False,
    log=print,
    **compile_options,
):
    """What a `cache_features` phase fits instead of `model`: (head model, train data, validation data).

    The head is made of `model`'s layers and compiled with `model`'s optimizer (already compiled for
    this phase), built on the head's variables, so that the full model's checkpoints and resume state
    carry the optimizer the head trains with.

    Args:
        train_data: the training split's un-augmented pipeline (its features are computed once).
        batch_size: the feature batches'; seed: their shuffling (the phase index is added).
        augmented: the run augments its images (logged: this phase trains on un-augmented ones).
        compile_options: `compile_model`'s label_smoothing and jit_compile.
    """
    split = features.FeatureSplit(model)
    compile_model(split.head, phase, steps_per_epoch, optimizer=model.optimizer, **compile_options)
    model.optimizer.build(split.head.trainable_variables)
    if augmented:
        log(
            f"{phase.key}.cache_features: this phase trains on un-augmented images (input.augment applies "
            f"to the other phases)"
        )
    train_data, validation_data = features.feature_datasets(
        split, train_data, validation_data, batch_size=batch_size, seed=seed + phase.index, log=log
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


def resolve_mixed_precision(setting: str, *, gpus=None, cpu_bfloat16=None, log=print) -> str:
    """`train.mixed_precision` as a Keras dtype policy name.

    `auto` picks by hardware, as the Keras mixed-precision guide advises: on a GPU of compute capability
    >= 8.0 `mixed_bfloat16` (float16's speed without loss scaling), 7.x `mixed_float16` (Tensor Cores,
    with Keras' loss scaling), older ones float32; on a CPU `mixed_bfloat16` only with native bfloat16
    instructions (`cpu_kernels.cpu_has_bfloat16`), else float32. An explicit `mixed_bfloat16` on a CPU without them
    is kept, with a warning: it runs emulated, ~10x slower than float32.

    Args:
        setting: "auto", "float32", "mixed_bfloat16" or "mixed_float16".
        gpus: [(major, minor) compute capability] of the visible GPUs; looked up through TensorFlow when None.
        cpu_bfloat16: `cpu_kernels.cpu_has_bfloat16()` when None.
    """
    if gpus is None:
        import tensorflow as tf

        gpus = [
            tuple(tf.config.experimental.get_device_details(gpu).get("compute_capability") or (0, 0))
            for gpu in tf.config.list_physical_devices("GPU")
        ]
    on_cpu = not gpus
    if on_cpu and cpu_bfloat16 is None and setting in ("auto", "mixed_bfloat16"):
        cpu_bfloat16 = cpu_kernels.cpu_has_bfloat16()
    if setting == "auto":
        if on_cpu:
            policy = "mixed_bfloat16" if cpu_bfloat16 else "float32"
            why = (
                "native bfloat16 instructions" if cpu_bfloat16 else f"no {' or '.join(cpu_kernels.BFLOAT16_CPU_FLAGS)}"
            )
            log(f"train.mixed_precision auto: {policy} (CPU, {why})")
        else:
            capability = min(gpus)
            policy = (
                "mixed_bfloat16" if capability >= (8, 0) else "mixed_float16" if capability >= (7, 0) else "float32"
            )
            log(f"train.mixed_precision auto: {policy} (GPU compute capability {capability[0]}.{capability[1]})")
        return policy
    if setting == "mixed_bfloat16" and on_cpu and not cpu_bfloat16:
        log(
            "warning: train.mixed_precision mixed_bfloat16 on a CPU without bfloat16 instructions "
            f"({' or '.join(cpu_kernels.BFLOAT16_CPU_FLAGS)}): emulated, about 10x slower than float32; use auto or float32"
        )
    return setting


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
