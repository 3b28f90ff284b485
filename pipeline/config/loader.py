"""Experiment configuration: typed defaults, YAML with `base:` inheritance, `--set` overrides, validation.

The config is parsed exactly once, at the edge (the CLI). Everything below it takes plain keyword
arguments. Order: dataclass defaults <- YAML chain (base first) <- `--set` overrides -> strict
validation (unknown keys, types, ranges, choices) -> frozen dataclasses.

Every user mistake raises `ConfigError` whose message names the dotted key, what is allowed, what was
received and, for near-misses, "did you mean ...". The CLI turns it into exit code 2 without a traceback.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, Union

import yaml

from pipeline.config.choices import WARMUP_SCHEDULES
from pipeline.config.schema import *  # noqa: F401,F403  (the schema, re-exported for its users)
from pipeline.config.schema import Config, OptimizerConfig, ScheduleConfig
from pipeline.core import errors, fileio

PROJECT_ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS_DIR = PROJECT_ROOT / "experiments"


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads `1e-3` as a float (YAML 1.1 needs `1.0e-3`) and refuses duplicate keys, which PyYAML
    silently resolves by keeping the last (yaml/pyyaml#165). All else reads as `yaml.safe_load` reads it: anchors,
    aliases, merge keys (`<<: *base`; omry/omegaconf#470 broke them), byte-order marks, CRLF line ends."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<`: the mapping's own keys override merged ones (flatten_mapping); not duplicates
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                continue  # SafeLoader reports unhashable keys itself
            if key in seen:
                raise DuplicateKeyError(key, first=seen[key], second=key_node.start_mark)
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


class DuplicateKeyError(yaml.YAMLError):
    """A mapping names the same key twice (the message gives both lines)."""

    def __init__(self, key, *, first, second):
        super().__init__(
            f"duplicate key {key!r} (first at line {first.line + 1}, again at line "
            f"{second.line + 1}); YAML keeps only the last one, so merge the two into one section"
        )
        self.problem_mark = second
        self.problem = str(self)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                |\.[0-9_]+(?:[eE][-+][0-9]+)?
                |[-+]?\.(?:inf|Inf|INF)
                |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def yaml_load(text: str | bytes):
    """Parses YAML text (or bytes, decoded by their byte-order mark as PyYAML does) as experiment files are read.

    Raises:
        yaml.YAMLError: invalid YAML, or a mapping with a duplicate key (`DuplicateKeyError`).
    """
    return yaml.load(text, Loader=_Loader)


class ConfigError(errors.UserError, ValueError):
    """A user error in an experiment file or an override. The message is meant for the user as is."""


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
        raise ConfigError(
            f"unknown experiment {name_or_path!r}{_did_you_mean(name_or_path, known)}. "
            f"Known experiments: {', '.join(known)}; or pass a path to a .yaml file."
        )
    return path


def _read_yaml(path: Path) -> dict:
    try:
        text = path.read_bytes()  # bytes: PyYAML decodes them by their BOM, not by this machine's locale
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {fileio.os_reason(error)}") from None
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
        raise ConfigError(f"{path}: an experiment file must be a mapping of keys, received a {type(data).__name__}")
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
    base_path = path.parent / base
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
    """Applies `--set` overrides in order (a later one wins, as on most command lines). Raises ConfigError
    for a malformed one."""
    data = dict(data)
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for depth, key in enumerate(keys[:-1]):
            child = node.get(key)
            if child is None:
                child = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"--set {text}: {'.'.join(keys[: depth + 1])} is not a section")
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


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------

_did_you_mean = errors.did_you_mean


def _describe(value) -> str:
    return f"{value!r} ({type(value).__name__})"


def _build(cls, data, path: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a section (mapping of keys), received {_describe(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [key for key in data if key not in fields]
    if unknown:
        key = unknown[0]
        dotted = f"{path}.{key}" if path else str(key)
        raise ConfigError(
            f"unknown key {dotted!r}{_did_you_mean(key, fields, f'{path}.' if path else '')}. "
            f"Allowed keys{' in ' + path if path else ''}: {', '.join(fields)}"
        )
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
    if choices is None and len(allowed) > 1:  # e.g. str or a mapping: the first kind that fits
        for kind in allowed:
            try:
                return _check_value(value, kind, rules, dotted)
            except ConfigError:
                continue
        names = " or ".join(
            {
                str: "a string",
                dict: "a mapping",
                int: "an integer",
                float: "a number",
                bool: "true or false",
                list: "a list",
            }.get(kind, kind.__name__)
            for kind in allowed
        )
        raise ConfigError(f"{dotted}: expected {names}, received {_describe(value)}")
    if choices is not None:
        # Compare with type too: YAML `1` must not match a `True` choice, nor `true` match 1.
        if not any(value == c and type(value) is type(c) for c in choices):
            shown = ", ".join(str(c).lower() if isinstance(c, bool) else str(c) for c in choices)
            raise ConfigError(f"{dotted}: must be one of {shown}; received {value!r}{_did_you_mean(value, choices)}")
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
    """Rules that involve several keys; each message says how to fix it. (Rules that need the model and
    dataset registries are in pipeline/experiment.py.)"""
    _check_optimization(config.train.optimizer, config.train.schedule, config.train.epochs, "train")
    _check_batch_layers(config.input.augment)
    if config.train.phases:
        total = sum(phase.epochs for phase in config.train.phases)
        if total != config.train.epochs:
            raise ConfigError(
                f"train.epochs: must equal the sum of train.phases[*].epochs ({total}) when "
                f"phases are given; received {config.train.epochs}. Set train.epochs={total}."
            )
        for index, phase in enumerate(config.train.phases):
            prefix = f"train.phases[{index}]"
            _check_optimization(phase.optimizer, phase.schedule, phase.epochs, prefix)
            if not (
                phase.trainable in ("all", "none")
                or (phase.trainable.startswith("from ") and phase.trainable[5:].strip())
            ):
                raise ConfigError(
                    f"{prefix}.trainable: must be all, none or 'from <layer name>' "
                    f"(e.g. 'from block5_conv1'); received {phase.trainable!r}"
                )
            if phase.cache_features and phase.trainable != "none":
                raise ConfigError(
                    f"{prefix}.cache_features: needs trainable: none (features of a backbone "
                    f"that trains change every step); received trainable {phase.trainable!r}"
                )
    if config.input.statistics and config.input.normalization != "standardize":
        raise ConfigError(
            f"input.statistics: only used with input.normalization: standardize; received "
            f"normalization {config.input.normalization!r}"
        )
    if (
        config.input.statistics
        and not Path(config.input.statistics).expanduser().is_file()
        and not (PROJECT_ROOT / config.input.statistics).is_file()
    ):
        raise ConfigError(
            f"input.statistics: file not found: {config.input.statistics} (write one with "
            f"`python -m pipeline data stats ROOT`)"
        )
    for key, monitor in (
        ("checkpoint", config.train.callbacks.checkpoint.monitor),
        ("early_stopping", config.train.callbacks.early_stopping.monitor),
    ):
        allowed = ["loss", "accuracy", "val_loss", "val_accuracy"]
        if monitor not in allowed:
            raise ConfigError(
                f"train.callbacks.{key}.monitor: must be one of {', '.join(allowed)}; received "
                f"{monitor!r}{_did_you_mean(monitor, allowed)}"
            )
    if config.dataset.validation_split == 0:
        for key, monitor in (
            ("checkpoint", config.train.callbacks.checkpoint.monitor),
            ("early_stopping", config.train.callbacks.early_stopping.monitor),
        ):
            if monitor.startswith("val_") and (key == "checkpoint" or config.train.callbacks.early_stopping.enabled):
                raise ConfigError(
                    f"train.callbacks.{key}.monitor: {monitor!r} needs a validation split, "
                    f"but dataset.validation_split is 0. Monitor a training metric "
                    f"(e.g. 'loss') or set a validation split."
                )


BATCH_LAYER_KEYS = {
    "rand_augment": {"num_ops": (1, None, int), "factor": (0.0, 1.0, float)},
    "color_jitter": {name: (0.0, 1.0, float) for name in ("brightness", "contrast", "saturation", "hue")},
}


def _check_batch_layers(augment) -> None:
    """input.augment.rand_augment / color_jitter: known keys, numbers in range; random_erasing_fill: 1 or 3."""
    fill = augment.random_erasing_fill
    if fill is not None and len(fill) not in (1, 3):
        raise ConfigError(
            f"input.augment.random_erasing_fill: expected [v] or [R, G, B] (pixel values 0-255), "
            f"received {len(fill)} values {fill!r}"
        )
    for section, allowed in BATCH_LAYER_KEYS.items():
        values = getattr(augment, section)
        for key, value in (values or {}).items():
            dotted = f"input.augment.{section}.{key}"
            if key not in allowed:
                raise ConfigError(
                    f"unknown key {dotted!r}{_did_you_mean(key, allowed, f'input.augment.{section}.')}. "
                    f"Allowed keys in input.augment.{section}: {', '.join(allowed)}"
                )
            low, high, kind = allowed[key]
            if value is None and section == "color_jitter":
                continue
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or (kind is int and not isinstance(value, int))
            ):
                raise ConfigError(
                    f"{dotted}: expected {'an integer' if kind is int else 'a number'}, received {_describe(value)}"
                )
            if value < low or (high is not None and value > high):
                raise ConfigError(
                    f"{dotted}: must be in [{low}, {high if high is not None else 'inf'}]; received {value!r}"
                )


def _check_optimization(optimizer: OptimizerConfig, schedule: ScheduleConfig, epochs: int, prefix: str) -> None:
    if schedule.name == "step" and not schedule.boundaries:
        raise ConfigError(
            f"{prefix}.schedule.boundaries: the step schedule needs at least one boundary "
            f"(epochs at which the rate is multiplied by {prefix}.schedule.factor), received []"
        )
    if list(schedule.boundaries) != sorted(schedule.boundaries):
        raise ConfigError(f"{prefix}.schedule.boundaries: must be increasing; received {schedule.boundaries}")
    if schedule.warmup_epochs and schedule.name not in WARMUP_SCHEDULES:
        raise ConfigError(
            f"{prefix}.schedule.warmup_epochs: warm-up is only available with the cosine and "
            f"polynomial schedules; received schedule {schedule.name!r}. Set "
            f"{prefix}.schedule.name=cosine (or polynomial) or remove warmup_epochs."
        )
    if schedule.warmup_epochs >= epochs:
        raise ConfigError(
            f"{prefix}.schedule.warmup_epochs: must be < {prefix}.epochs ({epochs}); received {schedule.warmup_epochs}"
        )
    if optimizer.nesterov and optimizer.name != "sgd":
        raise ConfigError(
            f"{prefix}.optimizer.nesterov: only the sgd optimizer has Nesterov momentum; "
            f"received optimizer {optimizer.name!r}"
        )
    if optimizer.momentum and optimizer.name not in ("sgd", "rmsprop"):
        raise ConfigError(
            f"{prefix}.optimizer.momentum: only sgd and rmsprop take momentum; received optimizer {optimizer.name!r}"
        )
