"""The Keras internals pipeline/compat/'s augmentation and EMA section relies on. Each test fails naming
the installed Keras version when an upgrade changes one of them."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipeline import compat


def _require(condition, what: str) -> None:
    if not condition:
        pytest.fail(f"Keras {compat.KERAS_VERSION}: {what}; update pipeline/compat/'s augmentation/EMA section")


def _seed(a, b):
    return tf.constant([a, b], tf.int64)


def test_routed_layers_draw_only_from_the_stream_nested_layers_included():
    _require(hasattr(keras.layers.Layer, "_flatten_layers"), "Layer._flatten_layers is gone")
    _require(hasattr(keras.layers.RandAugment, "_get_seed_generator"), "_get_seed_generator is gone")
    stream = compat.StatelessSeedStream()
    layer = compat.route_seeds(
        keras.layers.RandomColorJitter(value_range=(0, 255), brightness_factor=0.5, hue_factor=0.2, seed=1), stream
    )
    states = [g.state.numpy().copy() for g in (layer.generator, layer.random_brightness.generator)]
    images = tf.random.stateless_uniform([4, 8, 8, 3], [0, 1], 0, 255)

    @tf.function
    def apply(seed):
        with stream.using(seed):
            return layer(images, training=True)

    first, again, other = apply(_seed(1, 2)), apply(_seed(1, 2)), apply(_seed(3, 4))
    _require(np.array_equal(first.numpy(), again.numpy()), "a routed layer is not a function of the seed")
    _require(not np.array_equal(first.numpy(), other.numpy()), "a routed layer ignores the seed")
    _require(
        all(
            np.array_equal(s, g.state.numpy())
            for s, g in zip(states, (layer.generator, layer.random_brightness.generator))
        ),
        "a routed layer still advanced its own SeedGenerator",
    )
    with pytest.raises(RuntimeError, match="outside `with stream.using"):
        stream.next()


def test_rand_augment_transformation_takes_per_image_operation_indices():
    stream = compat.StatelessSeedStream()
    layer = keras.layers.RandAugment(value_range=(0, 255), num_ops=2, factor=0.5)
    compat.route_seeds(compat.per_image_rand_augment(layer, stream), stream)
    images = tf.random.stateless_uniform([6, 8, 8, 3], [0, 1], 0, 255)
    with stream.using(_seed(5, 6)):
        transformation = layer.get_random_transformation(images, training=True)
        _require(
            set(transformation) == {"transforms", "layer_idxes"},
            f"RandAugment's transformation keys changed: {sorted(transformation)}",
        )
        _require(tuple(transformation["layer_idxes"].shape) == (2, 6, 1, 1, 1), "per-image indices not in place")
        out = layer.transform_images(images, transformation, training=True)
    _require(tuple(out.shape) == (6, 8, 8, 3), "RandAugment.transform_images refuses per-image indices")


def test_cut_mix_transformation_has_masks_and_weights_the_label_fix_reads():
    stream = compat.StatelessSeedStream()
    layer = compat.route_seeds(compat.exact_area_cut_mix(keras.layers.CutMix(factor=(1.0, 1.0))), stream)
    images = tf.reshape(tf.repeat(tf.range(8, dtype=tf.float32), 10 * 10 * 3), [8, 10, 10, 3])
    labels = tf.one_hot(tf.range(8), 8)
    with stream.using(_seed(7, 8)):
        transformation = layer.get_random_transformation(images, training=True)
        _require(
            {"batch_masks", "mix_weight", "permutation_order"} <= set(transformation),
            f"CutMix's transformation keys changed: {sorted(transformation)}",
        )
        out = layer({"images": images, "labels": labels}, training=True)
    kept = np.mean(out["images"].numpy()[..., 0] == np.arange(8)[:, None, None], axis=(1, 2))
    _require(np.allclose(np.diag(out["labels"].numpy()), kept, atol=1e-6), "CutMix labels != pixel fractions")


def test_ema_slots_pair_with_the_trainable_variables():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1, use_ema=True, ema_momentum=0.5))
    model.compile(optimizer, loss="mse")
    with pytest.raises(RuntimeError, match="not built yet"):
        compat.ema_variable_pairs(model.optimizer)
    model.fit(np.ones((4, 2), np.float32), np.zeros((4, 1), np.float32), epochs=1, verbose=0)
    pairs = compat.ema_variable_pairs(model.optimizer)
    _require(
        [id(v) for v, _ in pairs] == [id(v) for v in model.trainable_variables],
        "the optimizer's _trainable_variables no longer match the model's",
    )
    _require(all(tuple(v.shape) == tuple(a.shape) for v, a in pairs), "EMA slot shapes differ from the variables'")
    with pytest.raises(ValueError, match="use_ema=True"):
        compat.ema_variable_pairs(keras.optimizers.SGD(0.1))
