"""The model registry and the seed networks: exact parameter counts, gradient flow, softmax head."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import models
from pipeline.core.registry import Registry

SHAPES = {
    "lenet": (28, 28, 1),
    "cifar10_net": (32, 32, 3),
    "cifar10_deep": (32, 32, 3),
    "fashion_cnn": (28, 28, 1),
    "tiny": (32, 32, 3),
}


def build(name, input_shape=None, num_classes=10, **options):
    return models.build_model(name, input_shape=input_shape or SHAPES[name], num_classes=num_classes, **options)


SEED_MODELS = ["cifar10_deep", "cifar10_net", "fashion_cnn", "lenet", "tiny"]


def test_registered_models():
    assert set(SEED_MODELS) <= set(models.MODELS.names())
    assert models.MODELS.names() == sorted(models.MODELS.names())


@pytest.mark.parametrize(
    "name, input_shape, count",
    [
        ("lenet", (28, 28, 1), 1_256_080),
        ("cifar10_net", (32, 32, 3), 2_122_186),
        ("cifar10_deep", (32, 32, 3), 1_250_858),
        ("fashion_cnn", (28, 28, 1), 421_642),
    ],
)
def test_exact_parameter_counts(name, input_shape, count):
    model = build(name, input_shape)
    assert model.count_params() == count
    assert model.name == name
    assert tuple(model.input_shape) == (None, *input_shape)
    assert tuple(model.output_shape) == (None, 10)


def test_tiny_is_tiny():
    model = build("tiny")
    assert model.count_params() < 10_000
    # options reach the builder: half the filters, fewer parameters
    assert build("tiny", filters=4).count_params() < model.count_params()


def test_num_classes_changes_only_the_head():
    ten, three = build("fashion_cnn"), build("fashion_cnn", num_classes=3)
    assert tuple(three.output_shape) == (None, 3)
    # logits: 128 inputs + 1 bias per class
    assert ten.count_params() - three.count_params() == 7 * (128 + 1)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_gradients_reach_every_trainable_weight(name):
    keras.utils.set_random_seed(0)
    model = build(name)
    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(0.0, 1.0, size=(2, *SHAPES[name])).astype(np.float32))
    labels = tf.constant(keras.utils.to_categorical([3, 7], 10))
    with tf.GradientTape() as tape:
        probabilities = model(images, training=True)
        loss = keras.losses.categorical_crossentropy(labels, probabilities)
    assert model.trainable_weights
    gradients = tape.gradient(loss, model.trainable_weights)
    assert len(gradients) == len(model.trainable_weights)
    for weight, gradient in zip(model.trainable_weights, gradients):
        assert gradient is not None, f"no gradient for {weight.path}"
        assert gradient.shape == weight.shape
        assert np.all(np.isfinite(gradient.numpy())), weight.path
        assert np.any(gradient.numpy() != 0), f"all-zero gradient for {weight.path}"


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_output_is_float32_softmax_named_probabilities(name):
    keras.utils.set_random_seed(1)
    model = build(name)
    head = model.layers[-1]
    assert head.name == "probabilities"
    assert model.get_layer("probabilities") is head
    rng = np.random.default_rng(1)
    images = rng.uniform(0.0, 1.0, size=(3, *SHAPES[name])).astype(np.float32)
    probabilities = model(images, training=False)
    assert probabilities.dtype == tf.float32
    probabilities = probabilities.numpy()
    assert probabilities.shape == (3, 10)
    assert np.all(probabilities >= 0) and np.all(probabilities <= 1)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=0, atol=1e-5)
    # it is the softmax of the layer before it
    logits = keras.Model(model.input, model.get_layer("logits").output)(images, training=False)
    np.testing.assert_allclose(probabilities, tf.nn.softmax(logits).numpy(), rtol=1e-5, atol=1e-6)


@pytest.fixture
def bfloat16_policy():
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def test_head_stays_float32_under_mixed_precision(bfloat16_policy):
    model = build("tiny")
    assert model.get_layer("logits").compute_dtype == "bfloat16"
    probabilities = model(np.random.default_rng(2).uniform(size=(2, 32, 32, 3)).astype(np.float32))
    assert probabilities.dtype == tf.float32
    np.testing.assert_allclose(probabilities.numpy().sum(axis=1), 1.0, atol=1e-5)


def test_model_seeds_make_identical_weights():
    keras.utils.set_random_seed(5)
    first = build("tiny").get_weights()
    keras.utils.set_random_seed(5)
    second = build("tiny").get_weights()
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------


def test_duplicate_registration_raises_value_error():
    registry = Registry("widget")

    @registry.register()
    def gear(*, input_shape, num_classes):
        return "gear"

    with pytest.raises(ValueError, match=r"widget 'gear' is already registered \(by .*gear\)"):
        registry.register("gear")(lambda **kwargs: "other")
    assert registry.get("gear") is gear
    assert registry.names() == ["gear"]


def test_duplicate_model_name_is_refused_and_the_original_kept():
    original = models.MODELS.get("lenet")
    with pytest.raises(ValueError, match="model 'lenet' is already registered"):

        @models.register_model("lenet")
        def impostor(*, input_shape, num_classes):  # pragma: no cover - never called
            raise AssertionError

    assert models.MODELS.get("lenet") is original
    assert "impostor" not in models.MODELS


def test_unknown_model_raises_key_error_with_known_names_and_suggestion():
    with pytest.raises(KeyError) as raised:
        models.build_model("lenett", input_shape=(28, 28, 1), num_classes=10)
    message = raised.value.args[0]
    assert "unknown model 'lenett'" in message
    assert "did you mean 'lenet'?" in message
    assert f"Known: {', '.join(models.MODELS.names())}" in message
    for name in SEED_MODELS:
        assert name in message


def test_unknown_model_without_close_match_has_no_suggestion():
    with pytest.raises(KeyError) as raised:
        models.MODELS.get("resnet152")
    message = raised.value.args[0]
    assert "did you mean" not in message
    assert "Known: applications, cifar10_deep" in message


def test_registry_options_are_the_builders_extra_keywords():
    assert models.MODELS.options("lenet") == []
    assert models.MODELS.options("cifar10_net") == ["dropout_rate", "dense_dropout_rate"]
    assert models.MODELS.options("tiny") == ["filters"]
    assert "tiny" in models.MODELS and "nope" not in models.MODELS


def test_simple_cnn_batchnorm_momentum_suits_small_datasets():
    # With Keras' default 0.99 a ~200-step run left the moving statistics so far behind the weights that
    # hymenoptera_scratch scored 44.7% in inference mode against 87.5% in training mode.
    model = models.build_model("simple_cnn", input_shape=(32, 32, 3), num_classes=2, filters=(4, 8))
    momenta = {layer.momentum for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)}
    assert momenta == {0.9}
