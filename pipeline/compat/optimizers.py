"""Per-variable learning-rate factors on Keras optimizers (Keras 3 has one rate per optimizer).

Reaches into `Optimizer._get_variable_index` and `Optimizer._trainable_variables` (Keras 3.15): inside
`update_step` the variable is the backend's (a `tf.Variable`, `.value` of the Keras variable), so the Keras
variable, whose `path` names its layer, is found by the optimizer's own index.
"""

from __future__ import annotations

import keras

NORM_BIAS_NAMES = ("beta",)  # BatchNormalization, LayerNormalization, GroupNormalization: the shift


def is_norm_bias(variable) -> bool:
    """True for a normalization layer's bias (its `beta`; Keras names it so in every normalization layer)."""
    return str(getattr(variable, "path", variable.name)).rsplit("/", 1)[-1].split(":")[0] in NORM_BIAS_NAMES


def _norm_bias_scaled(base: type) -> type:
    class Scaled(base):
        def __init__(self, *args, norm_bias_lr_factor: float = 1.0, **kwargs):
            super().__init__(*args, **kwargs)
            self.norm_bias_lr_factor = float(norm_bias_lr_factor)

        def update_step(self, gradient, variable, learning_rate):
            # Decoupled weight decay (`_apply_weight_decay`) runs apart from this and keeps the plain rate,
            # as in airbench94, whose BatchNorm biases get 64x the rate and the same decay per step.
            if self.norm_bias_lr_factor != 1.0 and is_norm_bias(
                self._trainable_variables[self._get_variable_index(variable)]
            ):
                learning_rate = learning_rate * self.norm_bias_lr_factor
            return super().update_step(gradient, variable, learning_rate)

        def get_config(self):
            return {**super().get_config(), "norm_bias_lr_factor": self.norm_bias_lr_factor}

    name = f"{base.__name__}NormBiasLR"
    Scaled.__name__ = Scaled.__qualname__ = name
    Scaled.__doc__ = (
        f"keras.optimizers.{base.__name__} whose normalization biases (`beta`) learn at "
        f"`norm_bias_lr_factor` x the learning rate."
    )
    return keras.saving.register_keras_serializable(package="pipeline", name=name)(Scaled)


NORM_BIAS_SCALED = {
    base: _norm_bias_scaled(base)
    for base in (keras.optimizers.SGD, keras.optimizers.Adam, keras.optimizers.AdamW, keras.optimizers.RMSprop)
}


def with_norm_bias_lr_factor(optimizer_class: type, factor: float) -> tuple[type, dict]:
    """(class, extra keyword arguments) that build `optimizer_class` with normalization biases at `factor`
    x the learning rate: the class itself and {} for factor 1. Raises ValueError for a class not covered
    or factor <= 0."""
    if factor <= 0:
        raise ValueError(f"norm_bias_lr_factor must be > 0. Received: {factor!r}")
    if factor == 1.0:
        return optimizer_class, {}
    if optimizer_class not in NORM_BIAS_SCALED:
        raise ValueError(
            f"norm_bias_lr_factor is available for {', '.join(c.__name__ for c in NORM_BIAS_SCALED)}. "
            f"Received: {optimizer_class.__name__}"
        )
    return NORM_BIAS_SCALED[optimizer_class], {"norm_bias_lr_factor": float(factor)}
