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

from pipeline.config.choices import FILL_MODES, NORMALIZATIONS
from pipeline.data import decode


def _square_side(height, width, margin):
    return tf.maximum(tf.minimum(height, width) - 2 * margin, 1)


def center_square_crop(images: tf.Tensor, margin: int = 0) -> tf.Tensor:
    """The centred square of side min(H, W) - 2 * margin. Offsets use the height for the vertical and
    the width for the horizontal axis (seed 002 used the height for both)."""
    shape = tf.shape(images)
    height, width = shape[-3], shape[-2]
    side = _square_side(height, width, margin)
    return tf.image.crop_to_bounding_box(images, (height - side) // 2, (width - side) // 2, side, side)


def random_square_crop(image: tf.Tensor, margin: int, seed: tf.Tensor) -> tf.Tensor:
    """A square of side min(H, W) - 2 * margin at a random position; `seed` is a stateless seed [2]."""
    shape = tf.shape(image)
    height, width = shape[-3], shape[-2]
    side = _square_side(height, width, margin)
    offsets = tf.random.stateless_uniform([2], seed=seed, minval=0, maxval=2**31 - 1, dtype=tf.int32)
    top = offsets[0] % (height - side + 1)
    left = offsets[1] % (width - side + 1)
    return tf.image.crop_to_bounding_box(image, top, left, side, side)


def resize_shorter_side(images: tf.Tensor, size: int, method: str = "bilinear") -> tf.Tensor:
    """Resizes so the shorter side is `size`, keeping the aspect ratio."""
    shape = tf.shape(images)
    height, width = tf.cast(shape[-3], tf.float32), tf.cast(shape[-2], tf.float32)
    scale = tf.cast(size, tf.float32) / tf.minimum(height, width)
    new_size = tf.cast(tf.math.ceil(tf.stack([height * scale, width * scale]) - 1e-3), tf.int32)
    return tf.image.resize(images, tf.maximum(new_size, size), method=method)


def prepare_images(
    images: tf.Tensor,
    *,
    image_size=None,
    channels: int | None = None,
    resize_method: str = "bilinear",
    crop: str = "none",
    margin: int = 0,
) -> tf.Tensor:
    """The eval transform: channel conversion, deterministic crop, resize, float32 in [0, 255].

    Args:
        images: uint8 or float tensor [H, W, C] or [B, H, W, C], values in [0, 255].
        image_size: (height, width) or None to keep the size.
        channels: output channels (1 or 3) or None to keep them.
        resize_method: a `tf.image.resize` method.
        crop: "none" (resize the whole image), "square" (the centred square of side
            min(H, W) - 2 * margin, then resize) or "shorter_side" (resize the shorter side to the target,
            keeping the aspect ratio, then take the centred target-size window).
        margin: pixels left out on each side of the shorter axis by the "square" crop.
    Returns:
        float32 tensor with the same rank, values in [0, 255].
    """
    images = decode.convert_channels(images, channels)
    if crop == "square":
        images = center_square_crop(images, margin)
    elif crop == "shorter_side":
        if image_size is None:
            raise ValueError("crop='shorter_side' needs image_size")
        images = resize_shorter_side(images, max(int(image_size[0]), int(image_size[1])), resize_method)
        images = tf.image.resize_with_crop_or_pad(images, int(image_size[0]), int(image_size[1]))
    elif crop != "none":
        raise ValueError(f"crop must be none, square or shorter_side. Received: crop={crop!r}")
    return resize_to(images, image_size, resize_method)


def resize_to(images: tf.Tensor, image_size, resize_method: str = "bilinear") -> tf.Tensor:
    """float32 in [0, 255], resized to `image_size` unless it already has that size."""
    images = tf.cast(images, tf.float32)
    if image_size is not None:
        height, width = int(image_size[0]), int(image_size[1])
        if images.shape[-3:-1] != (height, width):
            images = tf.image.resize(images, (height, width), method=resize_method)
            images = tf.clip_by_value(images, 0.0, 255.0)  # bicubic overshoots
    return images


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
    raise ValueError(f"normalization must be one of {', '.join(NORMALIZATIONS)}. Received: mode={mode!r}")


def channel_statistics(images, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and std (pixel units), streaming with float64 accumulators.

    Args:
        images: an array [N, H, W, C] (read `chunk` images at a time) or an iterable of such batches.
    """
    if isinstance(images, np.ndarray):
        array = images
        batches = (array[start : start + chunk] for start in range(0, len(array), chunk))
    else:
        batches = images
    total = total_sq = None
    count = 0
    for block in batches:
        pixels = np.asarray(block, np.float64).reshape(-1, np.shape(block)[-1])
        total = pixels.sum(axis=0) + (0 if total is None else total)
        total_sq = np.square(pixels).sum(axis=0) + (0 if total_sq is None else total_sq)
        count += len(pixels)
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - np.square(mean), 1e-12))
    return mean.tolist(), std.tolist()


def _source_index(index: tf.Tensor, size: tf.Tensor, fill_mode: str) -> tuple[tf.Tensor, tf.Tensor | None]:
    """Maps output-to-source indices that fall outside [0, size) back inside, per fill mode; for
    "constant" also returns where the index was inside (pixels elsewhere become 0)."""
    if fill_mode == "nearest":  # a a a | a b c d | d d d   (ImageDataGenerator's default)
        return tf.clip_by_value(index, 0, size - 1), None
    if fill_mode == "wrap":  # b c d | a b c d | a b c
        return tf.math.floormod(index, size), None
    if fill_mode == "reflect":  # c b a | a b c d | d c b   (Keras/scipy "reflect")
        index = tf.math.floormod(index, 2 * size)
        return tf.where(index >= size, 2 * size - 1 - index, index), None
    if fill_mode == "reflect101":  # d c b | a b c d | c b a   (tf.pad / numpy "reflect")
        period = tf.maximum(2 * size - 2, 1)
        index = tf.math.floormod(index, period)
        return tf.where(index >= size, period - index, index), None
    if fill_mode == "constant":
        inside = (index >= 0) & (index < size)
        return tf.clip_by_value(index, 0, size - 1), inside
    # reflect101 is internal (pad-and-crop); the config's fill modes are choices.FILL_MODES.
    raise ValueError(f"fill_mode must be one of {', '.join(FILL_MODES)}. Received: fill_mode={fill_mode!r}")


def shift_and_flip(
    images: tf.Tensor, seed: tf.Tensor, *, max_rows, max_cols, flip: bool = False, fill_mode: str = "nearest"
) -> tf.Tensor:
    """Random whole-pixel shifts of up to +-max_rows / +-max_cols (uniform, per image) and, with `flip`,
    random left-right flips, of a batch [B, H, W, C]; `seed` is a stateless seed (shape [2]).

    Both are a re-indexing of rows and columns, so the whole batch takes two `gather`s, whatever the
    fill mode: an order of magnitude cheaper than an interpolating transform, and a pure function of
    (images, seed), so tf.data may run it in parallel and still repeat a run exactly.
    """
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    row_seed, col_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))

    def offsets(limit, op_seed):
        limit = tf.cast(limit, tf.int32)
        return tf.random.stateless_uniform([batch], op_seed, minval=-limit, maxval=limit + 1, dtype=tf.int32)

    rows = tf.range(height)[None, :] - offsets(max_rows, row_seed)[:, None]  # output row r <- source r - dy
    cols = tf.range(width)[None, :] - offsets(max_cols, col_seed)[:, None]
    if flip:
        flipped = tf.random.stateless_uniform([batch], flip_seed) < 0.5
        cols = tf.where(flipped[:, None], width - 1 - cols, cols)
    rows, rows_inside = _source_index(rows, height, fill_mode)
    cols, cols_inside = _source_index(cols, width, fill_mode)
    out = tf.gather(tf.gather(images, rows, axis=1, batch_dims=1), cols, axis=2, batch_dims=1)
    if rows_inside is not None:
        inside = rows_inside[:, :, None, None] & cols_inside[:, None, :, None]
        out = out * tf.cast(inside, out.dtype)
    return out


def _shift_limit(fraction: float, size) -> tf.Tensor:
    """Largest whole-pixel shift for a fraction of `size` (at least 1 pixel when the fraction is > 0)."""
    if not fraction:
        return tf.constant(0, tf.int32)
    return tf.maximum(tf.cast(tf.round(fraction * tf.cast(size, tf.float32)), tf.int32), 1)


class Augmenter:
    """Training-only augmentation of float batches [B, H, W, C] in [0, 255]: `augmenter(images, seed)`.

    Shifts, flips and pad-and-crop are whole-pixel re-indexing (`shift_and_flip`): stateless, seeded by the
    `seed` argument (shape [2]; default: the build seed), so they are cheap and repeatable in parallel.
    Rotation and zoom interpolate, with Keras preprocessing layers, whose random state lives in the layer:
    `stateless` is False when they are on, and deterministic runs then apply them one batch at a time.
    """

    def __init__(
        self,
        *,
        horizontal_flip=False,
        width_shift=0.0,
        height_shift=0.0,
        fill_mode="nearest",
        crop_padding=0,
        rotation=0.0,
        zoom=0.0,
        seed=None,
    ):
        self.horizontal_flip = bool(horizontal_flip)
        self.width_shift, self.height_shift = float(width_shift), float(height_shift)
        self.fill_mode = fill_mode
        self.crop_padding = int(crop_padding)
        self.seed = 0 if seed is None else int(seed)
        # Each layer its own seed: with one shared seed the layers draw identical random streams, so
        # rotations would be tied to zooms.
        layer_seed = lambda offset: None if seed is None else self.seed + offset  # noqa: E731
        self.layers = []
        if rotation:
            self.layers.append(
                layers.RandomRotation(rotation, fill_mode=fill_mode, seed=layer_seed(1), name="random_rotation")
            )
        if zoom:
            self.layers.append(layers.RandomZoom(zoom, fill_mode=fill_mode, seed=layer_seed(2), name="random_zoom"))
        self.stateless = not self.layers

    def __call__(self, images, seed=None):
        images = tf.convert_to_tensor(images)
        if seed is None:
            seed = tf.constant([self.seed, 0], tf.int64)
        crop_seed, shift_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        if self.crop_padding:
            # Pad by reflection and crop back at a random place == a shift of up to +-padding, reflected.
            images = shift_and_flip(
                images, crop_seed, max_rows=self.crop_padding, max_cols=self.crop_padding, fill_mode="reflect101"
            )
        if self.width_shift or self.height_shift or self.horizontal_flip:
            shape = tf.shape(images)
            images = shift_and_flip(
                images,
                shift_seed,
                max_rows=_shift_limit(self.height_shift, shape[1]),
                max_cols=_shift_limit(self.width_shift, shape[2]),
                flip=self.horizontal_flip,
                fill_mode=self.fill_mode,
            )
        for layer in self.layers:
            images = layer(images, training=True)
        return images


def build_augmenter(
    *,
    horizontal_flip=False,
    width_shift=0.0,
    height_shift=0.0,
    fill_mode="nearest",
    crop_padding=0,
    rotation=0.0,
    zoom=0.0,
    seed=None,
) -> Augmenter | None:
    """The `input.augment` settings as an `Augmenter`, or None when nothing is on.

    `width_shift` / `height_shift` are fractions of the image size, applied as whole-pixel shifts
    (uniform in +-round(fraction x size), at least 1 pixel); `crop_padding` pads each side by reflection
    and random-crops back to the original size (the classic CIFAR "pad 4, crop 32"); `fill_mode` fills
    what a shift, rotation or zoom brings in.
    """
    if not (horizontal_flip or width_shift or height_shift or crop_padding or rotation or zoom):
        return None
    return Augmenter(
        horizontal_flip=horizontal_flip,
        width_shift=width_shift,
        height_shift=height_shift,
        fill_mode=fill_mode,
        crop_padding=crop_padding,
        rotation=rotation,
        zoom=zoom,
        seed=seed,
    )
