"""Modern training augmentation: the Inception-style random resized crop and Keras 3's batch layers.

Two kinds of work, at two places in the train input pipeline:

* per image, before `batch`: `random_resized_crop` (Keras has no such layer; this is the
  `tf.image.stateless_sample_distorted_bounding_box` recipe of Szegedy et al. 2015, "Going deeper with
  convolutions", section 6, as in torchvision's RandomResizedCrop). Its eval/serving counterpart is
  `center_crop_for_random_resized` (the standard 0.875 centre crop).
* per batch, after `batch`: `build_batch_augment` chains keras.layers.RandAugment, RandomColorJitter,
  RandomErasing, MixUp and CutMix into one function `(images, labels, seed) -> (images, labels)` for a
  `map(..., num_parallel_calls=AUTOTUNE)`; `map_batch_augment` wires it in.

Repeatable in parallel: every random draw of every layer is folded from one stateless seed per batch
(`pipeline.compat.route_seeds`), so a batch's augmentation is a pure function of (batch, seed) whatever
order tf.data's threads run in. RandAugment picks its operations per image (Keras picks them per batch:
`pipeline.compat.per_image_rand_augment`).

Mixed labels. MixUp and CutMix return one-hot labels mixed as lam * y_a + (1 - lam) * y_b.
* Label smoothing stays in the loss (`CategoricalCrossentropy(label_smoothing=eps)`): it maps a target y
  to (1 - eps) * y + eps / K, which is linear, so smoothing the mixed label equals mixing the smoothed
  labels: the two compose in either order, nothing to do here.
* Class weights become sample weights computed from the mixed label: w = sum_k y_k * class_weight_k
  (= lam * w_a + (1 - lam) * w_b), the expected class weight of the mixed example; see
  `pipeline.data.class_balance.sample_weights`. Keras' own `fit(class_weight=...)` would instead weight a
  mixed example by its argmax class only, so with mixing the weights must go in as sample weights.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from pipeline import compat

CENTER_CROP_FRACTION = 0.875  # 224 of 256: the ImageNet evaluation convention (AlexNet, Inception, ResNet)


# --------------------------------------------------------------------------------------------------
# Random resized crop (per image)
# --------------------------------------------------------------------------------------------------


def _check_range(name: str, value, low: float, high: float | None = None) -> tuple[float, float]:
    try:
        first, second = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be two numbers [min, max]. Received: {name}={value!r}") from None
    if not (low < first <= second and (high is None or second <= high)):
        allowed = f"{low} < min <= max" + (f" <= {high}" if high is not None else "")
        raise ValueError(f"{name} must satisfy {allowed}. Received: {name}={value!r}")
    return first, second


def _size(size) -> tuple[int, int]:
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    if int(height) < 1 or int(width) < 1:
        raise ValueError(f"size must be positive. Received: size={size!r}")
    return int(height), int(width)


def random_resized_crop(
    image: tf.Tensor, *, size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), seed: tf.Tensor, method: str = "bilinear"
) -> tf.Tensor:
    """A random crop of `scale` of the image area with aspect ratio (width / height) in `ratio`, resized
    to `size` (Inception-style; Szegedy et al. 2015).

    The box comes from `tf.image.stateless_sample_distorted_bounding_box` (10 attempts; when none fits,
    the whole image: torchvision falls back to a centre crop instead).

    Args:
        image: [H, W, C] uint8 or float in [0, 255]; H and W may be dynamic.
        size: output (height, width), or one int for a square.
        scale: [min, max] fraction of the image area, 0 < min <= max <= 1.
        ratio: [min, max] aspect ratio of the crop (width / height), 0 < min <= max.
        seed: stateless seed, int32 or int64 [2].
        method: a `tf.image.resize` method.
    Returns:
        float32 [height, width, C] in [0, 255].
    Raises:
        ValueError: for a bad size, scale or ratio.
    """
    height, width = _size(size)
    scale = _check_range("scale", scale, 0.0, 1.0)
    ratio = _check_range("ratio", ratio, 0.0)
    begin, extent, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=seed,
        min_object_covered=0.0,  # the area is constrained by area_range alone, as torchvision does
        aspect_ratio_range=ratio,
        area_range=scale,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    crop = tf.slice(image, begin, extent)
    crop.set_shape([None, None, image.shape[-1]])  # tf.slice forgets the channels; colour layers need them
    resized = tf.image.resize(tf.cast(crop, tf.float32), (height, width), method=method)
    return tf.clip_by_value(resized, 0.0, 255.0)  # bicubic overshoots


def center_crop_for_random_resized(
    images: tf.Tensor, *, size, crop_fraction: float = CENTER_CROP_FRACTION, method: str = "bilinear"
) -> tf.Tensor:
    """The eval/serving counterpart of `random_resized_crop`: the centred window of the output's aspect
    ratio, `crop_fraction` of the largest such window in each dimension, resized to `size`.

    For a square output this is the centred square of side 0.875 x min(H, W): the same pixels as the
    ImageNet convention "resize the shorter side to size / 0.875, centre-crop size", cropped first so the
    resize works on fewer pixels.

    Args:
        images: [H, W, C] or [B, H, W, C], uint8 or float in [0, 255].
        size: output (height, width), or one int for a square.
        crop_fraction: in (0, 1]; 1 keeps the largest centred window of the output's aspect ratio.
        method: a `tf.image.resize` method.
    Returns:
        float32 with the input's rank, [..., height, width, C] in [0, 255].
    Raises:
        ValueError: for a bad size or crop_fraction.
    """
    height, width = _size(size)
    if not 0.0 < float(crop_fraction) <= 1.0:
        raise ValueError(f"crop_fraction must be in (0, 1]. Received: crop_fraction={crop_fraction!r}")
    shape = tf.shape(images)
    in_height, in_width = tf.cast(shape[-3], tf.float32), tf.cast(shape[-2], tf.float32)
    # The largest window of aspect width/height inside the image, then crop_fraction of it.
    window = tf.minimum(in_height / height, in_width / width) * float(crop_fraction)
    crop_height = tf.clip_by_value(tf.cast(tf.round(window * height), tf.int32), 1, shape[-3])
    crop_width = tf.clip_by_value(tf.cast(tf.round(window * width), tf.int32), 1, shape[-2])
    images = tf.image.crop_to_bounding_box(
        images, (shape[-3] - crop_height) // 2, (shape[-2] - crop_width) // 2, crop_height, crop_width
    )
    resized = tf.image.resize(tf.cast(images, tf.float32), (height, width), method=method)
    return tf.clip_by_value(resized, 0.0, 255.0)


# --------------------------------------------------------------------------------------------------
# Batch augmentation with Keras layers
# --------------------------------------------------------------------------------------------------


def _float32_layers(build):
    """Builds layers under the float32 policy: under mixed_float16 they would otherwise compute in float16
    inside tf.data (RandomColorJitter's inner layers take the global policy whatever dtype it is given)."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        return build()
    finally:
        keras.config.set_dtype_policy(previous)


def _positive(name: str, value, *, maximum: float | None = None) -> float:
    value = float(value)
    if value < 0 or (maximum is not None and value > maximum):
        allowed = f"0 (off) to {maximum}" if maximum is not None else ">= 0 (0 = off)"
        raise ValueError(f"{name} must be {allowed}. Received: {name}={value!r}")
    return value


COLOR_JITTER_LIMITS = {"brightness": 1.0, "contrast": 1.0, "saturation": 1.0, "hue": 0.5}


def color_jitter_factors(*, brightness=None, contrast=None, saturation=None, hue=None) -> dict:
    """`input.augment.color_jitter` amplitudes -> keras.layers.RandomColorJitter's factor arguments.

    Our keys follow torchvision's ColorJitter amplitudes, per image:
      brightness b: adds U(-b, b) x 255 (Keras' RandomBrightness is additive; torchvision multiplies);
      contrast c:   (x - mean) x U(1 - c, 1 + c);
      saturation s: HSV saturation x U(1 - s, 1 + s);
      hue h:        rotates the hue by U(-h, h) of the colour circle (h <= 0.5).
    Keras' single-float factors mean something else for three of them (Keras 3.15.1, measured):
    RandomContrast(0.2) draws only from [1, 1.2] (its docstring says [0.8, 1.2]); RandomSaturation(0.2)
    draws a multiplier f / (1 - f) with f in [-0.2, 0.2], i.e. from [-0.17, 0.25], greying every image;
    RandomHue(f) rotates by up to f / 2. So every factor is passed as an explicit (low, high) pair:
    saturation multiplier m is f / (1 - f), hence f = m / (1 + m).

    Returns:
        keyword arguments brightness_factor, contrast_factor, saturation_factor, hue_factor (None = off).
    """
    out = {}
    if brightness:
        out["brightness_factor"] = (-float(brightness), float(brightness))
    if contrast:
        out["contrast_factor"] = (float(contrast), float(contrast))  # Keras: [1 - low, 1 + high]
    if saturation:
        low, high = 1.0 - float(saturation), 1.0 + float(saturation)
        out["saturation_factor"] = (low / (1.0 + low), high / (1.0 + high))
    if hue:
        out["hue_factor"] = (0.0, 2.0 * float(hue))  # Keras: +-U(low, high) / 2 of the circle
    return out


class BatchAugment:
    """`augment(images, labels, seed) -> (images, labels)`: the configured Keras layers applied in order
    RandAugment -> color jitter -> random erasing -> MixUp or CutMix. Build it with `build_batch_augment`.

    images: float32 [batch, H, W, C] in [0, 255]; labels: float32 one-hot [batch, classes]; seed: stateless
    seed, int32 or int64 [2], one per batch. Returns float32 images in [0, 255] and float32 labels (mixed
    when MixUp or CutMix is on; each row still sums to 1).

    With both MixUp and CutMix on, each batch gets one of them, chosen by a fair coin (timm's `Mixup`
    with switch_prob 0.5 does the same per batch).
    """

    def __init__(
        self,
        *,
        rand_augment: dict | None,
        color_jitter: dict | None,
        random_erasing: float,
        mix_up: float,
        cut_mix: float,
        random_erasing_fill=None,
    ):
        self.stream = compat.StatelessSeedStream()
        self.image_layers = []
        self.mixers = []

        def build():
            if rand_augment:
                layer = keras.layers.RandAugment(
                    value_range=(0, 255),
                    num_ops=int(rand_augment.get("num_ops", 2)),
                    factor=float(rand_augment.get("factor", 0.5)),
                )
                self.image_layers.append(compat.per_image_rand_augment(layer, self.stream))
            if color_jitter:
                self.image_layers.append(
                    keras.layers.RandomColorJitter(
                        value_range=(0, 255), name="color_jitter", **color_jitter_factors(**color_jitter)
                    )
                )
            if random_erasing:
                # factor (p, p): every image is erased with probability p. A single float p would draw
                # each image's probability from U(0, p), erasing p / 2 of them on average.
                self.image_layers.append(
                    keras.layers.RandomErasing(
                        factor=(random_erasing, random_erasing),
                        value_range=(0, 255),
                        fill_value=random_erasing_fill,
                        name="random_erasing",
                    )
                )
            if mix_up:
                self.mixers.append(keras.layers.MixUp(alpha=mix_up, name="mix_up"))
            if cut_mix:
                # factor (a, a): Beta(a, a) mixing weights; one float would draw a from U(0, a) per batch.
                self.mixers.append(
                    compat.exact_area_cut_mix(keras.layers.CutMix(factor=(cut_mix, cut_mix), name="cut_mix"))
                )

        _float32_layers(build)
        for layer in self.image_layers + self.mixers:
            compat.route_seeds(layer, self.stream)

    def __call__(self, images, labels, seed):
        images = tf.cast(images, tf.float32)
        labels = tf.cast(labels, tf.float32)
        with self.stream.using(tf.convert_to_tensor(seed)):
            for layer in self.image_layers:
                images = layer(images, training=True)
            images = tf.clip_by_value(images, 0.0, 255.0)
            if len(self.mixers) == 1:
                images, labels = self._mix(self.mixers[0], images, labels)
            elif self.mixers:
                coin = tf.random.stateless_uniform([], self.stream.next()) < 0.5
                images, labels = tf.cond(
                    coin,
                    lambda: self._mix(self.mixers[0], images, labels),
                    lambda: self._mix(self.mixers[1], images, labels),
                )
        return images, labels

    def _mix(self, layer, images, labels):
        out = layer({"images": images, "labels": labels}, training=True)
        return tf.clip_by_value(out["images"], 0.0, 255.0), out["labels"]  # lam * 255 + (1 - lam) * 255 > 255


def build_batch_augment(
    *,
    rand_augment: dict | None = None,
    color_jitter: dict | None = None,
    random_erasing: float = 0.0,
    mix_up: float = 0.0,
    cut_mix: float = 0.0,
    random_erasing_fill=None,
) -> BatchAugment | None:
    """The `input.augment` batch layers as one function, or None when all are off.

    Args:
        rand_augment: {num_ops: int >= 1, factor: float in [0, 1]} for keras.layers.RandAugment, or None.
            Keras' magnitudes are one-sided and large (Keras 3.15.1, measured at factor 0.5): rotation
            U(0, 180) degrees counter-clockwise, translation U(0, 0.5) of the size in one direction,
            brightness +U(0, 127), contrast x U(1, 1.5). The paper's reference code rotates by
            +-30 x M / 10 degrees (ImageNet's M = 9: +-27 degrees), a rotation factor near 0.075.
        color_jitter: {brightness, contrast, saturation, hue} amplitudes for keras.layers.RandomColorJitter
            (floats in [0, 1], hue in [0, 0.5]; absent/None/0 leaves that property alone; meaning in
            `color_jitter_factors`), or None.
        random_erasing: probability per image of erasing a random rectangle (keras.layers.RandomErasing:
            2% to 33% of the area); 0 = off.
        random_erasing_fill: the erased pixels' value: None for Keras' noise (N(0, 1) x 255, clipped to
            [0, 255]), a number or [R, G, B] in [0, 255] (Cutout fills with the mean: DeVries & Taylor,
            2017). Noise has power at every spatial frequency; a whitening first layer scales the high
            ones up by up to 1 / sqrt(smallest eigenvalue) (~40x on CIFAR-10), so noise-filled training
            batches give BatchNorm statistics that clean images never match (measured: cifar10_fast with
            0.5 noise erasing fell to 17-23% validation accuracy at 30-60% train accuracy).
        mix_up: MixUp's alpha (mixing weight ~ Beta(alpha, alpha) per example); 0 = off.
        cut_mix: CutMix's alpha, in (0, 1] (Keras' CutMix refuses more); 0 = off.
    Returns:
        a `BatchAugment` (call it as augment(images, labels, seed)), or None.
    Raises:
        ValueError: for a value out of range or an unknown key (the message names it).
    """
    random_erasing = _positive("random_erasing", random_erasing, maximum=1.0)
    random_erasing_fill = _erasing_fill(random_erasing_fill)
    mix_up = _positive("mix_up", mix_up)
    cut_mix = _positive("cut_mix", cut_mix, maximum=1.0)
    if rand_augment:
        unknown = set(rand_augment) - {"num_ops", "factor"}
        if unknown:
            raise ValueError(f"rand_augment takes num_ops and factor. Received: {sorted(unknown)}")
        if int(rand_augment.get("num_ops", 2)) < 1:
            raise ValueError(f"rand_augment.num_ops must be >= 1. Received: {rand_augment.get('num_ops')!r}")
        _positive("rand_augment.factor", rand_augment.get("factor", 0.5), maximum=1.0)
    if color_jitter:
        unknown = set(color_jitter) - {"brightness", "contrast", "saturation", "hue"}
        if unknown:
            raise ValueError(
                f"color_jitter takes brightness, contrast, saturation and hue. Received: {sorted(unknown)}"
            )
        for key, value in color_jitter.items():
            if value is not None:
                _positive(f"color_jitter.{key}", value, maximum=COLOR_JITTER_LIMITS[key])
    if color_jitter and not any(color_jitter.values()):
        color_jitter = None  # every property off
    if not (rand_augment or color_jitter or random_erasing or mix_up or cut_mix):
        return None
    return BatchAugment(
        rand_augment=rand_augment,
        color_jitter=color_jitter,
        random_erasing=random_erasing,
        mix_up=mix_up,
        cut_mix=cut_mix,
        random_erasing_fill=random_erasing_fill,
    )


def _erasing_fill(fill):
    """None, a float, or a 3-tuple of floats in [0, 255] (what keras.layers.RandomErasing takes)."""
    if fill is None:
        return None
    values = list(fill) if isinstance(fill, (list, tuple)) else [fill]
    if len(values) not in (1, 3) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 255 for v in values
    ):
        raise ValueError(
            f"random_erasing_fill must be a pixel value in [0, 255] or [R, G, B] of them. Received: {fill!r}"
        )
    return float(values[0]) if len(values) == 1 else tuple(float(v) for v in values)


def map_batch_augment(dataset: tf.data.Dataset, augment, *, seed: int, deterministic: bool = True) -> tf.data.Dataset:
    """`dataset` of (images, one-hot labels) batches, augmented by `augment` in parallel.

    Each batch is zipped with its own stateless seed from `tf.data.Dataset.random(seed)` (new seeds every
    epoch, the same sequence for the same `seed`), so the output repeats exactly for a given seed however
    many batches run at once. `deterministic=False` lets tf.data hand batches out of order (a little
    faster; each batch is still augmented the same way). `augment` None returns `dataset` unchanged.
    """
    if augment is None:
        return dataset
    seeds = tf.data.Dataset.random(seed=int(seed), rerandomize_each_iteration=True).batch(2)
    return tf.data.Dataset.zip(dataset, seeds).map(
        lambda batch, pair: augment(batch[0], batch[1], pair),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic,
    )
