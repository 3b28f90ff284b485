"""Test-time augmentation: average the softmax of an image and of its horizontal mirror.

`flip_tta_model(model)` wraps a classifier in a Functional model that calls it twice (on the images and
on their left-right mirror, sharing its weights) and averages the two probability vectors. It is an
ordinary Keras model: `evaluate` and `predict` use it as is (compile it with the loss and metrics first),
it saves to `.keras` and loads without custom objects (the mirror is the `keras.ops.flip` operation, the
average a `keras.layers.Average`), and `model.export` turns it into a SavedModel whose serving function
includes the mirror. The fast CIFAR-10 recipes (Page's ResNet-9, airbench94) report their 94% with this
flip TTA. It costs two forward passes per image.

`flip_translate_tta_model(model)` adds airbench94's second TTA level (its `tta_level=2`): the image and
its mirror, each also shifted one pixel up-left and one pixel down-right (reflection padding); the two
unshifted views weigh 1/2 together, the four shifted ones 1/2 together. Six forward passes per image.
"""

from __future__ import annotations

import keras
from keras import layers

from pipeline.config.choices import TTA_MODES


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
    shape = _check_single_image_model(model, "flip TTA")
    images = keras.Input(shape=tuple(shape[1:]), dtype=model.inputs[0].dtype, name="image")
    mirrored = keras.ops.flip(images, axis=2)  # the width axis, channels last
    probabilities = layers.Average(dtype="float32", name="probabilities")([model(images), model(mirrored)])
    return keras.Model(images, probabilities, name=f"{model.name}_flip_tta")


def _check_single_image_model(model: keras.Model, what: str):
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            f"{what} needs a model with one input and one output. Received: "
            f"{len(model.inputs)} inputs and {len(model.outputs)} outputs ({model.name})"
        )
    shape = model.inputs[0].shape
    if len(shape) != 4:
        raise ValueError(
            f"{what} needs image input [batch, H, W, C]. Received: input shape {tuple(shape)} ({model.name})"
        )
    return shape


def flip_translate_tta_model(model: keras.Model, *, shift: int = 1) -> keras.Model:
    """`model` on six views: the image, its mirror, and both shifted `shift` pixels up-left and down-right
    (reflection padding, so no black border). Probabilities: 1/2 x mean(unshifted pair) + 1/2 x mean(four
    shifted views), after airbench94's `tta_level=2` (Keller Jordan, 2024; it averages logits).

    Args:
        model: as for `flip_tta_model`; its input needs a fixed height and width larger than `shift`.
        shift: pixels of the translation.
    Returns:
        a Functional keras.Model, input as `model`'s, output float32 [batch, classes] `probabilities`,
        named `<model name>_flip_translate_tta`; it shares `model`'s weights.
    Raises:
        ValueError: as `flip_tta_model`, and for an input without a fixed size or smaller than the shift.
    """
    shape = _check_single_image_model(model, "flip-translate TTA")
    height, width = shape[1], shape[2]
    if height is None or width is None or min(height, width) <= shift:
        raise ValueError(
            f"flip-translate TTA needs a fixed image size larger than {shift} pixels. Received: "
            f"input shape {tuple(shape)} ({model.name})"
        )
    images = keras.Input(shape=tuple(shape[1:]), dtype=model.inputs[0].dtype, name="image")
    mirrored = keras.ops.flip(images, axis=2)
    padded = keras.ops.pad(images, [[0, 0], [shift, shift], [shift, shift], [0, 0]], mode="reflect")
    views = [padded[:, :height, :width, :], padded[:, 2 * shift :, 2 * shift :, :]]  # content moves down-right, up-left
    views += [keras.ops.flip(view, axis=2) for view in views]
    unshifted = layers.Average(dtype="float32", name="unshifted")([model(images), model(mirrored)])
    shifted = layers.Average(dtype="float32", name="shifted")([model(view) for view in views])
    probabilities = layers.Average(dtype="float32", name="probabilities")([unshifted, shifted])
    return keras.Model(images, probabilities, name=f"{model.name}_flip_translate_tta")


def with_tta(model: keras.Model, mode: str) -> keras.Model:
    """`model` itself for mode "none", `flip_tta_model(model)` for "flip", `flip_translate_tta_model(model)`
    for "flip_translate". Raises ValueError otherwise."""
    if mode == "none":
        return model
    if mode == "flip":
        return flip_tta_model(model)
    if mode == "flip_translate":
        return flip_translate_tta_model(model)
    raise ValueError(f"tta must be one of {', '.join(TTA_MODES)}. Received: tta={mode!r}")
