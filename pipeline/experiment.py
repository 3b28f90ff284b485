"""Loading an experiment: the config (pipeline/config/) checked against the model and dataset registries.

This is what the CLI calls. It sits above config, models and datasets so that config stays at the bottom
of the import graph; it imports no TensorFlow (the model registry reads its builders' names and options
from source), so every config mistake is reported in a fraction of a second.
"""

from __future__ import annotations

import models
from pipeline import config as config_lib
from pipeline.config import Config, ConfigError
from pipeline.core.errors import did_you_mean
from pipeline.data import class_balance, datasets


def load_experiment(name_or_path: str, overrides=()) -> Config:
    """`config.load_config` + `check_registries`. Raises ConfigError on any user error."""
    config = config_lib.load_config(name_or_path, list(overrides))
    check_registries(config)
    return config


def check_registries(config: Config) -> None:
    """Dataset and model names, the model's options, and the rules that depend on the model.

    Raises:
        ConfigError: naming the key, what is known or accepted, and a "did you mean".
    """
    if config.dataset.name not in datasets.DATASETS:
        known = datasets.DATASETS.names()
        raise ConfigError(
            f"dataset.name: unknown dataset {config.dataset.name!r}"
            f"{did_you_mean(config.dataset.name, known)}. Known datasets: {', '.join(known)}"
        )
    if config.model.name not in models.MODELS:
        known = models.MODELS.names()
        raise ConfigError(
            f"model.name: unknown model {config.model.name!r}"
            f"{did_you_mean(config.model.name, known)}. Known models: {', '.join(known)}"
        )
    accepted = models.MODELS.options(config.model.name)
    for key in config.model.options:
        if key not in accepted:
            raise ConfigError(
                f"unknown key 'model.options.{key}'{did_you_mean(key, accepted, 'model.options.')}. Model "
                f"{config.model.name!r} accepts: {', '.join(accepted) or 'no options'}"
            )
    if config.train.phases and len({bool(phase.optimizer.ema) for phase in config.train.phases}) > 1:
        raise ConfigError(
            "train.phases[*].optimizer.ema: set a weight EMA in every phase or in none (the "
            "averaged weights must carry from one phase to the next)"
        )
    try:
        class_balance.check_mode(config.train.class_weight)
    except class_balance.ClassWeightError as error:
        raise ConfigError(str(error)) from None
    if models.includes_preprocessing(config.model.name) and (
        config.input.normalization != "unit" or config.input.statistics
    ):
        raise ConfigError(
            f"input.normalization: model {config.model.name!r} applies its backbone's own input "
            f"preprocessing to [0, 255] pixels, so normalization must stay 'unit' (unused) and "
            f"input.statistics unset; received normalization {config.input.normalization!r}"
        )
