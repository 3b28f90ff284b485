"""Training phases: successive `fit` calls, each with its own optimizer, schedule and trainable layers.

A plain run is one phase. Fine-tuning is typically two: the pretrained `backbone` frozen while a new head
trains, then the top of the backbone unfrozen at a low learning rate. Epoch numbers run on across phases,
so checkpoints, history, TensorBoard and resume span the whole run.
"""

from __future__ import annotations

import dataclasses

import keras

from pipeline import compat
from pipeline.config import OptimizerConfig, ScheduleConfig
from pipeline.core.errors import UserError, did_you_mean


class PhaseError(UserError, ValueError):
    """A phase names a layer the model does not have, or freezes a model without a backbone (exit code 2;
    still a ValueError for callers that catch the builders' argument errors with it)."""


@dataclasses.dataclass(frozen=True)
class Phase:
    index: int
    start_epoch: int
    end_epoch: int
    trainable: str
    optimizer: OptimizerConfig
    schedule: ScheduleConfig
    cache_features: bool = False

    _key: str = "train"

    @property
    def key(self) -> str:
        """Where this phase's settings live in the config (`train` or `train.phases[i]`), for messages."""
        return self._key

    @property
    def epochs(self) -> int:
        return self.end_epoch - self.start_epoch


def plan(train) -> list[Phase]:
    """The run's phases with their epoch ranges [start, end) (`train`: the config's `train` section)."""
    if not train.phases:
        return [Phase(0, 0, train.epochs, "all", train.optimizer, train.schedule)]
    phases, start = [], 0
    for index, phase in enumerate(train.phases):
        phases.append(
            Phase(
                index,
                start,
                start + phase.epochs,
                phase.trainable,
                phase.optimizer,
                phase.schedule,
                phase.cache_features,
                _key=f"train.phases[{index}]",
            )
        )
        start += phase.epochs
    return phases


def set_trainable(model: keras.Model, spec: str) -> None:
    """Applies a phase's `trainable`: "all", "none" (freeze the layer named `backbone`) or
    "from <layer>" (the backbone's layers before <layer> frozen, <layer> and later ones trainable).

    The backbone keeps running in inference mode whatever its trainability (the model calls it with
    training=False), so BatchNormalization statistics never drift while fine-tuning. Layers a builder
    froze by design (`layer.keep_frozen = True`, e.g. cifar10_fast's whitening stem) stay frozen.
    """
    for layer in compat.iter_layers(model):
        layer.trainable = not getattr(layer, "keep_frozen", False)
    if spec == "all":
        return
    backbone = compat.find_layer(model, "backbone")
    if backbone is None:
        raise PhaseError(
            f"train.phases trainable {spec!r} needs a model with a layer named 'backbone' "
            f"(the `applications` models have one); this model has none. Use trainable: all."
        )
    if spec == "none":
        backbone.trainable = False
        return
    name = spec[len("from ") :].strip()
    names = [layer.name for layer in backbone.layers]
    if name not in names:
        raise PhaseError(
            f"train.phases trainable 'from {name}': no layer {name!r} in the backbone"
            f"{did_you_mean(name, names)}. "
            f"Its layers include: {', '.join(names[-12:])}"
        )
    first = names.index(name)
    for layer in backbone.layers[:first]:
        layer.trainable = False
