"""Frozen-backbone feature caching: train a new head on the backbone's outputs, computed once.

While the backbone is frozen and the images are not augmented, every epoch pushes the same images through
the same backbone to get the same features: all but the head is wasted work (on a CPU, nearly all of the
time: VGG16's convolutions against one Dense layer). A phase with `cache_features: true` runs the model up
to its `backbone` once per split, keeps the features in memory, and fits a head model on them. The head
model is made of the full model's own layers (shared weights), so when the phase ends the full model holds
the trained head; checkpoints and resume state are written from the full model throughout.
"""

from __future__ import annotations

import time

import keras
import numpy as np

from pipeline import compat
from pipeline.training.phases import PhaseError


def _node_in(parent: keras.Model, child) -> object:
    """The node of `child`'s (single) call inside `parent`'s graph."""
    nodes = compat.nodes_in(parent, child)
    if len(nodes) != 1:
        raise PhaseError(
            f"cache_features: layer {child.name!r} is called {len(nodes)} times in "
            f"{parent.name!r}; caching needs a model that calls it once"
        )
    return nodes[0]


def _single(tensors):
    tensors = list(tensors)
    if len(tensors) != 1:
        raise PhaseError("cache_features: the path to the backbone must carry a single tensor")
    return tensors[0]


class FeatureSplit:
    """A model cut at the output of its layer named `backbone` (which may sit inside nested models).

    `extract(images)` runs everything up to and including the backbone, in inference mode;
    `head` is a keras.Model from the backbone's output to the model's output, built from the model's own
    layers (training it trains the model's head).

    Raises:
        PhaseError: the model has no `backbone`, or a layer before the backbone has trainable weights
            (its output would change while the cached features stay the same).
    """

    def __init__(self, model: keras.Model):
        chain = compat.find_layer_path(model, "backbone")
        if chain is None:
            raise PhaseError(
                "cache_features needs a model with a layer named 'backbone' (the `applications` models have one)"
            )
        self.backbone = chain[-1]
        before, after = [], []
        for parent, child in zip(chain[:-1], chain[1:]):
            node = _node_in(parent, child)
            child_in, child_out = _single(node.input_tensors), _single(node.output_tensors)
            parent_in, parent_out = _single(parent.inputs), _single(parent.outputs)
            # keras.Model on intermediate tensors reuses the parent's layers (no copies, shared weights).
            before.append(None if child_in is parent_in else keras.Model(parent_in, child_in))
            after.append(None if child_out is parent_out else keras.Model(child_out, parent_out))
        self._before = [part for part in before if part is not None]
        trainable = [weight.path for part in self._before for weight in part.trainable_weights]
        if self.backbone.trainable_weights or trainable:
            names = [weight.path for weight in self.backbone.trainable_weights] + trainable
            raise PhaseError(
                f"cache_features: the layers up to the backbone must be frozen, but these weights "
                f"are trainable: {', '.join(names[:5])}{' ...' if len(names) > 5 else ''}. "
                f"Use it in a phase with trainable: none."
            )
        feature_shape = tuple(_single(_node_in(chain[-2], self.backbone).output_tensors).shape[1:])
        inputs = keras.Input(shape=feature_shape, name="features")
        x = inputs
        for part in reversed(after):  # innermost first: the backbone's parent, then its parent...
            if part is not None:
                x = part(x)
        self.head = keras.Model(inputs, x, name=f"{model.name}_head")
        self.feature_shape = feature_shape
        self._extract = None  # compiled by the first `compute`

    def extract(self, images):
        x = images
        for part in self._before:
            x = part(x, training=False)
        return self.backbone(x, training=False)

    def compute(self, dataset) -> tuple[np.ndarray, np.ndarray]:
        """(features, labels) of every batch of a (images, labels) dataset, as float32 / label arrays."""
        import tensorflow as tf

        if self._extract is None:
            # One trace for every batch size (the last batch is smaller), train and validation alike.
            spec = dataset.element_spec[0]
            self._extract = tf.function(
                self.extract, input_signature=[tf.TensorSpec([None, *spec.shape[1:]], spec.dtype)]
            )
        features, labels = [], []
        for images, batch_labels in dataset:
            features.append(keras.ops.convert_to_numpy(self._extract(images)).astype(np.float32, copy=False))
            labels.append(keras.ops.convert_to_numpy(batch_labels))
        return np.concatenate(features), np.concatenate(labels)


def feature_datasets(split: FeatureSplit, train_data, validation_data, *, batch_size: int, seed: int, log=print):
    """Computes the features of the (un-augmented) train and validation datasets once and returns
    tf.data pipelines over them: the training one reshuffled every epoch, like the image pipeline."""
    import tensorflow as tf

    start = time.perf_counter()
    train_features, train_labels = split.compute(train_data)
    if validation_data is not None:
        validation_features, validation_labels = split.compute(validation_data)
    megabytes = (train_features.nbytes + (validation_features.nbytes if validation_data is not None else 0)) / 2**20
    log(
        f"cached backbone features {list(split.feature_shape)} of {len(train_features)} training"
        + (f" and {len(validation_features)} validation" if validation_data is not None else "")
        + f" images in {time.perf_counter() - start:.1f} s ({megabytes:.0f} MiB in memory)"
    )
    train = (
        tf.data.Dataset.from_tensor_slices((train_features, train_labels))
        .shuffle(len(train_features), seed=seed, reshuffle_each_iteration=True)
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    validation = None
    if validation_data is not None:
        validation = (
            tf.data.Dataset.from_tensor_slices((validation_features, validation_labels))
            .batch(batch_size)
            .prefetch(tf.data.AUTOTUNE)
        )
    return train, validation
