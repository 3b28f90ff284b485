"""What the data layer needs from an experiment, mapped once from the config.

`DataOptions.from_config` is the one place where the `dataset`, `input`, `train.batch_size`,
`train.class_weight` and `seed` keys become arguments; `Splits` and the readers below it take a
`DataOptions`, never the whole config.
"""

from __future__ import annotations

import dataclasses

from pipeline.data.augmentation import Augmentation
from pipeline.data.transform import EvalTransform


@dataclasses.dataclass(frozen=True)
class DataOptions:
    """Where the data is, how it is split and checked, and how each split's pipeline is built. No
    defaults here: they are the schema's (`pipeline.config.schema`), reached through `from_config`.

    Attributes:
        dataset, data_dir, mirror_dir, root, lists, classes: the source (`datasets.load_dataset`).
        validation_split, test_split: fractions carved per class when the source lacks the split.
        seed: carving (validation with `seed`, test with `seed + 1`), shuffling and augmentation.
        strict, min_image_size, skip_placeholders, max_image_pixels: the bad-image policy of image files.
        transform: the eval transform as configured (unsized: `Splits.transform()` sizes it).
        batch_size: the global batch (images per step).
        augment: the training augmentation.
        shuffle_buffer, deterministic, cache, cache_budget_mb: the pipelines' knobs (`input.*`).
        statistics: a `data stats` JSON file for `standardize`, or None (computed on the training split).
        class_weight: `train.class_weight` (None, "balanced" or {class name: weight}).
    """

    dataset: str
    data_dir: str
    mirror_dir: str | None
    root: str | None
    lists: dict | None
    classes: str | None
    validation_split: float
    test_split: float
    seed: int
    strict: bool
    min_image_size: int
    skip_placeholders: bool
    max_image_pixels: int
    transform: EvalTransform
    batch_size: int
    augment: Augmentation
    shuffle_buffer: int | None
    deterministic: bool
    cache: str
    cache_budget_mb: int | None
    statistics: str | None
    class_weight: object

    @classmethod
    def from_config(cls, config) -> DataOptions:
        """The experiment's data options (`config`: a validated `pipeline.config.Config`)."""
        source, pipeline = config.dataset, config.input
        return cls(
            dataset=source.name,
            data_dir=source.data_dir,
            mirror_dir=source.mirror_dir,
            root=source.root,
            lists=source.lists,
            classes=source.classes,
            validation_split=source.validation_split,
            test_split=source.test_split,
            seed=config.seed,
            strict=source.strict,
            min_image_size=source.min_image_size,
            skip_placeholders=source.skip_placeholders,
            max_image_pixels=source.max_image_pixels,
            transform=EvalTransform.from_input_section(pipeline),
            batch_size=config.train.batch_size,
            augment=Augmentation.from_section(pipeline.augment),
            shuffle_buffer=pipeline.shuffle_buffer,
            deterministic=pipeline.deterministic,
            cache=pipeline.cache,
            cache_budget_mb=pipeline.cache_budget_mb,
            statistics=pipeline.statistics,
            class_weight=config.train.class_weight,
        )
