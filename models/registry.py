"""The model registry. Every builder has the signature
`build(*, input_shape, num_classes, **options) -> keras.Model` and ends in a softmax named `probabilities`.
"""

from __future__ import annotations

import keras

from pipeline.registry import Registry

MODELS = Registry("model")
register_model = MODELS.register


def build_model(name: str, *, input_shape, num_classes: int, **options) -> keras.Model:
    """Builds a registered model. Raises KeyError for an unknown name (the message lists known ones)."""
    return MODELS.get(name)(input_shape=tuple(input_shape), num_classes=num_classes, **options)


def includes_preprocessing(name: str) -> bool:
    """True when the registered model normalises its own [0, 255] pixel input (the keras.applications
    models: their backbone's preprocessing is a layer inside them), so it must be fed raw pixels and not be
    put behind the pipeline's normalisation layer. A builder says so with `builder.includes_preprocessing =
    True`. Raises KeyError for an unknown name."""
    return bool(getattr(MODELS.get(name), "includes_preprocessing", False))
