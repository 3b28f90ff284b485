"""The model registry. Every builder has the signature
`build(*, input_shape, num_classes, **options) -> keras.Model` and ends in a softmax named `probabilities`.

The registry is lazy: names and options are read from the builder modules' source, and the modules
(with Keras and TensorFlow) are imported only when a model is built. A new builder module must be
listed in `MODULES`.
"""

from __future__ import annotations

from pipeline.core.registry import Registry

MODULES = ("models.seed_nets", "models.simple_cnn", "models.applications", "models.fast_resnet")

MODELS = Registry("model", modules=MODULES, decorator="register_model")
register_model = MODELS.register


def build_model(name: str, *, input_shape, num_classes: int, **options):
    """Builds a registered model -> keras.Model.

    Raises:
        KeyError: unknown name (the message lists the known ones).
        ValueError: the builder refuses an option or the input shape (Keras-style message).
    """
    return MODELS.get(name)(input_shape=tuple(input_shape), num_classes=num_classes, **options)


def includes_preprocessing(name: str) -> bool:
    """True when the registered model normalises its own [0, 255] pixel input (the keras.applications
    models: their backbone's preprocessing is a layer inside them), so it must be fed raw pixels and not be
    put behind the pipeline's normalisation layer. A builder says so with `builder.includes_preprocessing =
    True` right after its definition. Raises KeyError for an unknown name."""
    return bool(MODELS.flag(name, "includes_preprocessing", False))


def data_init(name: str):
    """The registered builder's data-dependent initialisation, or None: `builder.data_init(network,
    images, **options) -> str | None` (what it did, for the log), set right after the builder's
    definition; `images()` returns float [N, H, W, C] training images as the network receives them
    (after the pipeline's normalisation). Imports the builder's module. Raises KeyError for an unknown name."""
    return getattr(MODELS.get(name), "data_init", None)
