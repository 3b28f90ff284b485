"""pipeline/compat/optimizers.py: normalization biases learn at `norm_bias_lr_factor` x the rate (airbench94's
64), their decoupled weight decay keeps the plain rate, and the optimizer survives a .keras round trip. The
access to Keras' private `_get_variable_index` / `_trainable_variables` is exercised by every test here."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from pipeline import compat
from pipeline.training import optimizers as optim


def test_the_optimizer_internals_it_reads_are_there():
    optimizer = keras.optimizers.SGD(0.1)
    kernel = _net().get_layer("dense").kernel
    optimizer.build([kernel])
    where = f"Keras {keras.__version__}: %s; update pipeline/compat/optimizers.py"
    assert hasattr(optimizer, "_get_variable_index"), where % "Optimizer._get_variable_index is gone"
    assert optimizer._trainable_variables[optimizer._get_variable_index(kernel.value)] is kernel, (
        where % "the index of a backend variable no longer finds its Keras variable in _trainable_variables"
    )


def _net():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((3,))
    x = keras.layers.Dense(4, use_bias=False, name="dense")(inputs)
    x = keras.layers.BatchNormalization(scale=False, name="bn")(x)
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="head")(x))


def _one_step(factor, *, weight_decay=None, name="sgd"):
    model = _net()
    model.get_layer("bn").beta.assign(np.full(4, 0.5, np.float32))
    model.compile(
        optimizer=optim.build_optimizer(
            name=name, learning_rate=0.1, weight_decay=weight_decay, norm_bias_lr_factor=factor
        ),
        loss="sparse_categorical_crossentropy",
    )
    before = {v.path: v.numpy().copy() for v in model.trainable_variables}
    x = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    model.train_on_batch(x, np.arange(8) % 2)
    return {v.path: v.numpy() - before[v.path] for v in model.trainable_variables}


def test_norm_biases_move_factor_times_as_far_other_weights_as_before():
    plain, scaled = _one_step(1.0), _one_step(64.0)
    beta = next(path for path in plain if path.endswith("bn/beta"))
    np.testing.assert_allclose(scaled[beta], 64 * plain[beta], rtol=1e-4)
    assert np.abs(plain[beta]).max() > 1e-6
    for path in plain:
        if path != beta:
            np.testing.assert_allclose(scaled[path], plain[path], rtol=1e-5, atol=1e-8)


def test_weight_decay_of_norm_biases_keeps_the_plain_rate():
    # step = -lr * wd * w - factor * lr * g: the decay term is the same with either factor.
    (plain, scaled), (plain_wd, scaled_wd) = [
        (_one_step(1.0, weight_decay=wd), _one_step(64.0, weight_decay=wd)) for wd in (None, 0.2)
    ]
    beta = next(path for path in plain if path.endswith("bn/beta"))
    decay = -0.1 * 0.2 * 0.5
    np.testing.assert_allclose(plain_wd[beta] - plain[beta], decay, rtol=1e-4)
    np.testing.assert_allclose(scaled_wd[beta] - scaled[beta], decay, rtol=1e-4)


@pytest.mark.slow  # 3-4 s on a 2-core AVX2 VM: make test must stay under 4 min there
def test_adaptive_optimizers_scale_the_rate_too():
    plain, scaled = _one_step(1.0, name="adam"), _one_step(8.0, name="adam")
    beta = next(path for path in plain if path.endswith("bn/beta"))
    np.testing.assert_allclose(scaled[beta], 8 * plain[beta], rtol=1e-4)


def test_factor_one_is_the_plain_class_and_bad_factors_are_refused():
    assert type(optim.build_optimizer(name="sgd", learning_rate=0.1)) is keras.optimizers.SGD
    assert (
        type(optim.build_optimizer(name="sgd", learning_rate=0.1, norm_bias_lr_factor=64)).__name__ == "SGDNormBiasLR"
    )
    with pytest.raises(ValueError, match="norm_bias_lr_factor must be > 0"):
        compat.with_norm_bias_lr_factor(keras.optimizers.SGD, 0)
    with pytest.raises(
        ValueError, match="norm_bias_lr_factor is available for SGD, Adam, AdamW, RMSprop. Received: Lion"
    ):
        compat.with_norm_bias_lr_factor(keras.optimizers.Lion, 2)
    assert compat.is_norm_bias(_net().get_layer("bn").beta) and not compat.is_norm_bias(
        _net().get_layer("dense").kernel
    )


@pytest.mark.slow  # 3-4 s on a 2-core AVX2 VM: make test must stay under 4 min there
def test_keras_file_round_trip_keeps_the_optimizer(tmp_path):
    model = _net()
    schedule = optim.build_schedule(name="polynomial", learning_rate=0.2, steps_per_epoch=2, epochs=2, warmup_epochs=1)
    model.compile(
        optimizer=optim.build_optimizer(
            name="sgd", learning_rate=schedule, momentum=0.85, nesterov=True, weight_decay=0.005, norm_bias_lr_factor=64
        ),
        loss="sparse_categorical_crossentropy",
    )
    model.fit(np.zeros((4, 3), np.float32), np.zeros(4), epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert type(loaded.optimizer).__name__ == "SGDNormBiasLR"
    assert loaded.optimizer.norm_bias_lr_factor == 64.0 and loaded.optimizer.momentum == pytest.approx(0.85)
    assert int(loaded.optimizer.iterations) == 1


@pytest.mark.slow  # 7-30 s on a 2-core AVX2 VM: make test must stay under 4 min there
def test_a_fresh_process_loads_a_checkpoint_with_our_optimizer_and_schedule(tmp_path):
    # pipeline.evaluation.evaluate.load_checkpoint imports what a checkpoint's optimizer names (found when
    # `evaluate` of a cifar10_fast run ran in a process that had not imported pipeline.training.optimizers).
    import subprocess
    import sys
    from pathlib import Path

    model = _net()
    schedule = optim.build_schedule(
        name="polynomial", learning_rate=0.2, steps_per_epoch=2, epochs=2, warmup_epochs=1, warmup_start=0.2
    )
    model.compile(
        optimizer=optim.build_optimizer(name="sgd", learning_rate=schedule, momentum=0.85, norm_bias_lr_factor=64),
        loss="sparse_categorical_crossentropy",
    )
    model.fit(np.zeros((4, 3), np.float32), np.zeros(4), epochs=1, verbose=0)
    model.save(tmp_path / "best.keras")
    code = (
        "import sys; from pipeline.evaluation import evaluate; m = evaluate.load_checkpoint(sys.argv[1]); "
        "print(type(m.optimizer).__name__, m.optimizer.norm_bias_lr_factor, type(m.optimizer._learning_rate).__name__)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "best.keras")],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-3:] == ["SGDNormBiasLR", "64.0", "WarmUp"]
