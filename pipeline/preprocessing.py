"""Image transforms shared by training, evaluation, prediction and the exported serving graph.

The eval transform (`prepare_images`) is defined here once: the input pipeline's eval path, `predict` and
the SavedModel's signatures all call it, so what a served model sees cannot drift from what it was
evaluated on. Normalisation is not here: it is the model's first layer (`normalization_layer`), so every
saved model carries its own.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from keras import layers


def convert_channels(images: tf.Tensor, channels: int | None) -> tf.Tensor:
    """[..., H, W, C] with C in {1, 2, 3, 4} -> [..., H, W, channels]; alpha is dropped."""
    if channels is None:
        return images
    source = images.shape[-1]
    if source in (2, 4):  # grey+alpha or RGBA: drop alpha
        images = images[..., : source - 1]
        source -= 1
    if source == channels:
        return images
    if source == 1 and channels == 3:
        return tf.image.grayscale_to_rgb(images)
    if source == 3 and channels == 1:
        # rgb_to_grayscale on uint8 rounds; compute in float and cast back to keep the input dtype.
        dtype = images.dtype
        grey = tf.image.rgb_to_grayscale(tf.cast(images, tf.float32))
        return tf.cast(tf.round(grey), dtype) if dtype.is_integer else grey
    raise ValueError(f"cannot convert images with {source} channels to {channels}")


def prepare_images(images: tf.Tensor, *, image_size=None, channels: int | None = None,
                   resize_method: str = "bilinear") -> tf.Tensor:
    """The eval transform: channel conversion, resize to `image_size`, float32 in [0, 255].

    Args:
        images: uint8 or float tensor [H, W, C] or [B, H, W, C], values in [0, 255].
        image_size: (height, width) or None to keep the size.
        channels: output channels (1 or 3) or None to keep them.
        resize_method: a `tf.image.resize` method.
    Returns:
        float32 tensor with the same rank, values in [0, 255].
    """
    images = convert_channels(images, channels)
    images = tf.cast(images, tf.float32)
    if image_size is not None:
        height, width = int(image_size[0]), int(image_size[1])
        if tuple(images.shape[-3:-1]) != (height, width):
            images = tf.image.resize(images, (height, width), method=resize_method)
            images = tf.clip_by_value(images, 0.0, 255.0)  # bicubic overshoots
    return images


def decode_image(encoded: tf.Tensor, *, channels: int) -> tf.Tensor:
    """Encoded JPEG/PNG/GIF/BMP bytes -> uint8 [H, W, channels]; first frame of an animated GIF."""
    image = tf.io.decode_image(encoded, channels=0, expand_animations=False, dtype=tf.uint8)
    image = tf.ensure_shape(image, [None, None, None])
    # decode_image(channels=N) cannot turn RGB into grey; decode natively then convert ourselves.
    return tf.cond(
        tf.shape(image)[-1] >= 3,
        lambda: convert_channels(tf.ensure_shape(image[..., :3], [None, None, 3]), channels),
        lambda: convert_channels(tf.ensure_shape(image[..., :1], [None, None, 1]), channels))


def normalization_layer(mode: str, *, mean=None, std=None) -> layers.Layer:
    """The model's first layer: [0, 255] pixels -> the range the network trains on.

    Args:
        mode: "unit" scales to [0, 1]; "standardize" subtracts the per-channel mean and divides by the
            standard deviation (both in pixel units, computed on the training split).
    """
    if mode == "unit":
        return layers.Rescaling(1.0 / 255.0, name="normalize")
    if mode == "standardize":
        mean = np.asarray(mean, np.float32)
        variance = np.square(np.asarray(std, np.float32))
        return layers.Normalization(mean=mean, variance=variance, name="normalize")
    raise ValueError(f"normalization must be 'unit' or 'standardize'. Received: mode={mode!r}")


def channel_statistics(images: np.ndarray, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images [N, H, W, C], in chunks (float64 accumulators)."""
    channels = images.shape[-1]
    total = np.zeros(channels)
    total_sq = np.zeros(channels)
    count = 0
    for start in range(0, len(images), chunk):
        block = images[start:start + chunk].astype(np.float64).reshape(-1, channels)
        total += block.sum(axis=0)
        total_sq += np.square(block).sum(axis=0)
        count += len(block)
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - np.square(mean), 1e-12))
    return mean.tolist(), std.tolist()


def build_augmenter(*, horizontal_flip=False, width_shift=0.0, height_shift=0.0, fill_mode="nearest",
                    crop_padding=0, rotation=0.0, zoom=0.0, image_size=None, seed=None):
    """Training-only augmentation from Keras preprocessing layers: a function, or None if nothing is on.

    Works on float batches [B, H, W, C] in [0, 255]. `crop_padding` pads by reflection and random-crops
    back to the original size (the classic CIFAR "pad 4, crop 32").
    """
    steps = []
    if crop_padding:
        if image_size is None:
            raise ValueError("crop_padding needs image_size")
        pad = int(crop_padding)
        steps.append(lambda x, training: tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode="REFLECT"))
        steps.append(layers.RandomCrop(int(image_size[0]), int(image_size[1]), seed=seed, name="random_crop"))
    if width_shift or height_shift:
        steps.append(layers.RandomTranslation(height_shift, width_shift, fill_mode=fill_mode, seed=seed,
                                              name="random_shift"))
    if rotation:
        steps.append(layers.RandomRotation(rotation, fill_mode=fill_mode, seed=seed, name="random_rotation"))
    if zoom:
        steps.append(layers.RandomZoom(zoom, fill_mode=fill_mode, seed=seed, name="random_zoom"))
    if horizontal_flip:
        steps.append(layers.RandomFlip("horizontal", seed=seed, name="random_flip"))
    if not steps:
        return None

    def augment(images):
        for step in steps:
            images = step(images, training=True)
        return images

    return augment
