"""Optimizers and learning-rate schedules from plain keyword arguments.

Schedules are stated in epochs in the YAML and converted to optimizer steps here, and they are Keras
`LearningRateSchedule` objects driven by `optimizer.iterations`: the rate is part of the optimizer state,
so a resumed run continues the schedule exactly where it stopped.
"""

from __future__ import annotations

import keras

from pipeline.config.choices import OPTIMIZERS, SCHEDULES

# optimizer.name -> Keras class; the names are `choices.OPTIMIZERS` (tests/test_one_fact.py checks).
OPTIMIZER_CLASSES = {
    "sgd": keras.optimizers.SGD,
    "adam": keras.optimizers.Adam,
    "adamw": keras.optimizers.AdamW,
    "rmsprop": keras.optimizers.RMSprop,
}


def build_schedule(
    *,
    name: str,
    learning_rate: float,
    steps_per_epoch: int,
    epochs: int,
    warmup_epochs: float = 0.0,
    warmup_start: float = 0.0,
    boundaries=(),
    factor: float = 0.1,
    end_learning_rate: float = 0.0,
    power: float = 1.0,
    alpha: float = 0.0,
):
    """Returns a float (constant) or a `keras.optimizers.schedules.LearningRateSchedule`.

    Args:
        name: one of `choices.SCHEDULES` (constant | step | polynomial | cosine).
        learning_rate: the peak rate.
        boundaries: step: epochs at which the rate is multiplied by `factor`.
        warmup_epochs: cosine, polynomial: linear warm-up to `learning_rate`...
        warmup_start: ... from this fraction of it (0: from 0; airbench94 starts at 0.2).
        alpha: cosine: the final rate as a fraction of the peak.
    """
    total_steps = max(1, steps_per_epoch * epochs)
    if name == "constant":
        return learning_rate
    if name == "step":
        step_boundaries = [int(round(b * steps_per_epoch)) for b in boundaries]
        values = [learning_rate * factor**index for index in range(len(step_boundaries) + 1)]
        return keras.optimizers.schedules.PiecewiseConstantDecay(step_boundaries, values)
    if name == "polynomial":
        warmup_steps = int(round(warmup_epochs * steps_per_epoch))
        decay = keras.optimizers.schedules.PolynomialDecay(
            learning_rate, max(1, total_steps - warmup_steps), end_learning_rate=end_learning_rate, power=power
        )
        return WarmUp(learning_rate, warmup_steps, decay, start=warmup_start) if warmup_steps else decay
    if name == "cosine":
        warmup_steps = int(round(warmup_epochs * steps_per_epoch))
        if warmup_steps:
            # Keras' warm-up climbs from `initial_learning_rate` to `warmup_target`.
            return keras.optimizers.schedules.CosineDecay(
                warmup_start * learning_rate,
                total_steps - warmup_steps,
                alpha=alpha,
                warmup_target=learning_rate,
                warmup_steps=warmup_steps,
            )
        return keras.optimizers.schedules.CosineDecay(learning_rate, total_steps, alpha=alpha)
    raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}. Received: name={name!r}")


@keras.saving.register_keras_serializable(package="pipeline")
class WarmUp(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from `start` x `peak` to `peak` over `warmup_steps`, then `after` (counted from the
    warm-up's end):
    e.g. warm-up then linear decay (polynomial, power 1), the fast CIFAR-10 recipes' schedule (Page's
    ResNet-9; airbench). Serializable, so checkpoints and resume keep it."""

    def __init__(self, peak: float, warmup_steps: int, after, start: float = 0.0):
        self.peak, self.warmup_steps, self.start = float(peak), int(warmup_steps), float(start)
        self.after = keras.optimizers.schedules.deserialize(after) if isinstance(after, dict) else after

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        warm = self.peak * (self.start + (1.0 - self.start) * step / max(self.warmup_steps, 1))
        return keras.ops.where(step < self.warmup_steps, warm, self.after(step - self.warmup_steps))

    def get_config(self):
        return {
            "peak": self.peak,
            "warmup_steps": self.warmup_steps,
            "start": self.start,
            "after": keras.optimizers.schedules.serialize(self.after),
        }


def build_optimizer(
    *,
    name: str,
    learning_rate,
    momentum: float = 0.0,
    nesterov: bool = False,
    weight_decay: float | None = None,
    clipnorm: float | None = None,
    ema: float | None = None,
    norm_bias_lr_factor: float = 1.0,
):
    """Builds a Keras optimizer. `learning_rate` may be a float or a schedule; `ema` (e.g. 0.999) keeps an
    exponential moving average of the weights (`pipeline.training.ema`); `norm_bias_lr_factor` multiplies the
    learning rate of normalization layers' biases (BatchNorm `beta`; airbench94 uses 64 with BatchNorm
    scales fixed at 1), not their weight decay. Raises ValueError for an unknown name."""
    from pipeline import compat
    from pipeline.training import ema as ema_lib

    if name not in OPTIMIZER_CLASSES:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}. Received: name={name!r}")
    optimizer_class, options = compat.with_norm_bias_lr_factor(OPTIMIZER_CLASSES[name], norm_bias_lr_factor)
    options.update(learning_rate=learning_rate, clipnorm=clipnorm, **ema_lib.ema_optimizer_options(ema))
    if weight_decay is not None:
        options["weight_decay"] = weight_decay
    if name == "sgd":
        options.update(momentum=momentum, nesterov=nesterov)
    if name == "rmsprop":
        options["momentum"] = momentum
    return optimizer_class(**options)
