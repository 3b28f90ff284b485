"""The experiment schema: typed, frozen dataclasses with working defaults and their validation rules.

Every field carries a one-line `help` and its rules (`choices`, `min`/`max`, `length`) in its metadata;
`pipeline.config` reads them to validate YAML and `--set` values. No TensorFlow here: the CLI validates a
config before TensorFlow is imported. An experiment file only states what differs from these defaults.
"""

from __future__ import annotations

import dataclasses

from pipeline.config import choices
from pipeline.core import cpu_kernels


def _field(
    default, *, help: str, choices=None, min=None, max=None, min_exclusive=False, max_exclusive=False, length=None
):
    """A dataclass field carrying its validation rules and a one-line description."""
    rules = {
        "help": help,
        "choices": choices,
        "min": min,
        "max": max,
        "min_exclusive": min_exclusive,
        "max_exclusive": max_exclusive,
        "length": length,
    }
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=rules)
    if dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=type(default), metadata=rules)
    return dataclasses.field(default=default, metadata=rules)


# --------------------------------------------------------------------------------------------------
# Schema. Defaults are working values: an experiment file only states what differs.
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DatasetConfig:
    name: str = _field("cifar10", help="registered dataset name (see pipeline/data/datasets.py)")
    validation_split: float = _field(
        0.1,
        min=0.0,
        max=1.0,
        max_exclusive=True,
        help="fraction of the training split held out for validation, stratified, chosen with `seed`",
    )
    test_split: float = _field(
        0.1,
        min=0.0,
        max=1.0,
        max_exclusive=True,
        help="fraction carved out as the test split when the source has none (stratified, with `seed`)",
    )
    root: str | None = _field(None, help="folder / file_list: the image folder or archive (.tar.gz, .zip)")
    lists: dict | None = _field(None, help="file_list: {train, validation, test} list files of `path label` lines")
    classes: str | None = _field(None, help="file_list: file of class names, one per line")
    strict: bool = _field(False, help="fail before training if any image is unreadable (default: skip and report)")
    min_image_size: int = _field(8, min=1, help="images whose shorter side is smaller are skipped as bad")
    max_image_pixels: int = _field(
        89_478_485,
        min=0,
        help="images whose header promises more pixels (width x height) are skipped as bad before decoding "
        "(decompression bombs); Pillow's limit by default; 0: no limit",
    )
    skip_placeholders: bool = _field(
        False, help='also skip decodable images with very few colours ("image not found" placeholders)'
    )
    data_dir: str = _field("data", help="where datasets are stored and cached (relative to the project)")
    mirror_dir: str | None = _field(
        None, help="local mirror looked at first; default: $DATA_MIRROR, else ../shared/datasets if present"
    )


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    horizontal_flip: bool = _field(False, help="random left-right flip")
    width_shift: float = _field(0.0, min=0.0, max=1.0, help="random horizontal shift, fraction of width")
    height_shift: float = _field(0.0, min=0.0, max=1.0, help="random vertical shift, fraction of height")
    fill_mode: str = _field(
        "nearest",
        choices=list(choices.FILL_MODES),
        help="how shifted-in pixels are filled (ImageDataGenerator's default: nearest)",
    )
    crop_padding: int = _field(0, min=0, help="pad each side by this many pixels, then random-crop back")
    rotation: float = _field(0.0, min=0.0, max=1.0, help="random rotation, fraction of a full turn")
    zoom: float = _field(0.0, min=0.0, max=1.0, help="random zoom in or out by up to this fraction")
    rand_augment: dict | None = _field(
        None, help="keras.layers.RandAugment {num_ops, factor} (ops drawn per image); null: off"
    )
    color_jitter: dict | None = _field(
        None, help="keras.layers.RandomColorJitter {brightness, contrast, saturation, hue} factors in [0, 1]; null: off"
    )
    random_erasing: float = _field(
        0.0,
        min=0.0,
        max=1.0,
        help="probability per image of erasing a random rectangle (keras.layers.RandomErasing); 0: off",
    )
    random_erasing_fill: list | None = _field(
        None,
        min=0.0,
        max=255.0,
        help="the erased rectangle's pixel value, [v] or [R, G, B] in 0-255 (e.g. the training mean, as Cutout "
        "fills); null: Keras' noise, which a whitening stem (cifar10_fast) amplifies into BatchNorm "
        "statistics that clean images do not have",
    )
    mix_up: float = _field(0.0, min=0.0, help="MixUp alpha (keras.layers.MixUp; mixed one-hot labels); 0: off")
    cut_mix: float = _field(0.0, min=0.0, max=1.0, help="CutMix alpha (keras.layers.CutMix); 0: off")


@dataclasses.dataclass(frozen=True)
class CropConfig:
    mode: str = _field(
        "none",
        choices=list(choices.CROP_MODES),
        help="none: resize whole image; square: square of side min(H,W)-2*margin (random in "
        "training, centred in evaluation); shorter_side: keep aspect, crop the target size; "
        "random_resized: Inception-style random area/aspect crop in training, the 0.875 "
        "centre crop in evaluation and serving",
    )
    margin: int = _field(0, min=0, help="square: pixels left out on each side of the shorter axis")
    scale: list = _field(
        [0.08, 1.0], length=2, min=0.0, max=1.0, help="random_resized: [min, max] fraction of the image area"
    )
    ratio: list = _field(
        [0.75, 1.3333],
        length=2,
        min=0.0,
        min_exclusive=True,
        help="random_resized: [min, max] aspect ratio (width / height)",
    )


@dataclasses.dataclass(frozen=True)
class InputConfig:
    image_size: list | None = _field(
        None, length=2, min=1, help="[height, width] fed to the model; null keeps the dataset's size"
    )
    channels: int | None = _field(None, choices=[1, 3], help="1 (grey) or 3 (RGB); null keeps the dataset's")
    resize_method: str = _field(
        "bilinear",
        choices=list(choices.RESIZE_METHODS),
        help="interpolation used when image_size differs from the data",
    )
    crop: CropConfig = _field(CropConfig(), help="cropping of images (image files of any size)")
    cache: str = _field(
        "auto",
        help="image files: `auto` (memory when the decoded images at the training "
        "resolution fit input.cache_budget_mb, else stream), `memory`, a file path "
        "prefix (disk cache) or `none` (stream: decode every epoch)",
    )
    cache_budget_mb: int | None = _field(
        None, min=1, help="memory `auto` may use for decoded images (MiB); null: a quarter of the machine's memory"
    )
    normalization: str = _field(
        "unit",
        choices=list(choices.NORMALIZATIONS),
        help="unit: scale to [0, 1]; standardize: per-channel mean/std of the training split",
    )
    statistics: str | None = _field(
        None,
        help="standardize with the mean/std of this stats.json (written by `data stats`) instead of "
        "computing them from the training split",
    )
    shuffle_buffer: int | None = _field(None, min=1, help="null shuffles the whole training split")
    deterministic: bool = _field(
        True,
        help="seeded, repeatable augmentation and element order (false: rotation "
        "and zoom may run on several batches at once, not repeatable; "
        "shifts, flips and crops are parallel and repeatable either way)",
    )
    augment: AugmentConfig = _field(AugmentConfig(), help="training-only augmentation")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    name: str = _field("cifar10_deep", help="registered model name (see models/)")
    options: dict = _field({}, help="extra keyword arguments for the model builder")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    name: str = _field("adam", choices=list(choices.OPTIMIZERS), help="optimizer")
    learning_rate: float = _field(1e-3, min=0.0, min_exclusive=True, help="peak learning rate")
    momentum: float = _field(0.0, min=0.0, max=1.0, max_exclusive=True, help="sgd and rmsprop momentum")
    nesterov: bool = _field(False, help="Nesterov momentum (sgd)")
    weight_decay: float | None = _field(None, min=0.0, help="decoupled weight decay (adamw default 0.004)")
    clipnorm: float | None = _field(None, min=0.0, min_exclusive=True, help="clip each gradient's norm")
    ema: float | None = _field(
        None,
        min=0.0,
        max=1.0,
        max_exclusive=True,
        help="weight EMA momentum (e.g. 0.999; null or 0: off); validation, checkpoints, "
        "evaluation and export use the averaged weights",
    )
    norm_bias_lr_factor: float = _field(
        1.0,
        min=0.0,
        min_exclusive=True,
        help="learning-rate multiple for normalization layers' biases (BatchNorm "
        "beta), not for their weight decay; airbench94 uses 64",
    )


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
    name: str = _field(
        "constant",
        choices=list(choices.SCHEDULES),
        help="learning-rate schedule, stepped every batch",
    )
    warmup_epochs: float = _field(0.0, min=0.0, help="linear warm-up (cosine and polynomial)")
    warmup_start: float = _field(
        0.0,
        min=0.0,
        max=1.0,
        max_exclusive=True,
        help="the warm-up's first rate as a fraction of the peak (airbench94: 0.2)",
    )
    boundaries: list = _field([], min=0.0, help="step: epochs at which the rate is multiplied by `factor`")
    factor: float = _field(0.1, min=0.0, min_exclusive=True, help="step: multiplier at each boundary")
    end_learning_rate: float = _field(0.0, min=0.0, help="polynomial: final rate")
    power: float = _field(1.0, min=0.0, min_exclusive=True, help="polynomial: exponent (1 = linear)")
    alpha: float = _field(0.0, min=0.0, max=1.0, help="cosine: final rate as a fraction of the peak")


@dataclasses.dataclass(frozen=True)
class PhaseConfig:
    epochs: int = _field(1, min=1, help="epochs of this phase")
    trainable: str = _field(
        "all",
        help="all | none (freeze the `backbone` layer) | from <layer> (unfreeze "
        "that backbone layer and every one after it)",
    )
    optimizer: OptimizerConfig = _field(OptimizerConfig(), help="this phase's optimizer (fresh state)")
    schedule: ScheduleConfig = _field(ScheduleConfig(), help="this phase's learning-rate schedule")
    cache_features: bool = _field(
        False,
        help="with trainable: none, compute the frozen backbone's features of the un-augmented "
        "train/validation images once and train the head on them (input.augment is not applied "
        "in this phase; much faster on a CPU)",
    )


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    monitor: str = _field("val_accuracy", help="metric that decides best.keras")
    mode: str = _field("auto", choices=["auto", "min", "max"], help="auto: max for accuracy, min otherwise")


@dataclasses.dataclass(frozen=True)
class EarlyStoppingConfig:
    enabled: bool = _field(False, help="stop when `monitor` stops improving")
    monitor: str = _field("val_loss", help="metric watched")
    patience: int = _field(5, min=1, help="epochs without improvement before stopping")
    min_delta: float = _field(0.0, min=0.0, help="smallest change that counts as an improvement")


@dataclasses.dataclass(frozen=True)
class TensorBoardConfig:
    enabled: bool = _field(True, help="write TensorBoard logs to <run>/tensorboard")
    histogram_freq: int = _field(0, min=0, help="weight histograms every N epochs (0: off)")
    update_freq: str = _field("epoch", choices=["epoch", "batch"], help="how often scalars are written")
    images: bool = _field(True, help="grids of augmented training and of evaluation images, once per run")
    confusion_matrix_freq: int = _field(
        1,
        min=0,
        help="validation confusion matrix (and per-class precision/recall up to 20 classes) every N epochs; 0: off",
    )
    hparams: bool = _field(True, help="the run's main keys and metrics in the HParams dashboard")
    graph: bool = _field(True, help="the model's op graph in the Graphs tab")
    profile_steps: list | None = _field(
        None, length=2, min=1, help="[first, last] training step of each fit to profile (Profile tab); null: off"
    )


@dataclasses.dataclass(frozen=True)
class LookaheadConfig:
    enabled: bool = _field(False, help="Lookahead on the weights (pipeline/training/lookahead.py; airbench94's)")
    every: int = _field(5, min=1, help="optimizer steps between two Lookahead steps")
    base: float = _field(0.95, min=0.0, max=1.0, help="decay schedule base**every * (step / total)**power")
    power: float = _field(3.0, min=0.0, help="the schedule's exponent (3: no averaging early, most at the end)")


@dataclasses.dataclass(frozen=True)
class CallbacksConfig:
    checkpoint: CheckpointConfig = _field(CheckpointConfig(), help="best/last checkpoints")
    early_stopping: EarlyStoppingConfig = _field(EarlyStoppingConfig(), help="early stopping")
    terminate_on_nan: bool = _field(True, help="stop the run when the loss becomes NaN")
    tensorboard: TensorBoardConfig = _field(TensorBoardConfig(), help="TensorBoard logging")
    csv_log: bool = _field(True, help="write <run>/history.csv")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    epochs: int = _field(10, min=1, help="number of epochs")
    batch_size: int = _field(128, min=1, help="images per step")
    optimizer: OptimizerConfig = _field(OptimizerConfig(), help="optimizer")
    schedule: ScheduleConfig = _field(ScheduleConfig(), help="learning-rate schedule")
    phases: list[PhaseConfig] | None = _field(
        None,
        help="successive phases, each recompiled with its own optimizer, schedule and trainable "
        "layers (fine-tuning); their epochs must add up to train.epochs",
    )
    label_smoothing: float = _field(0.0, min=0.0, max=1.0, max_exclusive=True, help="label smoothing")
    lookahead: LookaheadConfig = _field(LookaheadConfig(), help="Lookahead (slow weights every k steps)")
    class_weight: str | dict = _field(
        "none",
        help="none | balanced (n / (classes * count) on the training "
        "split) | {class name: weight}: loss weights per class",
    )
    jit_compile: bool | str = _field("auto", choices=[True, False, "auto"], help="XLA compilation")
    mixed_precision: str = _field(
        "float32",
        choices=["float32", "mixed_bfloat16", "mixed_float16", "auto"],
        help="Keras dtype policy; auto: mixed_bfloat16 on a CPU with bfloat16 instructions or a GPU of compute "
        "capability >= 8, mixed_float16 on 7.x, else float32",
    )
    intra_op_threads: int = _field(0, min=0, help="threads inside one op (0: TensorFlow's choice, all cores)")
    inter_op_threads: int = _field(0, min=0, help="ops run at once (0: TensorFlow's choice)")
    cpu_kernels: str = _field(
        "onednn",
        choices=list(cpu_kernels.VALUES),
        help="TensorFlow's CPU kernels for training (x86): onednn (1.15-1.64x faster training of the shipped "
        "models on an AVX2 CPU), eigen, auto (TensorFlow's rule: oneDNN only on CPUs with AVX512_VNNI, "
        "AVX512_BF16 or AMX); a TF_ENABLE_ONEDNN_OPTS in the environment wins",
    )
    verbose: int | str = _field(
        "auto",
        choices=["auto", 0, 1, 2],
        help="fit output: auto (a progress bar on a terminal, a line per epoch "
        "when piped), 0 silent, 1 bar, 2 a line per epoch",
    )
    callbacks: CallbacksConfig = _field(CallbacksConfig(), help="callbacks")


@dataclasses.dataclass(frozen=True)
class EvaluationConfig:
    top_k: int = _field(5, min=1, help="top-k accuracy's k (capped at the class count)")
    tta: str = _field(
        "none",
        choices=list(choices.TTA_MODES),
        help="test-time augmentation in evaluation: flip averages each image's and its mirror's "
        "probabilities; flip_translate adds both shifted 1 pixel (6 views, airbench94)",
    )
    report: bool = _field(True, help="write RUN/evaluation/ (report.json, per_class.csv, figures)")


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    enabled: bool = _field(True, help="write a SavedModel at the end of training")
    top_k: int = _field(5, min=1, help="classes returned by the serving signature")
    tta: str = _field(
        "none",
        choices=list(choices.TTA_MODES),
        help="test-time augmentation inside the SavedModel: flip averages each image's and its "
        "mirror's probabilities; flip_translate adds both shifted 1 pixel (6 views)",
    )


@dataclasses.dataclass(frozen=True)
class DistributeConfig:
    strategy: str = _field(
        "auto",
        choices=list(choices.STRATEGIES),
        help="tf.distribute strategy: auto (multi_worker when TF_CONFIG names several workers, "
        "mirrored with several GPUs, else default)",
    )
    scale_learning_rate: bool = _field(
        False,
        help="linear scaling rule (Goyal et al. 2017): learning rates x train.batch_size / distribute.base_batch_size",
    )
    base_batch_size: int = _field(256, min=1, help="the global batch the configured learning rates are for")


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    name: str = _field("tpe", choices=["tpe", "random", "grid"], help="Optuna sampler that proposes the trials")
    seed: int | None = _field(0, min=0, help="the sampler's seed (null: a random one)")


@dataclasses.dataclass(frozen=True)
class PrunerConfig:
    name: str = _field(
        "median", choices=["median", "hyperband", "none"], help="stops hopeless trials from their per-epoch metric"
    )
    warmup_epochs: int = _field(1, min=0, help="median: epochs a trial always trains before it may be pruned")
    startup_trials: int = _field(2, min=0, help="median: finished trials needed before any pruning")


@dataclasses.dataclass(frozen=True)
class TuneConfig:
    """`python -m pipeline tune` only; `train` ignores this section."""

    study_name: str = _field("search", help="the study: runs/<experiment>/tune-<study_name>/ and its storage name")
    metric: str = _field("val_accuracy", help="a per-epoch metric of history.csv; a trial's value is its best epoch")
    direction: str = _field(
        "auto", choices=["auto", "maximize", "minimize"], help="auto: minimize a loss, maximize anything else"
    )
    trials: int = _field(20, min=1, help="COMPLETE + PRUNED trials of the whole study, across workers and restarts")
    max_failures: int = _field(3, min=1, help="this many failed trials in a row stop the search")
    baseline: bool = _field(True, help="the first trial runs the experiment's own values of the space's keys")
    sampler: SamplerConfig = _field(SamplerConfig(), help="how trials are proposed")
    pruner: PrunerConfig = _field(PrunerConfig(), help="how trials are stopped early")
    space: dict = _field(
        {},
        help="{dotted config key: {type: float|int|categorical, low, high, log, step, choices}}",
    )


@dataclasses.dataclass(frozen=True)
class Config:
    name: str = _field("experiment", help="experiment name (default: the YAML file's stem)")
    seed: int = _field(42, min=0, help="seeds data split, shuffling, augmentation and weights")
    dataset: DatasetConfig = _field(DatasetConfig(), help="dataset")
    input: InputConfig = _field(InputConfig(), help="input pipeline")
    model: ModelConfig = _field(ModelConfig(), help="model")
    train: TrainConfig = _field(TrainConfig(), help="training")
    evaluation: EvaluationConfig = _field(
        EvaluationConfig(), help="evaluation of the best checkpoint on the test split"
    )
    distribute: DistributeConfig = _field(DistributeConfig(), help="several GPUs or machines (tf.distribute)")
    export: ExportConfig = _field(ExportConfig(), help="export")
    tune: TuneConfig = _field(TuneConfig(), help="hyperparameter search (`python -m pipeline tune`; train ignores it)")
