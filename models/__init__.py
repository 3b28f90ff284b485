"""Keras model builders, registered by name. Importing this package registers all of them."""

from models import applications, seed_nets, simple_cnn  # noqa: F401  (importing registers the models)
from models.registry import MODELS, build_model, includes_preprocessing, register_model  # noqa: F401
