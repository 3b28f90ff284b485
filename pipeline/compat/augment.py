"""Augmentation layers' randomness (stateless seeds, per-image RandAugment, exact CutMix labels) and the optimizer's EMA slots.

Part of `pipeline.compat` (see its docstring); tested in tests/test_compat_*.py.
"""

from __future__ import annotations

import keras

from pipeline.compat.layers import iter_layers

# --------------------------------------------------------------------------------------------------
# Augmentation layers' randomness, and the optimizer's EMA slots (see pipeline/data/batch_augment.py, pipeline/training/ema.py)
# --------------------------------------------------------------------------------------------------
#
# Keras' image augmentation layers draw their random numbers from a `SeedGenerator` whose state is a
# variable that every draw reads and increments. Inside a parallel `tf.data` map, batches read and bump
# it in whatever order the threads run, so a seed does not repeat a run, and two batches can read the
# same state and draw the same numbers. `route_seeds` makes every draw of a layer (and of the layers it
# holds: RandAugment's eleven, RandomColorJitter's four) come from `StatelessSeedStream`: seeds folded
# from one stateless seed per batch, so the augmentation is a pure function of (batch, seed). It
# replaces the private `Layer._get_seed_generator` (keras/src/layers/preprocessing/data_layer.py),
# through which all those layers fetch their generator, and walks nested layers with the private
# `Layer._flatten_layers`.
#
# RandAugment draws its `num_ops` operation indices once per call, so a whole batch gets the same
# operations (only their magnitudes vary per image); the paper and its reference code pick the operations
# per image. `per_image_rand_augment` replaces the indices (the "layer_idxes" entry of the dict that
# `RandAugment.get_random_transformation` returns, shape [num_ops]) with per-image ones, shape
# [num_ops, batch, 1, 1, 1]: `RandAugment.transform_images` computes every candidate operation on the
# whole batch anyway and selects with `where(layer_idxes[i] == index, ...)`, which then broadcasts per
# image. Same cost. (Before Keras 3.11 the indices were drawn once per trace: keras-team/keras#21169.)
#
# CutMix labels an example with the continuous box area (1 - (x1 - x0) (y1 - y0) / (H W)) but pastes
# the whole pixels whose coordinates fall in the box, so label and pixels disagree by up to a row and a
# column (3% of a 32 x 32 image). `exact_area_cut_mix` recomputes the "mix_weight" entry of the dict that
# `CutMix.get_random_transformation` returns from its "batch_masks" entry (the pasted pixels, [B, H, W, C]
# bool, channels last), as the CutMix authors' code does ("adjust lambda to exactly match pixel ratio").
#
# The weight EMA of Keras optimizers (`use_ema=True`) lives in the private `_model_variables_moving_average`
# list, aligned with the private `_trainable_variables` (keras/src/optimizers/base_optimizer.py), and a
# `LossScaleOptimizer` (mixed_float16) holds the EMA in its `inner_optimizer`. `ema_variable_pairs` reads
# them; tests/compat/test_compat_augment.py fails, naming the Keras version, when any of these internals change.


class StatelessSeedStream(keras.random.SeedGenerator):
    """A `SeedGenerator` without state: inside `with stream.using(seed):` (seed: int32/int64 [2], one
    per batch), its n-th draw is `tf.random.experimental.stateless_fold_in(seed, n)`.

    Keras' random functions accept a `SeedGenerator` and call its `next()`; this one is never a variable,
    so it is safe to trace once into a parallel tf.data map. Drawing outside `using` raises RuntimeError.
    """

    def __init__(self):  # no super().__init__(): the base class would create the state variable
        self.name = "stateless_seed_stream"
        self._seed = None
        self._draws = 0

    def next(self, ordered=True):
        import tensorflow as tf

        if self._seed is None:
            raise RuntimeError("StatelessSeedStream: a random draw outside `with stream.using(seed):`")
        self._draws += 1
        return tf.random.experimental.stateless_fold_in(self._seed, self._draws)

    def using(self, seed):
        """Context manager: draws inside it are folded from `seed` (a tensor [2]), counted from 1."""
        import contextlib

        @contextlib.contextmanager
        def scope():
            previous = (self._seed, self._draws)
            self._seed, self._draws = seed, 0
            try:
                yield self
            finally:
                self._seed, self._draws = previous

        return scope()

    def get_config(self):
        return {}


def route_seeds(layer: keras.layers.Layer, stream: StatelessSeedStream) -> keras.layers.Layer:
    """Makes `layer` and every layer nested in it draw from `stream` instead of their own generators
    (see the comment above). Returns `layer`."""
    for inner in iter_layers(layer, include_self=True):
        object.__setattr__(inner, "_get_seed_generator", lambda backend=None: stream)
    return layer


def per_image_rand_augment(layer: keras.layers.Layer, stream: StatelessSeedStream) -> keras.layers.Layer:
    """Makes a `keras.layers.RandAugment` choose its operations per image rather than per batch (see the
    comment above), with indices drawn from `stream`. Returns `layer`."""
    import tensorflow as tf

    upstream = layer.get_random_transformation

    def get_random_transformation(data, training=True, seed=None):
        transformation = upstream(data, training=training, seed=seed)
        if transformation is None:
            return None
        images = data["images"] if isinstance(data, dict) else data
        if images.shape.rank != 4:
            return transformation
        candidates = len(transformation["transforms"])
        transformation["layer_idxes"] = tf.random.stateless_uniform(
            [layer.num_ops, tf.shape(images)[0], 1, 1, 1], stream.next(), minval=0, maxval=candidates, dtype=tf.int32
        )
        return transformation

    object.__setattr__(layer, "get_random_transformation", get_random_transformation)
    return layer


def exact_area_cut_mix(layer: keras.layers.Layer) -> keras.layers.Layer:
    """Makes a channels-last `keras.layers.CutMix` label each example with the fraction of pixels it
    really keeps (see the comment above). Returns `layer`."""
    import tensorflow as tf

    upstream = layer.get_random_transformation

    def get_random_transformation(data, training=True, seed=None):
        transformation = upstream(data, training=training, seed=seed)
        if transformation is None:
            return None
        pasted = tf.cast(transformation["batch_masks"][..., 0], tf.float32)
        transformation["mix_weight"] = 1.0 - tf.reduce_mean(pasted, axis=[1, 2])
        return transformation

    object.__setattr__(layer, "get_random_transformation", get_random_transformation)
    return layer


def ema_variable_pairs(optimizer) -> list:
    """[(model variable, its moving average)] of an optimizer built with `use_ema=True` (unwrapping a
    `LossScaleOptimizer`). Raises ValueError when the optimizer keeps no EMA, RuntimeError before the
    optimizer is built (it creates its slots on the first step or on `optimizer.build(variables)`)."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    if not getattr(inner, "use_ema", False):
        raise ValueError(
            f"The optimizer keeps no weight EMA: build it with use_ema=True. "
            f"Received: {type(inner).__name__} with use_ema={getattr(inner, 'use_ema', None)}"
        )
    if not inner.built:
        raise RuntimeError(
            "The optimizer is not built yet: its EMA slots exist after the first training "
            "step or `optimizer.build(model.trainable_variables)`."
        )
    averages = inner._model_variables_moving_average
    variables = inner._trainable_variables
    if len(averages) != len(variables):
        raise RuntimeError(f"Keras {keras.__version__}: {len(variables)} variables but {len(averages)} EMA slots")
    return [(variable, average) for variable, average in zip(variables, averages) if average is not None]
