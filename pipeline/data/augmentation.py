"""The training augmentation of a run, mapped once from the `input.augment` section.

Two families run in the training pipeline, in this order: per-image ("classic") augmentation on each batch
(`image_ops.build_augmenter`: flip, shift, pad-and-crop, rotation, zoom) and Keras' batch layers
(`batch_augment.build_batch_augment`: RandAugment, colour jitter, random erasing, MixUp, CutMix).
`Augmentation.from_section` is the one place that says which config key feeds which.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from pipeline.config.schema import AugmentConfig


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """Keyword arguments of the two augmenters; empty dicts mean none.

    Attributes:
        image: arguments of `image_ops.build_augmenter` (per-image ops on whole batches).
        batch: arguments of `batch_augment.build_batch_augment` (Keras batch layers and their options).
    """

    image: dict = dataclasses.field(default_factory=dict)
    batch: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def from_section(cls, section: AugmentConfig) -> Augmentation:
        """The `input.augment` section mapped to the augmenters' arguments (the one place that does)."""
        image = dict(
            horizontal_flip=section.horizontal_flip,
            width_shift=section.width_shift,
            height_shift=section.height_shift,
            fill_mode=section.fill_mode,
            crop_padding=section.crop_padding,
            rotation=section.rotation,
            zoom=section.zoom,
        )
        layers = dict(
            rand_augment=section.rand_augment,
            color_jitter=section.color_jitter,
            random_erasing=section.random_erasing,
            mix_up=section.mix_up,
            cut_mix=section.cut_mix,
        )
        # A batch layer's setting alone (the erasing fill) switches nothing on.
        batch = {**layers, "random_erasing_fill": section.random_erasing_fill} if any(layers.values()) else {}
        return cls(image=image, batch=batch)

    @property
    def enabled(self) -> bool:
        """Whether any augmentation runs (`fill_mode` alone is a setting, not an operation)."""
        return bool(self.batch) or any(value for key, value in self.image.items() if key != "fill_mode")

    @classmethod
    def from_mapping(cls, mapping: Mapping | None) -> Augmentation:
        """From a plain dict of `input.augment` keys (benchmarks, tests), through the same mapping.

        Raises:
            TypeError: a key that `input.augment` does not have.
        """
        return cls.from_section(AugmentConfig(**dict(mapping or {})))


def as_augmentation(augment: Augmentation | Mapping | None) -> Augmentation:
    """`augment` as an `Augmentation` (a dict of `input.augment` keys is mapped; None is no augmentation)."""
    return augment if isinstance(augment, Augmentation) else Augmentation.from_mapping(augment)
