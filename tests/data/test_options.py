"""The one mapping from the config to the data layer: every key reaches its consumer."""

from __future__ import annotations

import dataclasses

import pytest

from pipeline import experiment as experiment_lib
from pipeline.config.schema import AugmentConfig
from pipeline.data.augmentation import Augmentation, as_augmentation
from pipeline.data.options import DataOptions


def test_every_augment_key_feeds_one_augmenter():
    fields = {field.name for field in dataclasses.fields(AugmentConfig)}
    mapped = Augmentation.from_section(AugmentConfig(mix_up=0.2))
    assert set(mapped.image) | set(mapped.batch) == fields, "a key of input.augment reaches no augmenter"
    assert not set(mapped.image) & set(mapped.batch)


def test_batch_layers_only_when_one_is_on():
    assert Augmentation.from_section(AugmentConfig(random_erasing_fill=[0])).batch == {}
    assert not Augmentation.from_section(AugmentConfig(fill_mode="reflect")).enabled
    on = Augmentation.from_section(AugmentConfig(random_erasing=0.5, random_erasing_fill=[125]))
    assert on.enabled and on.batch["random_erasing"] == 0.5 and on.batch["random_erasing_fill"] == [125]
    assert Augmentation.from_section(AugmentConfig(horizontal_flip=True)).enabled


def test_a_dict_of_augment_keys_goes_through_the_same_mapping():
    assert as_augmentation({"width_shift": 0.1}) == Augmentation.from_section(AugmentConfig(width_shift=0.1))
    assert as_augmentation(None) == Augmentation.from_section(AugmentConfig())
    with pytest.raises(TypeError, match="widht_shift"):
        as_augmentation({"widht_shift": 0.1})


def test_data_options_carry_the_configured_values():
    config = experiment_lib.load_experiment(
        "tiny",
        ["dataset.validation_split=0.3", "input.augment.horizontal_flip=true", "train.batch_size=7", "seed=5"],
    )
    options = DataOptions.from_config(config)
    assert (options.dataset, options.validation_split, options.batch_size, options.seed) == (
        config.dataset.name,
        0.3,
        7,
        5,
    )
    assert options.augment.image["horizontal_flip"] is True
    assert options.transform.image_size == tuple(config.input.image_size)
    # No field of its own: every value comes from the config (the schema holds the defaults).
    assert all(field.default is dataclasses.MISSING for field in dataclasses.fields(DataOptions))
