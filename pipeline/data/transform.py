"""The evaluation transform: one frozen object, defined once, used everywhere an image meets a model.

The eval pipeline applies it, training applies its random counterpart (`train_crop`), `summary` sizes the
network with it, the export runs it inside the SavedModel's signatures and writes it into the export as
`assets/transform.json`, so an export describes its own input contract, and `predict` goes through the
export. Normalisation is not part of it: it is the model's first layer.
"""

from __future__ import annotations

import dataclasses
import json

from pipeline.config.choices import CROP_MODES


@dataclasses.dataclass(frozen=True)
class EvalTransform:
    """Decoded image -> model input: channel conversion, deterministic crop, resize; float32 in [0, 255].

    Attributes:
        image_size: (height, width) in pixels fed to the model, or None to keep the source size.
        channels: 1 (grey) or 3 (RGB) out, or None to keep the source's.
        resize_method: a `tf.image.resize` method (bilinear, area, nearest, bicubic).
        crop: "none" (resize the whole image), "square" (the centred square of side
            min(H, W) - 2 * margin; random position in training) or "shorter_side" (resize the shorter side
            to the target and take the centred target window; random window in training).
        margin: pixels left out on each side of the shorter axis by the "square" crop.
        scale, ratio: "random_resized" (Inception-style, `pipeline.data.batch_augment.random_resized_crop`): the
            training crop's area fraction and aspect-ratio ranges; evaluation takes the standard 0.875
            centre crop (`augment.center_crop_for_random_resized`).
    """

    image_size: tuple[int, int] | None = None
    channels: int | None = None
    resize_method: str = "bilinear"
    crop: str = "none"
    margin: int = 0
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (0.75, 1.3333)

    def __post_init__(self):
        object.__setattr__(self, "scale", tuple(float(v) for v in self.scale))
        object.__setattr__(self, "ratio", tuple(float(v) for v in self.ratio))
        if self.image_size is not None:
            object.__setattr__(self, "image_size", (int(self.image_size[0]), int(self.image_size[1])))
        if self.crop not in CROP_MODES:
            raise ValueError(f"crop must be one of {', '.join(CROP_MODES)}. Received: crop={self.crop!r}")
        if self.crop in ("shorter_side", "random_resized") and self.image_size is None:
            raise ValueError(f"crop={self.crop!r} needs image_size. Received: image_size=None")

    def __call__(self, images):
        """uint8/float [H, W, C] or [B, H, W, C] in [0, 255] -> float32 [.., height, width, channels]."""
        from pipeline.data import batch_augment as augment
        from pipeline.data import image_ops as preprocessing

        if self.crop == "random_resized":
            from pipeline.data import decode

            images = decode.convert_channels(images, self.channels)
            return augment.center_crop_for_random_resized(images, size=self.image_size, method=self.resize_method)
        return preprocessing.prepare_images(
            images,
            image_size=self.image_size,
            channels=self.channels,
            resize_method=self.resize_method,
            crop=self.crop,
            margin=self.margin,
        )

    def train_crop(self, image, seed, margin=None):
        """The random counterpart used in training: one decoded image [H, W, channels] (already converted
        to `channels`) and a stateless seed [2] int32 -> float32 [height, width, channels].

        `margin` (pixels, may be a tensor) replaces `self.margin` for an image brought down to its working
        size, whose margin shrank with it (`decode.decode_working_image`)."""
        import tensorflow as tf

        from pipeline.data import image_ops as preprocessing

        if self.crop == "random_resized":
            from pipeline.data import batch_augment as augment

            return augment.random_resized_crop(
                image, size=self.image_size, scale=self.scale, ratio=self.ratio, seed=seed, method=self.resize_method
            )
        if self.crop == "square":
            image = preprocessing.random_square_crop(image, self.margin if margin is None else margin, seed)
        elif self.crop == "shorter_side":
            height, width = self.image_size
            image = preprocessing.resize_shorter_side(image, max(height, width), self.resize_method)
            image = tf.image.stateless_random_crop(image, [height, width, tf.shape(image)[-1]], seed=seed)
        return preprocessing.resize_to(image, self.image_size, self.resize_method)

    def sized(self, *, image_size, channels) -> EvalTransform:
        """The same transform with the model's input size and channels filled in."""
        return dataclasses.replace(self, image_size=tuple(image_size), channels=int(channels))

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        values["image_size"] = list(self.image_size) if self.image_size else None
        values["scale"], values["ratio"] = list(self.scale), list(self.ratio)
        return values

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, values: dict) -> EvalTransform:
        """Raises ValueError for unknown keys or invalid values."""
        unknown = set(values) - {field.name for field in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown eval-transform keys {sorted(unknown)}")
        image_size = values.get("image_size")
        return cls(**{**values, "image_size": tuple(image_size) if image_size else None})

    def working_crop(self) -> tuple[str, float]:
        """(crop mode, factor) for `decode.decode_working_image`: what the training crop needs. The random
        resized crop may take sqrt(scale[0]) of a side and enlarge it to the target, so its working size keeps
        a shorter side of max(target) / sqrt(scale[0]) (e.g. 224 / sqrt(0.08) = 792 pixels)."""
        if self.crop == "random_resized":
            return "shorter_side", 1.0 / max(self.scale[0], 1e-6) ** 0.5
        return self.crop, 1.0

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(height, width, channels) of what it outputs: the model's input shape (needs both set)."""
        return (*self.image_size, self.channels)

    def for_data(self, native_shape=None, *, source: str = "this dataset") -> EvalTransform:
        """This transform sized for the model: the one place the model's input size is derived (training's
        splits, `summary` and the export all come here).

        Args:
            native_shape: (height, width, channels) the data's images all have (arrays; a model's input shape),
                or None / (None, None, channels) for image files of many sizes. This transform's image_size
                and channels (input.image_size, input.channels) win where set; channels default to 3 (what
                a decoded file gives).
            source: names the data in the error message, e.g. "dataset 'folder'".
        Raises:
            ConfigError: no image size set and no native size to fall back on.
        """
        native = tuple(native_shape) if native_shape else (None, None, None)
        if self.image_size:
            image_size = self.image_size
        elif None not in native[:2]:
            image_size = native[:2]
        else:
            from pipeline.config import ConfigError

            raise ConfigError(
                f"input.image_size: required for {source}, whose images have many sizes; "
                f"e.g. --set input.image_size=[224,224]"
            )
        return self.sized(image_size=image_size, channels=self.channels or native[2] or 3)

    @classmethod
    def sized_for_data(cls, section, *, native_shape=None, source: str = "this dataset") -> EvalTransform:
        """`from_input_section(section).for_data(native_shape, source=source)`: the experiment's eval
        transform sized for its model, from the config's `input` section."""
        return cls.from_input_section(section).for_data(native_shape, source=source)

    @classmethod
    def from_input_section(cls, section) -> EvalTransform:
        """From the config's `input` section (any object with image_size, channels, resize_method and
        crop.mode/crop.margin attributes); the one place the config's keys are mapped to the transform."""
        return cls(
            image_size=tuple(section.image_size) if section.image_size else None,
            channels=section.channels,
            resize_method=section.resize_method,
            crop=section.crop.mode,
            margin=section.crop.margin,
            scale=tuple(section.crop.scale),
            ratio=tuple(section.crop.ratio),
        )
