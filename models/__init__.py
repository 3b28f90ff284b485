"""Keras model builders, registered by name. Importing this package does not import Keras: builder modules
are imported when a model is first built (see models/registry.py)."""

from models.registry import MODELS, build_model, data_init, includes_preprocessing, register_model  # noqa: F401


def load_all() -> None:
    """Imports every builder module (registers their custom layers for loading saved models)."""
    MODELS.load()
