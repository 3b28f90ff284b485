"""`cifar10_fast`: a small residual network for fast CIFAR-10 training, after the public descriptions of
David Page's ResNet-9 ("How to train your ResNet", myrtle.ai, 2018: 94% in 24 epochs) and Keller Jordan's
airbench94 ("94% on CIFAR-10 in 3.29 seconds on a single GPU", 2024: 94% in about 10 epochs). Our own
Keras code; the shape is airbench94's, with ResNet-9's identity shortcuts by default, or airbench94's plain
stack with identity-initialised convolutions (`residual=False, identity_init=True`, its "implicit
residual"; the experiment cifar10_fast uses that).

    image 32x32x3
    stem     2x2 conv, 24 filters, valid (31x31), bias, GELU     -- `init_whitening` can set it to PCA whitening
    group 1  3x3 conv width -> max-pool 2 -> BN -> GELU          (15x15)
             + shortcut around [3x3 conv -> BN -> GELU]          (residual=False: no shortcut)
    group 2  the same at 4 x width                              (7x7)
    group 3  the same at 4 x width                              (3x3)
    head     global max-pool -> dense (no bias) -> x logit_scale -> softmax `probabilities` (float32)

BatchNorm has no scale (gamma) parameter, as in both references: a ReLU/GELU net with BN before it gains
nothing from it, and it keeps weight decay from fighting the normalisation. BN momentum defaults to 0.9
(PyTorch's 0.1): Keras' 0.99 averages over ~100 steps, about a whole epoch at batch 512, too slow for a
10-epoch run. The logits are scaled down (1/9, airbench's value) so the softmax starts soft.

At width 64 (the default): 1,973,944 parameters (1,971,640 trainable) and 0.236 GFLOPs per 32x32 image forward (2 x multiply-
adds of the convolutions and the dense layer), about 0.71 GFLOPs per training image; airbench94 is the
same size (its 10 epochs of 50,000 images are its 0.36 PFLOP).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from models.registry import register_model

STEM_NAME = "whiten"


@keras.saving.register_keras_serializable(package="models")
class PartialIdentity(keras.initializers.Initializer):
    """A conv kernel [kh, kw, in, out] whose first min(in, out) filters are identities (filter i passes
    input channel i through at the centre tap, every other entry 0) and whose other filters come from
    `base`: airbench94's "implicit residual via identity initialization" (PyTorch's `dirac_` on the
    first `in` filters), which lets a plain conv stack start close to a residual one."""

    def __init__(self, base="glorot_uniform"):
        self.base = base

    def __call__(self, shape, dtype=None):
        kernel = keras.initializers.get(self.base)(shape, dtype=dtype)
        height, width, channels_in, channels_out = shape
        count = min(channels_in, channels_out)
        identity = np.zeros(shape, np.float32)
        identity[height // 2, width // 2, np.arange(count), np.arange(count)] = 1.0
        replaced = np.zeros(shape, bool)
        replaced[..., :count] = True
        return keras.ops.where(replaced, keras.ops.cast(identity, kernel.dtype), kernel)

    def get_config(self):
        return {"base": self.base}


def _norm_act(x, *, name, momentum, activation):
    x = layers.BatchNormalization(momentum=momentum, epsilon=1e-5, scale=False, name=f"{name}_bn")(x)
    return layers.Activation(activation, name=f"{name}_act")(x)


def _group(x, filters, *, name, momentum, activation, residual, identity_init):
    initializer = PartialIdentity() if identity_init else "glorot_uniform"
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_initializer=initializer, name=f"{name}_conv")(
        x
    )
    x = layers.MaxPooling2D(2, name=f"{name}_pool")(x)
    x = _norm_act(x, name=name, momentum=momentum, activation=activation)
    branch = layers.Conv2D(
        filters, 3, padding="same", use_bias=False, kernel_initializer=initializer, name=f"{name}_res_conv"
    )(x)
    branch = _norm_act(branch, name=f"{name}_res", momentum=momentum, activation=activation)
    return layers.Add(name=f"{name}_add")([x, branch]) if residual else branch


@register_model()
def cifar10_fast(
    *,
    input_shape=(32, 32, 3),
    num_classes=10,
    width=64,
    multipliers=(1, 4, 4),
    residual=True,
    activation="gelu",
    batchnorm_momentum=0.9,
    logit_scale=1 / 9,
    whiten=False,
    identity_init=False,
):
    """The fast CIFAR-10 residual net (see the module docstring).

    Args:
        input_shape: (H, W, C); at least 16x16 (three 2x poolings after the 2x2 stem).
        num_classes: outputs of the softmax.
        width: filters of group 1; group i has width x multipliers[i].
        multipliers: width multiples of the three groups (airbench94: 1, 4, 4; ResNet-9: 2, 4, 8 at 64).
        residual: identity shortcut around each group's second convolution.
        activation: a Keras activation name ("gelu" as airbench; "relu" is cheaper on CPUs).
        batchnorm_momentum: Keras BatchNormalization momentum (moving = m * moving + (1 - m) * batch).
        logit_scale: factor on the logits before the softmax.
        whiten: the stem is frozen, to be set to the PCA whitening of the training images' 2x2 patches
            (airbench94): the pipeline does that after building (`data_init`, with normalised training
            images); without the pipeline, call `init_whitening`.
        identity_init: each group's convolutions start with their first min(in, out) filters as
            identities (`PartialIdentity`, airbench94's implicit residual); else Glorot-uniform.
    Returns:
        a Functional keras.Model: float inputs [batch, H, W, C] as normalised by the pipeline, float32
        probabilities [batch, num_classes].
    Raises:
        ValueError: for fewer than three multipliers or an input smaller than 16x16.
    """
    if len(multipliers) != 3:
        raise ValueError(f"multipliers must have 3 values (one per group). Received: multipliers={multipliers!r}")
    if min(input_shape[:2]) < 16:
        raise ValueError(f"cifar10_fast needs inputs of at least 16x16. Received: input_shape={tuple(input_shape)}")
    channels = input_shape[-1]
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    # 2x2 valid: 2 x (2 * 2 * C) filters, room for the whitening basis and its negative (see init_whitening).
    stem = layers.Conv2D(2 * 4 * channels, 2, padding="valid", use_bias=True, name=STEM_NAME, trainable=not whiten)
    stem.keep_frozen = bool(whiten)  # frozen from the start, so summaries count it right (see init_whitening)
    x = stem(inputs)
    x = layers.Activation(activation, name=f"{STEM_NAME}_act")(x)
    for index, multiple in enumerate(multipliers, start=1):
        x = _group(
            x,
            int(width * multiple),
            name=f"group{index}",
            momentum=batchnorm_momentum,
            activation=activation,
            residual=residual,
            identity_init=identity_init,
        )
    x = layers.GlobalMaxPooling2D(name="pool")(x)
    x = layers.Dense(num_classes, use_bias=False, name="fc")(x)
    logits = layers.Rescaling(logit_scale, name="logits")(x)
    outputs = layers.Activation("softmax", dtype="float32", name="probabilities")(logits)
    return keras.Model(inputs, outputs, name="cifar10_fast")


WHITENING_IMAGES = 5000  # airbench94 whitens with 5,000 training images


def _data_init(network: keras.Model, images, *, whiten=False, **_options) -> str | None:
    """`cifar10_fast`'s data-dependent initialisation: the frozen whitening stem when `whiten` is set.
    `images()` returns float [N, H, W, C] training images as the network receives them. Returns what it
    did (for the run's log), or None."""
    if not whiten:
        return None
    sample = images()[:WHITENING_IMAGES]
    init_whitening(network, sample)
    return f"stem {STEM_NAME!r} set to the PCA whitening of {len(sample):,} training images' 2x2 patches (frozen)"


# A builder's `data_init(network, images, **options)` runs once after building a new model, with float
# [N, H, W, C] training images as the network receives them (pipeline/training/model_setup.py); it returns a line for
# the run's log, or None.
cifar10_fast.data_init = _data_init


def whitening_kernel(images, *, kernel_size: int = 2, epsilon: float = 5e-4, chunk: int = 512) -> np.ndarray:
    """PCA-whitening filters of the k x k patches of `images`, and their negatives (airbench's first layer).

    The (uncentred) patch covariance S = E[p p^T] over every k x k patch has eigenvectors v_i and
    eigenvalues l_i; filter i is v_i / sqrt(l_i + epsilon), so the filter responses are decorrelated
    with unit variance; the negatives follow so that a one-sided activation keeps both signs.

    Args:
        images: float [N, H, W, C], normalised as the network's input (a few thousand images suffice).
        kernel_size: k.
        epsilon: added to the eigenvalues (keeps the near-zero directions from exploding).
        chunk: images per step of the covariance sum (memory).
    Returns:
        float32 [k, k, C, 2 * k * k * C], a Conv2D kernel; filters sorted by decreasing eigenvalue.
    """
    images = np.asarray(images, np.float32)
    channels = images.shape[-1]
    dim = kernel_size * kernel_size * channels
    covariance, count = np.zeros((dim, dim), np.float64), 0
    for start in range(0, len(images), chunk):
        block = images[start : start + chunk]
        # [n, H', W', C, k, k] -> [patches, k, k, C], in the (row, col, channel) order of a Conv2D kernel
        windows = np.lib.stride_tricks.sliding_window_view(block, (kernel_size, kernel_size), axis=(1, 2))
        patches = windows.transpose(0, 1, 2, 4, 5, 3).reshape(-1, dim).astype(np.float64)
        covariance += patches.T @ patches
        count += len(patches)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance / max(count, 1))
    order = np.argsort(eigenvalues)[::-1]
    filters = eigenvectors[:, order] / np.sqrt(eigenvalues[order] + epsilon)
    kernel = np.concatenate([filters, -filters], axis=1)
    return kernel.reshape(kernel_size, kernel_size, channels, 2 * dim).astype(np.float32)


def init_whitening(network: keras.Model, images, *, epsilon: float = 5e-4, trainable: bool = False) -> None:
    """Sets `network`'s stem (the layer named "whiten") to the whitening filters of `images` with zero
    bias; `trainable=False` freezes it (as airbench does; recompile afterwards).

    Args:
        network: a `cifar10_fast` model (the registered network itself, not the pipeline's model around it).
        images: float [N, H, W, C] as the network receives them, i.e. after the pipeline's normalisation.
    Raises:
        ValueError: when the network has no "whiten" layer or its kernel shape does not fit.
    """
    try:
        layer = network.get_layer(STEM_NAME)
    except ValueError:
        raise ValueError(
            f"init_whitening needs a cifar10_fast network (a layer named {STEM_NAME!r}). Received: {network.name}"
        ) from None
    kernel = whitening_kernel(images, kernel_size=int(layer.kernel.shape[0]), epsilon=epsilon)
    if tuple(kernel.shape) != tuple(layer.kernel.shape):
        raise ValueError(
            f"whitening kernel {kernel.shape} does not fit layer {STEM_NAME!r} {tuple(layer.kernel.shape)}"
        )
    layer.kernel.assign(kernel)
    layer.bias.assign(np.zeros(layer.bias.shape, np.float32))
    layer.trainable = trainable
    # Kept frozen when a training phase sets the model's layers trainable (pipeline/phases.set_trainable).
    layer.keep_frozen = not trainable
