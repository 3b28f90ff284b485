"""Experiment configuration: typed defaults, YAML with `base:` inheritance, `--set` overrides, validation.

The config is parsed exactly once, at the edge (the CLI). Everything below it takes plain keyword
arguments. Order: dataclass defaults <- YAML chain (base first) <- `--set` overrides -> strict
validation (unknown keys, types, ranges, choices) -> frozen dataclasses.

Every user mistake raises `ConfigError` whose message names the dotted key, what is allowed, what was
received and, for near-misses, "did you mean ...". The CLI turns it into exit code 2 without a traceback.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Optional, Union

import yaml

PROJECT_ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS_DIR = PROJECT_ROOT / "experiments"


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-3` as a float (YAML 1.1 needs `1.0e-3`; people write `1e-3`)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                |\.[0-9_]+(?:[eE][-+][0-9]+)?
                |[-+]?\.(?:inf|Inf|INF)
                |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def yaml_load(text: str):
    """Parses YAML text the way experiment files are read."""
    return yaml.load(text, Loader=_Loader)


class ConfigError(ValueError):
    """A user error in an experiment file or an override. The message is meant for the user as is."""


def _field(default, *, help: str, choices=None, min=None, max=None, min_exclusive=False,
           max_exclusive=False, length=None):
    """A dataclass field carrying its validation rules and a one-line description."""
    rules = {"help": help, "choices": choices, "min": min, "max": max,
             "min_exclusive": min_exclusive, "max_exclusive": max_exclusive, "length": length}
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
    name: str = _field("cifar10", help="registered dataset name (see pipeline/datasets.py)")
    validation_split: float = _field(
        0.1, min=0.0, max=1.0, max_exclusive=True,
        help="fraction of the training split held out for validation, stratified, chosen with `seed`")
    test_split: float = _field(
        0.1, min=0.0, max=1.0, max_exclusive=True,
        help="fraction carved out as the test split when the source has none (stratified, with `seed`)")
    root: Optional[str] = _field(None, help="folder / file_list: the image folder or archive (.tar.gz, .zip)")
    lists: Optional[dict] = _field(None, help="file_list: {train, validation, test} list files of `path label` lines")
    classes: Optional[str] = _field(None, help="file_list: file of class names, one per line")
    strict: bool = _field(False, help="fail before training if any image is unreadable (default: skip and report)")
    min_image_size: int = _field(8, min=1, help="images whose shorter side is smaller are skipped as bad")
    skip_placeholders: bool = _field(
        False, help="also skip decodable images with very few colours (\"image not found\" placeholders)")
    data_dir: str = _field("data", help="where datasets are stored and cached (relative to the project)")
    mirror_dir: Optional[str] = _field(
        None, help="local mirror looked at first; default: $DATA_MIRROR, else ../shared/datasets if present")


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    horizontal_flip: bool = _field(False, help="random left-right flip")
    width_shift: float = _field(0.0, min=0.0, max=1.0, help="random horizontal shift, fraction of width")
    height_shift: float = _field(0.0, min=0.0, max=1.0, help="random vertical shift, fraction of height")
    fill_mode: str = _field("nearest", choices=["nearest", "reflect", "constant", "wrap"],
                            help="how shifted-in pixels are filled (ImageDataGenerator's default: nearest)")
    crop_padding: int = _field(0, min=0, help="pad each side by this many pixels, then random-crop back")
    rotation: float = _field(0.0, min=0.0, max=1.0, help="random rotation, fraction of a full turn")
    zoom: float = _field(0.0, min=0.0, max=1.0, help="random zoom in or out by up to this fraction")


@dataclasses.dataclass(frozen=True)
class CropConfig:
    mode: str = _field("none", choices=["none", "square", "shorter_side"],
                       help="none: resize whole image; square: square of side min(H,W)-2*margin (random in "
                            "training, centred in evaluation); shorter_side: keep aspect, crop the target size")
    margin: int = _field(0, min=0, help="square: pixels left out on each side of the shorter axis")


@dataclasses.dataclass(frozen=True)
class InputConfig:
    image_size: Optional[list] = _field(
        None, length=2, min=1, help="[height, width] fed to the model; null keeps the dataset's size")
    channels: Optional[int] = _field(None, choices=[1, 3], help="1 (grey) or 3 (RGB); null keeps the dataset's")
    resize_method: str = _field("bilinear", choices=["bilinear", "area", "nearest", "bicubic"],
                                help="interpolation used when image_size differs from the data")
    crop: CropConfig = _field(CropConfig(), help="cropping of images (image files of any size)")
    cache: str = _field("memory", help="image files: cache decoded images in `memory`, in a file at a path, "
                                       "or `none`")
    normalization: str = _field("unit", choices=["unit", "standardize"],
                                help="unit: scale to [0, 1]; standardize: per-channel mean/std of the training split")
    statistics: Optional[str] = _field(
        None, help="standardize with the mean/std of this stats.json (written by `data stats`) instead of "
                   "computing them from the training split")
    shuffle_buffer: Optional[int] = _field(None, min=1, help="null shuffles the whole training split")
    deterministic: bool = _field(True, help="seeded, repeatable augmentation and element order (false: rotation "
                                            "and zoom may run on several batches at once, not repeatable; "
                                            "shifts, flips and crops are parallel and repeatable either way)")
    augment: AugmentConfig = _field(AugmentConfig(), help="training-only augmentation")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    name: str = _field("cifar10_deep", help="registered model name (see models/)")
    options: dict = _field({}, help="extra keyword arguments for the model builder")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    name: str = _field("adam", choices=["sgd", "adam", "adamw", "rmsprop"], help="optimizer")
    learning_rate: float = _field(1e-3, min=0.0, min_exclusive=True, help="peak learning rate")
    momentum: float = _field(0.0, min=0.0, max=1.0, max_exclusive=True, help="sgd and rmsprop momentum")
    nesterov: bool = _field(False, help="Nesterov momentum (sgd)")
    weight_decay: Optional[float] = _field(None, min=0.0, help="decoupled weight decay (adamw default 0.004)")
    clipnorm: Optional[float] = _field(None, min=0.0, min_exclusive=True, help="clip each gradient's norm")


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
    name: str = _field("constant", choices=["constant", "step", "polynomial", "cosine"],
                       help="learning-rate schedule, stepped every batch")
    warmup_epochs: float = _field(0.0, min=0.0, help="linear warm-up from 0 (cosine only)")
    boundaries: list = _field([], min=0.0, help="step: epochs at which the rate is multiplied by `factor`")
    factor: float = _field(0.1, min=0.0, min_exclusive=True, help="step: multiplier at each boundary")
    end_learning_rate: float = _field(0.0, min=0.0, help="polynomial: final rate")
    power: float = _field(1.0, min=0.0, min_exclusive=True, help="polynomial: exponent (1 = linear)")
    alpha: float = _field(0.0, min=0.0, max=1.0, help="cosine: final rate as a fraction of the peak")


@dataclasses.dataclass(frozen=True)
class PhaseConfig:
    epochs: int = _field(1, min=1, help="epochs of this phase")
    trainable: str = _field("all", help="all | none (freeze the `backbone` layer) | from <layer> (unfreeze "
                                        "that backbone layer and every one after it)")
    optimizer: OptimizerConfig = _field(OptimizerConfig(), help="this phase's optimizer (fresh state)")
    schedule: ScheduleConfig = _field(ScheduleConfig(), help="this phase's learning-rate schedule")
    cache_features: bool = _field(
        False, help="with trainable: none, compute the frozen backbone's features of the un-augmented "
                    "train/validation images once and train the head on them (input.augment is not applied "
                    "in this phase; much faster on a CPU)")


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
    phases: Optional[list[PhaseConfig]] = _field(
        None, help="successive phases, each recompiled with its own optimizer, schedule and trainable "
                   "layers (fine-tuning); their epochs must add up to train.epochs")
    label_smoothing: float = _field(0.0, min=0.0, max=1.0, max_exclusive=True, help="label smoothing")
    jit_compile: Union[bool, str] = _field("auto", choices=[True, False, "auto"], help="XLA compilation")
    mixed_precision: str = _field("float32", choices=["float32", "mixed_bfloat16", "mixed_float16"],
                                  help="Keras dtype policy")
    intra_op_threads: int = _field(0, min=0, help="threads inside one op (0: TensorFlow's choice, all cores)")
    inter_op_threads: int = _field(0, min=0, help="ops run at once (0: TensorFlow's choice)")
    verbose: int = _field(2, choices=[0, 1, 2], help="Keras fit verbosity: 0 silent, 1 bar, 2 a line per epoch")
    callbacks: CallbacksConfig = _field(CallbacksConfig(), help="callbacks")


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    enabled: bool = _field(True, help="write a SavedModel at the end of training")
    top_k: int = _field(5, min=1, help="classes returned by the serving signature")


@dataclasses.dataclass(frozen=True)
class Config:
    name: str = _field("experiment", help="experiment name (default: the YAML file's stem)")
    seed: int = _field(42, min=0, help="seeds data split, shuffling, augmentation and weights")
    dataset: DatasetConfig = _field(DatasetConfig(), help="dataset")
    input: InputConfig = _field(InputConfig(), help="input pipeline")
    model: ModelConfig = _field(ModelConfig(), help="model")
    train: TrainConfig = _field(TrainConfig(), help="training")
    export: ExportConfig = _field(ExportConfig(), help="export")


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------

def resolve_experiment_path(name_or_path: str) -> Path:
    """Maps `cifar10_aug` to experiments/cifar10_aug.yaml; a path is used as given."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        if not candidate.is_file():
            raise ConfigError(f"experiment file not found: {candidate}")
        return candidate
    path = EXPERIMENTS_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml"))
        raise ConfigError(f"unknown experiment {name_or_path!r}{_did_you_mean(name_or_path, known)}. "
                          f"Known experiments: {', '.join(known)}; or pass a path to a .yaml file.")
    return path


def _read_yaml(path: Path) -> dict:
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror}") from None
    try:
        data = yaml_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(f"{path}:{where}: invalid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: an experiment file must be a mapping of keys, "
                          f"received a {type(data).__name__}")
    return data


def _load_chain(path: Path, seen: tuple = ()) -> dict:
    """Reads `path` and, recursively, the file named by its `base:` key (relative to it)."""
    path = path.resolve()
    if path in seen:
        chain = " -> ".join(str(p.name) for p in (*seen, path))
        raise ConfigError(f"{path}: `base:` inheritance loops: {chain}")
    data = _read_yaml(path)
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: base: expected a file name, received {base!r}")
    base_path = (path.parent / base)
    if not base_path.suffix:
        base_path = base_path.with_suffix(".yaml")
    if not base_path.is_file():
        raise ConfigError(f"{path}: base: file not found: {base_path}")
    return deep_merge(_load_chain(base_path, (*seen, path)), data)


def deep_merge(base: dict, override: dict) -> dict:
    """Dicts merge key by key; any other value (lists included) replaces the base value."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.epochs=3` -> (["train", "epochs"], 3). Values are YAML scalars, so they are typed."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set expects dotted.key=value, received {text!r}")
    try:
        value = yaml_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw  # not valid YAML on its own (e.g. `a: b`): keep the text; validation judges it
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    data = dict(data)
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for depth, key in enumerate(keys[:-1]):
            child = node.get(key)
            if child is None:
                child = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"--set {text}: {'.'.join(keys[:depth + 1])} is not a section")
            node[key] = child = dict(child)
            node = child
        node[keys[-1]] = value
    return data


def load_config(name_or_path: str, overrides: list[str] = ()) -> Config:
    """Loads, merges and validates an experiment. Raises ConfigError on any user error."""
    path = resolve_experiment_path(name_or_path)
    data = _load_chain(path)
    data.setdefault("name", path.stem)
    data = apply_overrides(data, list(overrides))
    return from_dict(data)


def from_dict(data: dict) -> Config:
    config = _build(Config, data, "")
    _check_cross_field_rules(config)
    return config


def to_dict(config) -> dict:
    return dataclasses.asdict(config)


def dump_yaml(config: Config) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False, default_flow_style=None)


def save_config(config: Config, path: os.PathLike) -> None:
    Path(path).write_text("# Fully resolved configuration of this run (defaults + YAML + --set).\n"
                          + dump_yaml(config))


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------

def _did_you_mean(word: str, candidates, prefix: str = "") -> str:
    close = difflib.get_close_matches(str(word), [str(c) for c in candidates], n=1, cutoff=0.6)
    return f" (did you mean {prefix + close[0]!r}?)" if close else ""


def _describe(value) -> str:
    return f"{value!r} ({type(value).__name__})"


def _build(cls, data, path: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a section (mapping of keys), "
                          f"received {_describe(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [key for key in data if key not in fields]
    if unknown:
        key = unknown[0]
        dotted = f"{path}.{key}" if path else str(key)
        raise ConfigError(f"unknown key {dotted!r}{_did_you_mean(key, fields, f'{path}.' if path else '')}. "
                          f"Allowed keys{' in ' + path if path else ''}: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, field in fields.items():
        if name not in data:
            continue
        dotted = f"{path}.{name}" if path else name
        values[name] = _check_value(data[name], hints[name], field.metadata, dotted)
    return cls(**values)


def _allowed_types(hint) -> tuple[list, bool]:
    """Returns (non-None types, whether None is allowed) for a type hint."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        args = typing.get_args(hint)
        return [a for a in args if a is not type(None)], type(None) in args
    return [hint], False


def _check_value(value, hint, rules, dotted):
    allowed, nullable = _allowed_types(hint)
    if value is None:
        if nullable:
            return None
        raise ConfigError(f"{dotted}: a value is required, received null")
    if len(allowed) == 1 and dataclasses.is_dataclass(allowed[0]):
        return _build(allowed[0], value, dotted)
    if typing.get_origin(allowed[0]) is list:  # a list of sections
        (item_type,) = typing.get_args(allowed[0])
        if not isinstance(value, list) or not value:
            raise ConfigError(f"{dotted}: expected a non-empty list of sections, received {_describe(value)}")
        return [_build(item_type, item, f"{dotted}[{index}]") for index, item in enumerate(value)]
    choices = rules.get("choices")
    if choices is not None:
        # Compare with type too: YAML `1` must not match a `True` choice, nor `true` match 1.
        if not any(value == c and type(value) is type(c) for c in choices):
            shown = ", ".join(str(c).lower() if isinstance(c, bool) else str(c) for c in choices)
            raise ConfigError(f"{dotted}: must be one of {shown}; received {value!r}"
                              f"{_did_you_mean(value, choices)}")
        return value
    kind = allowed[0]
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{dotted}: expected true or false, received {_describe(value)}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{dotted}: expected an integer, received {_describe(value)}")
        _check_range(value, rules, dotted)
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{dotted}: expected a number, received {_describe(value)}")
        _check_range(float(value), rules, dotted)
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{dotted}: expected a string, received {_describe(value)}")
        return value
    if kind is list:
        if not isinstance(value, list):
            raise ConfigError(f"{dotted}: expected a list, received {_describe(value)}")
        length = rules.get("length")
        if length is not None and len(value) != length:
            raise ConfigError(f"{dotted}: expected a list of {length} values, received {value!r}")
        for index, item in enumerate(value):
            if isinstance(item, bool) or not isinstance(item, (int, float)):
                raise ConfigError(f"{dotted}[{index}]: expected a number, received {_describe(item)}")
            _check_range(item, rules, f"{dotted}[{index}]")
        return list(value)
    if kind is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{dotted}: expected a mapping, received {_describe(value)}")
        return dict(value)
    raise TypeError(f"unsupported schema type {hint} at {dotted}")  # a bug in the schema, not user error


def _check_range(value, rules, dotted):
    low, high = rules.get("min"), rules.get("max")
    if low is not None and (value < low or (rules.get("min_exclusive") and value == low)):
        op = ">" if rules.get("min_exclusive") else ">="
        raise ConfigError(f"{dotted}: must be {op} {low}; received {value!r}")
    if high is not None and (value > high or (rules.get("max_exclusive") and value == high)):
        op = "<" if rules.get("max_exclusive") else "<="
        raise ConfigError(f"{dotted}: must be {op} {high}; received {value!r}")


def _check_cross_field_rules(config: Config) -> None:
    """Rules that involve several keys or the registries; each message says how to fix it."""
    import models as model_registry  # local import: keeps config importable alone
    from pipeline import datasets

    if config.dataset.name not in datasets.DATASETS:
        known = datasets.DATASETS.names()
        raise ConfigError(f"dataset.name: unknown dataset {config.dataset.name!r}"
                          f"{_did_you_mean(config.dataset.name, known)}. Known datasets: {', '.join(known)}")
    if config.model.name not in model_registry.MODELS:
        known = model_registry.MODELS.names()
        raise ConfigError(f"model.name: unknown model {config.model.name!r}"
                          f"{_did_you_mean(config.model.name, known)}. Known models: {', '.join(known)}")
    accepted = model_registry.MODELS.options(config.model.name)
    for key in config.model.options:
        if key not in accepted:
            raise ConfigError(
                f"unknown key 'model.options.{key}'{_did_you_mean(key, accepted, 'model.options.')}. Model "
                f"{config.model.name!r} accepts: {', '.join(accepted) or 'no options'}")
    _check_optimization(config.train.optimizer, config.train.schedule, config.train.epochs, "train")
    if config.train.phases:
        total = sum(phase.epochs for phase in config.train.phases)
        if total != config.train.epochs:
            raise ConfigError(f"train.epochs: must equal the sum of train.phases[*].epochs ({total}) when "
                              f"phases are given; received {config.train.epochs}. Set train.epochs={total}.")
        for index, phase in enumerate(config.train.phases):
            prefix = f"train.phases[{index}]"
            _check_optimization(phase.optimizer, phase.schedule, phase.epochs, prefix)
            if not (phase.trainable in ("all", "none") or
                    (phase.trainable.startswith("from ") and phase.trainable[5:].strip())):
                raise ConfigError(f"{prefix}.trainable: must be all, none or 'from <layer name>' "
                                  f"(e.g. 'from block5_conv1'); received {phase.trainable!r}")
            if phase.cache_features and phase.trainable != "none":
                raise ConfigError(f"{prefix}.cache_features: needs trainable: none (features of a backbone "
                                  f"that trains change every step); received trainable {phase.trainable!r}")
    if model_registry.includes_preprocessing(config.model.name) and (
            config.input.normalization != "unit" or config.input.statistics):
        raise ConfigError(f"input.normalization: model {config.model.name!r} applies its backbone's own input "
                          f"preprocessing to [0, 255] pixels, so normalization must stay 'unit' (unused) and "
                          f"input.statistics unset; received normalization {config.input.normalization!r}")
    if config.input.statistics and config.input.normalization != "standardize":
        raise ConfigError(f"input.statistics: only used with input.normalization: standardize; received "
                          f"normalization {config.input.normalization!r}")
    if config.input.statistics and not Path(config.input.statistics).expanduser().is_file() and \
            not (PROJECT_ROOT / config.input.statistics).is_file():
        raise ConfigError(f"input.statistics: file not found: {config.input.statistics} (write one with "
                          f"`python -m pipeline data stats ROOT`)")
    for key, monitor in (("checkpoint", config.train.callbacks.checkpoint.monitor),
                         ("early_stopping", config.train.callbacks.early_stopping.monitor)):
        allowed = ["loss", "accuracy", "val_loss", "val_accuracy"]
        if monitor not in allowed:
            raise ConfigError(f"train.callbacks.{key}.monitor: must be one of {', '.join(allowed)}; received "
                              f"{monitor!r}{_did_you_mean(monitor, allowed)}")
    if config.dataset.validation_split == 0:
        for key, monitor in (("checkpoint", config.train.callbacks.checkpoint.monitor),
                             ("early_stopping", config.train.callbacks.early_stopping.monitor)):
            if monitor.startswith("val_") and (key == "checkpoint"
                                               or config.train.callbacks.early_stopping.enabled):
                raise ConfigError(f"train.callbacks.{key}.monitor: {monitor!r} needs a validation split, "
                                  f"but dataset.validation_split is 0. Monitor a training metric "
                                  f"(e.g. 'loss') or set a validation split.")


def _check_optimization(optimizer: OptimizerConfig, schedule: ScheduleConfig, epochs: int, prefix: str) -> None:
    if schedule.name == "step" and not schedule.boundaries:
        raise ConfigError(f"{prefix}.schedule.boundaries: the step schedule needs at least one boundary "
                          f"(epochs at which the rate is multiplied by {prefix}.schedule.factor), received []")
    if list(schedule.boundaries) != sorted(schedule.boundaries):
        raise ConfigError(f"{prefix}.schedule.boundaries: must be increasing; received {schedule.boundaries}")
    if schedule.warmup_epochs and schedule.name != "cosine":
        raise ConfigError(f"{prefix}.schedule.warmup_epochs: warm-up is only available with the cosine "
                          f"schedule; received schedule {schedule.name!r}. Set {prefix}.schedule.name=cosine "
                          f"or remove warmup_epochs.")
    if schedule.warmup_epochs >= epochs:
        raise ConfigError(f"{prefix}.schedule.warmup_epochs: must be < {prefix}.epochs ({epochs}); "
                          f"received {schedule.warmup_epochs}")
    if optimizer.nesterov and optimizer.name != "sgd":
        raise ConfigError(f"{prefix}.optimizer.nesterov: only the sgd optimizer has Nesterov momentum; "
                          f"received optimizer {optimizer.name!r}")
    if optimizer.momentum and optimizer.name not in ("sgd", "rmsprop"):
        raise ConfigError(f"{prefix}.optimizer.momentum: only sgd and rmsprop take momentum; "
                          f"received optimizer {optimizer.name!r}")
