"""Test-time augmentation: average the softmax of an image and of its horizontal mirror.

`flip_tta_model(model)` wraps a classifier in a Functional model that calls it twice (on the images and
on their left-right mirror, sharing its weights) and averages the two probability vectors. It is an
ordinary Keras model: `evaluate` and `predict` use it as is (compile it with the loss and metrics first),
it saves to `.keras` and loads without custom objects (the mirror is the `keras.ops.flip` operation, the
average a `keras.layers.Average`), and `model.export` turns it into a SavedModel whose serving function
includes the mirror. The fast CIFAR-10 recipes (Page's ResNet-9, airbench94) report their 94% with this
flip TTA. It costs two forward passes per image.
"""

from __future__ import annotations

import keras
from keras import layers

TTA_MODES = ("none", "flip")


def flip_tta_model(model: keras.Model) -> keras.Model:
    """`model` applied to the images and their horizontal mirror, probabilities averaged.

    Args:
        model: a classifier whose input is images [batch, H, W, C] (channels last) and whose output is
            probabilities [batch, classes] (softmax; averaging logits would be a different thing).
    Returns:
        a Functional keras.Model with the same input shape, output float32 [batch, classes] named
        `probabilities`, named `<model name>_flip_tta`; it shares `model`'s weights.
    Raises:
        ValueError: when `model` has more than one input or output, or its input is not rank 4.
    """
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(f"flip TTA needs a model with one input and one output. Received: "
                         f"{len(model.inputs)} inputs and {len(model.outputs)} outputs ({model.name})")
    shape = model.inputs[0].shape
    if len(shape) != 4:
        raise ValueError(f"flip TTA needs image input [batch, H, W, C]. Received: input shape {tuple(shape)} "
                         f"({model.name})")
    images = keras.Input(shape=tuple(shape[1:]), dtype=model.inputs[0].dtype, name="image")
    mirrored = keras.ops.flip(images, axis=2)  # the width axis, channels last
    probabilities = layers.Average(dtype="float32", name="probabilities")([model(images), model(mirrored)])
    return keras.Model(images, probabilities, name=f"{model.name}_flip_tta")


def with_tta(model: keras.Model, mode: str) -> keras.Model:
    """`model` itself for mode "none", `flip_tta_model(model)` for "flip". Raises ValueError otherwise."""
    if mode == "none":
        return model
    if mode == "flip":
        return flip_tta_model(model)
    raise ValueError(f"tta must be one of {', '.join(TTA_MODES)}. Received: tta={mode!r}")
