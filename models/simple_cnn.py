"""A small modern CNN for training from scratch on photo folders of any input size."""

from __future__ import annotations

import keras
from keras import layers

from models.applications import BackboneModel
from models.registry import register_model


@register_model()
def simple_cnn(
    *, input_shape=(128, 128, 3), num_classes=10, filters=(32, 64, 128, 256), dropout_rate=0.3, bn_momentum=0.9
):
    """Conv-BN-ReLU blocks (two convolutions each, then max-pooling), global average pooling, dropout.

    Global pooling makes the parameter count independent of the input size (about 1.2M with the
    default filters), so the same network trains at 64x64 or 224x224. `bn_momentum` is 0.9, not Keras'
    0.99: on a few hundred photos a run has only ~200 steps, and with 0.99 the moving statistics lag the
    weights so far that inference-mode accuracy fell to chance (44.7% vs 87.5% in training mode,
    measured on hymenoptera_scratch).
    """
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = inputs
    for block, width in enumerate(filters, start=1):
        for index in (1, 2):
            x = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"block{block}_conv{index}")(x)
            x = layers.BatchNormalization(momentum=bn_momentum, name=f"block{block}_bn{index}")(x)
            x = layers.Activation("relu", name=f"block{block}_relu{index}")(x)
        x = layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(dropout_rate, name="dropout")(x)
    logits = layers.Dense(num_classes, name="logits")(x)
    outputs = layers.Activation("softmax", dtype="float32", name="probabilities")(logits)
    return keras.Model(inputs, outputs, name="simple_cnn")


@register_model()
def tiny_transfer(*, input_shape=(32, 32, 3), num_classes=10, filters=8):
    """A pretrained-network stand-in of a few thousand parameters: a nested `backbone` model (called in
    inference mode, like the keras.applications bases) and a head. Exists so fine-tuning phases are
    tested in seconds."""
    image = keras.Input(shape=tuple(input_shape), name="backbone_input")
    x = layers.Conv2D(filters, 3, strides=2, padding="same", name="conv1")(image)
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.Activation("relu", name="relu1")(x)
    x = layers.Conv2D(2 * filters, 3, strides=2, padding="same", name="conv2")(x)
    x = layers.Activation("relu", name="relu2")(x)
    # Like a pretrained base: always in inference mode (see applications.BackboneModel for why a plain
    # `backbone(x, training=False)` is not enough in Keras 3).
    backbone = BackboneModel(image, x, name="backbone", inference_mode=True)

    inputs = keras.Input(shape=tuple(input_shape), name="image")
    features = backbone(inputs, training=False)
    x = layers.GlobalAveragePooling2D(name="pool")(features)
    logits = layers.Dense(num_classes, name="logits")(x)
    outputs = layers.Activation("softmax", dtype="float32", name="probabilities")(logits)
    return keras.Model(inputs, outputs, name="tiny_transfer")
