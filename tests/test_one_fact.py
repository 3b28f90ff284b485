"""Each fact once (issue 21): the config's allowed values are the names the implementing code builds."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pipeline.config import choices, schema


def schema_choices(section, name: str) -> list:
    """The `choices` rule of one field of a schema dataclass."""
    return list({field.name: field for field in dataclasses.fields(section)}[name].metadata["choices"])


def test_optimizer_names_are_the_optimizer_classes():
    from pipeline.training import optimizers

    assert schema_choices(schema.OptimizerConfig, "name") == list(optimizers.OPTIMIZER_CLASSES)
    for name in choices.OPTIMIZERS:
        built = optimizers.build_optimizer(name=name, learning_rate=0.1)
        assert isinstance(built, optimizers.OPTIMIZER_CLASSES[name])
    with pytest.raises(ValueError, match="sgd, adam, adamw, rmsprop"):
        optimizers.build_optimizer(name="adagrad", learning_rate=0.1)


def test_schedule_names_are_the_schedules_built():
    from pipeline.training import optimizers

    assert schema_choices(schema.ScheduleConfig, "name") == list(choices.SCHEDULES)
    rates = {}
    for name in choices.SCHEDULES:
        schedule = optimizers.build_schedule(
            name=name, learning_rate=0.1, steps_per_epoch=10, epochs=4, boundaries=[2], warmup_epochs=0
        )
        rates[name] = float(schedule if isinstance(schedule, float) else schedule(30))
    # step 30 = epoch 3: constant 0.1; step x0.1 after epoch 2; linear decay to 0 at step 40: 0.025;
    # cosine: 0.1 * (1 + cos(pi * 30 / 40)) / 2.
    np.testing.assert_allclose(
        [rates[name] for name in choices.SCHEDULES],
        [0.1, 0.01, 0.025, 0.1 * (1 + np.cos(np.pi * 0.75)) / 2],
        rtol=1e-5,
    )
    with pytest.raises(ValueError, match="constant, step, polynomial, cosine"):
        optimizers.build_schedule(name="exponential", learning_rate=0.1, steps_per_epoch=1, epochs=1)


def test_tta_modes_are_the_wrappers_built():
    import keras

    from pipeline.evaluation import tta

    assert schema_choices(schema.EvaluationConfig, "tta") == list(choices.TTA_MODES)
    assert schema_choices(schema.ExportConfig, "tta") == list(choices.TTA_MODES)
    inputs = keras.Input((4, 4, 1))
    model = keras.Model(inputs, keras.layers.Softmax()(keras.layers.Dense(2)(keras.layers.Flatten()(inputs))))
    names = [tta.with_tta(model, mode).name for mode in choices.TTA_MODES]
    assert names == [model.name, f"{model.name}_flip_tta", f"{model.name}_flip_translate_tta"]
    with pytest.raises(ValueError, match="none, flip, flip_translate"):
        tta.with_tta(model, "rotate")


def test_strategy_names_are_the_strategies_resolved():
    from pipeline.distribute import strategy

    assert schema_choices(schema.DistributeConfig, "strategy") == list(strategy.STRATEGIES)
    resolved = [strategy.choose_strategy_name(name, tf_config={}, gpus=1) for name in choices.STRATEGIES]
    assert resolved == ["default", "default", "mirrored", "multi_worker"]
    with pytest.raises(strategy.DistributeError, match="did you mean 'mirrored'"):
        strategy.choose_strategy_name("mirored")


def test_input_choices_are_what_the_transform_and_layers_take():
    from pipeline.data import image_ops
    from pipeline.data.transform import EvalTransform

    assert schema_choices(schema.CropConfig, "mode") == list(choices.CROP_MODES)
    assert schema_choices(schema.InputConfig, "resize_method") == list(choices.RESIZE_METHODS)
    assert schema_choices(schema.InputConfig, "normalization") == list(choices.NORMALIZATIONS)
    assert schema_choices(schema.AugmentConfig, "fill_mode") == list(choices.FILL_MODES)
    image = np.arange(10 * 14 * 3, dtype=np.float32).reshape(10, 14, 3) % 255
    for crop in choices.CROP_MODES:
        for method in choices.RESIZE_METHODS:
            transform = EvalTransform(image_size=(6, 6), channels=3, crop=crop, resize_method=method, margin=1)
            assert transform(image).shape == (6, 6, 3), (crop, method)
    with pytest.raises(ValueError, match="none, square, shorter_side, random_resized"):
        EvalTransform(image_size=(6, 6), crop="centre")
    for mode in choices.NORMALIZATIONS:
        layer = image_ops.normalization_layer(mode, mean=[127.5] * 3, std=[127.5] * 3)
        np.testing.assert_allclose(layer(np.full((1, 1, 1, 3), 255.0, np.float32)), 1.0, rtol=1e-6)
    batch = image[None]
    for fill_mode in choices.FILL_MODES:
        shifted = image_ops.shift_and_flip(batch, np.array([1, 2]), max_rows=2, max_cols=2, fill_mode=fill_mode)
        assert shifted.shape == batch.shape
    with pytest.raises(ValueError, match="nearest, reflect, constant, wrap"):
        image_ops.shift_and_flip(batch, np.array([1, 2]), max_rows=2, max_cols=2, fill_mode="mirror")
