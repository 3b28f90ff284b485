"""The `tune:` section checked against the experiment: a search space of config keys that exist, with
values that the schema `train` uses accepts, and a metric the run logs.

Every check runs before any trial (or file) exists: a key that names nothing would otherwise tune nothing
(ludwig#1579). A value is checked by building the config it would give and validating it the way `train`
does (`check`, the loader's validation plus, from the CLI, the registry check of `pipeline.experiment`).
"""

from __future__ import annotations

import copy
import dataclasses
import math

from pipeline import config as config_lib
from pipeline.config import ConfigError, rundir
from pipeline.core.errors import UserError, did_you_mean

TYPES = ("float", "int", "categorical")
# The keys each type takes; `type` is required.
TYPE_KEYS = {
    "float": {"type", "low", "high", "log", "step"},
    "int": {"type", "low", "high", "log", "step"},
    "categorical": {"type", "choices"},
}
# Keys a trial must not change: the study's own section, and the name that places its runs.
FIXED_PREFIXES = ("tune.", "name")


class TuneError(UserError):
    """A study cannot start or continue (not a study directory, another space, storage); the message says why."""


@dataclasses.dataclass(frozen=True)
class Param:
    """One dimension of the search: a dotted config key and its range or choices."""

    key: str
    type: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple = ()


def parse_space(space: dict, base: dict, *, check=config_lib.from_dict) -> list[Param]:
    """The `tune.space` mapping as validated parameters.

    Args:
        space: {dotted key: {type, low, high, log, step | choices}}, as in the YAML.
        base: the experiment's resolved config as a dict (`config.to_dict`).
        check: validates a whole config dict the way `train` does; raises ConfigError.

    Returns:
        One Param per key, in the YAML's order.

    Raises:
        ConfigError: naming `tune.space.<key>`: an unknown key (with "did you mean"), a missing or wrong
            type, an empty range, a bad log/step, or a value (a bound or a choice) the schema refuses.
    """
    if not space:
        raise ConfigError("tune.space: empty; name at least one config key to search, e.g. train.batch_size")
    flat = rundir.flatten(base)
    tunable = [key for key in flat if not key.startswith(FIXED_PREFIXES)]
    params = []
    for key, spec in space.items():
        dotted = f"tune.space.{key}"
        _check_key(str(key), flat, tunable)
        param = _parse_spec(str(key), spec, dotted)
        for value in probe_values(param):
            try:
                check(with_values(base, {param.key: value}))
            except ConfigError as error:
                raise ConfigError(f"{dotted}: value {value!r} is refused by the schema: {error}") from None
        params.append(param)
    return params


def _check_key(key: str, flat: dict, tunable: list[str]) -> None:
    if key.startswith(FIXED_PREFIXES):
        raise ConfigError(f"tune.space.{key}: the study's own section and `name` cannot be searched")
    if key in flat and not isinstance(flat[key], dict):
        return
    # A key inside a mapping-valued field (model.options.width): the value check asks the schema and registry.
    parents = [key.rpartition(".")[0]]
    while parents[-1]:
        parents.append(parents[-1].rpartition(".")[0])
    if any(isinstance(flat.get(parent), dict) for parent in parents if parent):
        return
    raise ConfigError(
        f"tune.space: unknown key {key!r}{did_you_mean(key, tunable)}; the space names keys of the resolved "
        f"config (`python -m pipeline train EXPERIMENT --print-config` lists them)"
    )


def _parse_spec(key: str, spec, dotted: str) -> Param:
    if not isinstance(spec, dict) or spec.get("type") not in TYPES:
        received = spec.get("type") if isinstance(spec, dict) else spec
        raise ConfigError(
            f"{dotted}: expected a mapping with type: {' | '.join(TYPES)}; received {received!r}"
            f"{did_you_mean(received, TYPES)}"
        )
    kind = spec["type"]
    unknown = sorted(set(spec) - TYPE_KEYS[kind])
    if unknown:
        raise ConfigError(
            f"{dotted}: unknown key {unknown[0]!r} for type {kind}{did_you_mean(unknown[0], TYPE_KEYS[kind])}; "
            f"allowed: {', '.join(sorted(TYPE_KEYS[kind]))}"
        )
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{dotted}.choices: expected a non-empty list; received {choices!r}")
        if len({repr(choice) for choice in choices}) != len(choices):
            raise ConfigError(f"{dotted}.choices: a value is listed twice; received {choices!r}")
        return Param(key, kind, choices=tuple(choices))
    number = int if kind == "int" else (int, float)
    low, high, log, step = spec.get("low"), spec.get("high"), spec.get("log", False), spec.get("step")
    for name, value in (("low", low), ("high", high)):
        if isinstance(value, bool) or not isinstance(value, number):
            raise ConfigError(
                f"{dotted}.{name}: expected {'an integer' if kind == 'int' else 'a number'}; received {value!r}"
            )
    if not low < high:
        raise ConfigError(f"{dotted}: empty range, low must be < high; received low {low!r}, high {high!r}")
    if not isinstance(log, bool):
        raise ConfigError(f"{dotted}.log: expected true or false; received {log!r}")
    if log and low <= 0:
        raise ConfigError(f"{dotted}.log: a log range needs low > 0; received low {low!r}")
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, number) or step <= 0:
            raise ConfigError(
                f"{dotted}.step: expected a positive {'integer' if kind == 'int' else 'number'}; received {step!r}"
            )
        if log:
            raise ConfigError(f"{dotted}: step and log cannot be combined (Optuna samples either); received both")
    if kind == "float":
        low, high, step = float(low), float(high), None if step is None else float(step)
    return Param(key, kind, low=low, high=high, log=log, step=step)


def probe_values(param: Param) -> list:
    """The values that stand for the whole range in validation: both bounds (schema ranges are intervals,
    so the values between pass too), or every choice."""
    if param.type == "categorical":
        return list(param.choices)
    return [param.low, param.high]


def grid_values(param: Param) -> list:
    """Every value of a parameter for the grid sampler.

    Raises:
        ConfigError: a float range without `step` (a grid needs finitely many values).
    """
    if param.type == "categorical":
        return list(param.choices)
    if param.type == "int":
        return list(range(param.low, param.high + 1, param.step or 1))
    if param.step is None:
        raise ConfigError(
            f"tune.space.{param.key}: the grid sampler needs `step` on a float range (or use type: categorical)"
        )
    count = int(math.floor((param.high - param.low) / param.step + 1e-9)) + 1
    return [round(param.low + index * param.step, 12) for index in range(count)]


def base_values(params: list[Param], base: dict) -> dict:
    """The experiment's own value of each key (the baseline trial); a key a mapping field leaves unset is
    left out (the trial samples it)."""
    flat = rundir.flatten(base)
    return {param.key: flat[param.key] for param in params if param.key in flat}


def with_values(base: dict, values: dict) -> dict:
    """A deep copy of the config dict `base` with each dotted key in `values` set (sections created as needed)."""
    data = copy.deepcopy(base)
    for key, value in values.items():
        node = data
        *sections, leaf = key.split(".")
        for section in sections:
            if not isinstance(node.get(section), dict):
                node[section] = {}
            node = node[section]
        node[leaf] = value
    return data


def direction(metric: str, direction_name: str) -> str:
    """'maximize' or 'minimize': as given, or `auto` (a loss is minimised, anything else maximised)."""
    if direction_name != "auto":
        return direction_name
    return "minimize" if "loss" in metric else "maximize"


def check_metric(metric: str, config) -> None:
    """The metric must be a column the run's history.csv will have.

    Raises:
        ConfigError: naming tune.metric, the metrics this run logs, and a "did you mean".
    """
    logged = ["loss", "accuracy"]
    if config.dataset.validation_split > 0:
        logged += ["val_loss", "val_accuracy"]
    if not config.train.callbacks.csv_log:
        raise ConfigError("tune.metric: the trials read history.csv, but train.callbacks.csv_log is false; set it true")
    if metric not in logged:
        hint = (
            " (validation metrics need dataset.validation_split > 0)"
            if metric.startswith("val_") and config.dataset.validation_split == 0
            else ""
        )
        raise ConfigError(
            f"tune.metric: this run does not log {metric!r}{did_you_mean(metric, logged)}{hint}; "
            f"it logs {', '.join(logged)}"
        )
