"""The seed projects' networks, layer for layer (parameter counts are asserted in the tests).

Functional API with named layers. Each ends in a float32 softmax named `probabilities`, so the output
stays float32 under a mixed-precision policy and the exported model returns probabilities directly.
"""

from __future__ import annotations

import keras
from keras import layers

from models.registry import register_model


def _inputs(input_shape):
    return keras.Input(shape=tuple(input_shape), name="image")


def _head(x, num_classes):
    logits = layers.Dense(num_classes, name="logits")(x)
    return layers.Activation("softmax", dtype="float32", name="probabilities")(logits)


@register_model()
def lenet(*, input_shape=(28, 28, 1), num_classes=10):
    """LeNet as in seed 003: conv 20@5x5 -> pool -> conv 50@5x5 -> pool -> dense 500 -> dense 10.

    1,256,080 parameters at 28x28x1 with 10 classes.
    """
    inputs = _inputs(input_shape)
    x = layers.Conv2D(20, 5, padding="same", activation="relu", name="conv1")(inputs)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Conv2D(50, 5, padding="same", activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(2, name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(500, activation="relu", name="fc1")(x)
    return keras.Model(inputs, _head(x, num_classes), name="lenet")


@register_model()
def cifar10_net(*, input_shape=(32, 32, 3), num_classes=10, dropout_rate=0.25, dense_dropout_rate=0.5):
    """Seed 003's small CIFAR-10 net: conv 32 -> pool -> dropout -> conv 64 -> pool -> dense 512 -> dropout.

    2,122,186 parameters at 32x32x3.
    """
    inputs = _inputs(input_shape)
    x = layers.Conv2D(32, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Dropout(dropout_rate, name="dropout1")(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(2, name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(512, activation="relu", name="fc1")(x)
    x = layers.Dropout(dense_dropout_rate, name="dropout2")(x)
    return keras.Model(inputs, _head(x, num_classes), name="cifar10_net")


@register_model()
def cifar10_deep(*, input_shape=(32, 32, 3), num_classes=10, dropout_rate=0.25, dense_dropout_rate=0.5):
    """Seed 003's deeper CIFAR-10 net (the Keras book's): two conv pairs (same, valid) with pooling and
    dropout, then dense 512 with dropout. 1,250,858 parameters at 32x32x3.
    """
    inputs = _inputs(input_shape)
    x = layers.Conv2D(32, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = layers.Conv2D(32, 3, padding="valid", activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Dropout(dropout_rate, name="dropout1")(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu", name="conv3")(x)
    x = layers.Conv2D(64, 3, padding="valid", activation="relu", name="conv4")(x)
    x = layers.MaxPooling2D(2, name="pool2")(x)
    x = layers.Dropout(dropout_rate, name="dropout2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(512, activation="relu", name="fc1")(x)
    x = layers.Dropout(dense_dropout_rate, name="dropout3")(x)
    return keras.Model(inputs, _head(x, num_classes), name="cifar10_deep")


@register_model()
def fashion_cnn(*, input_shape=(28, 28, 1), num_classes=10):
    """Seed 004's Fashion-MNIST CNN: conv 32 -> pool -> conv 64 -> pool -> dense 128 -> dense 10.

    421,642 parameters at 28x28x1.
    """
    inputs = _inputs(input_shape)
    x = layers.Conv2D(32, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = layers.MaxPooling2D(2, strides=2, name="pool1")(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(2, strides=2, name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(128, activation="relu", name="fc1")(x)
    return keras.Model(inputs, _head(x, num_classes), name="fashion_cnn")


@register_model()
def tiny(*, input_shape=(32, 32, 3), num_classes=10, filters=8):
    """A few thousand parameters: exists so tests and smoke runs take seconds on a CPU."""
    inputs = _inputs(input_shape)
    x = layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu", name="conv1")(inputs)
    x = layers.Conv2D(2 * filters, 3, strides=2, padding="same", activation="relu", name="conv2")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, _head(x, num_classes), name="tiny")
