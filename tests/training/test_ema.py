"""pipeline/training/ema.py: validation, checkpoints and the end of `fit` see the weight EMA; training and the
resume backup see the raw weights, so the EMA changes nothing about how the model trains."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from pipeline import compat
from pipeline.training import ema

RNG = np.random.default_rng(0)
X = RNG.normal(size=(64, 3)).astype(np.float32)
Y = (X @ np.array([[1.0], [-2.0], [0.5]]) + 0.3).astype(np.float32)
X_VAL = RNG.normal(size=(16, 3)).astype(np.float32)
Y_VAL = (X_VAL @ np.array([[1.0], [-2.0], [0.5]]) + 0.3).astype(np.float32)


class Probe(keras.callbacks.Callback):
    """Records the model's weights, and the optimizer's averages, at every epoch end."""

    def __init__(self):
        super().__init__()
        self.weights, self.averages = [], []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append([v.numpy().copy() for v in self.model.trainable_variables])
        self.averages.append([a.numpy().copy() for _, a in compat.ema_variable_pairs(self.model.optimizer)])


class StopAfterFirstEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        self.model.stop_training = True


def _fit(callbacks, *, epochs=3, optimizer=None, validation=True):
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, name="dense")])
    model.compile(optimizer or keras.optimizers.SGD(0.05, **ema.ema_optimizer_options(0.8)), loss="mse")
    history = model.fit(
        X,
        Y,
        batch_size=16,
        epochs=epochs,
        shuffle=False,
        verbose=0,
        callbacks=callbacks,
        validation_data=(X_VAL, Y_VAL) if validation else None,
    )
    return model, history


def _val_loss(weights):
    kernel, bias = weights
    return float(np.mean(np.square(X_VAL @ kernel + bias - Y_VAL)))


def _assert_close(left, right):
    for a, b in zip(left, right):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_options_turn_the_optimizer_average_on_and_refuse_a_bad_momentum():
    assert ema.ema_optimizer_options(None) == {} and ema.ema_optimizer_options(0) == {}
    assert ema.ema_optimizer_options(0.999) == {"use_ema": True, "ema_momentum": 0.999}
    with pytest.raises(ValueError, match=r"ema must be in \(0, 1\) \(0 or null = off\). Received: ema=1.0"):
        ema.ema_optimizer_options(1.0)


def test_validation_and_checkpoints_see_the_average_while_training_and_backup_see_the_raw_weights():
    reference = Probe()
    _, plain = _fit([reference])  # no EMAWeights: Keras alone

    averages = ema.EMAWeights()
    checkpoint, backup = Probe(), Probe()
    model, history = _fit([averages, checkpoint, averages.restore_callback(), backup])

    for epoch in range(3):
        _assert_close(backup.weights[epoch], reference.weights[epoch])  # training unchanged; backup raw
        _assert_close(checkpoint.weights[epoch], reference.averages[epoch])  # checkpoints get the EMA
        assert history.history["val_loss"][epoch] == pytest.approx(_val_loss(reference.averages[epoch]), rel=1e-5)
        # Without the callback Keras validates the raw weights.
        assert plain.history["val_loss"][epoch] == pytest.approx(_val_loss(reference.weights[epoch]), rel=1e-5)
    _assert_close([v.numpy() for v in model.trainable_variables], reference.averages[-1])


def test_fit_stopped_early_still_ends_with_the_average():
    reference = Probe()
    _fit([reference])
    averages = ema.EMAWeights()
    model, _ = _fit([averages, StopAfterFirstEpoch()])  # and no restore callback: the epoch start restores
    _assert_close([v.numpy() for v in model.trainable_variables], reference.averages[0])


def test_evaluate_after_fit_uses_the_average_and_without_ema_the_callback_refuses():
    averages = ema.EMAWeights()
    model, _ = _fit([averages, averages.restore_callback()], validation=False)
    pairs = compat.ema_variable_pairs(model.optimizer)
    expected = _val_loss([a.numpy() for _, a in pairs])
    assert model.evaluate(X_VAL, Y_VAL, verbose=0, callbacks=[averages]) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="EMAWeights needs an optimizer built with use_ema=True"):
        _fit([ema.EMAWeights()], optimizer=keras.optimizers.SGD(0.05))


def test_a_loss_scale_optimizer_keeps_its_average_in_the_inner_optimizer():
    reference = Probe()
    _fit([reference])
    averages = ema.EMAWeights()
    optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.05, **ema.ema_optimizer_options(0.8)))
    checkpoint = Probe()
    model, _ = _fit([averages, checkpoint, averages.restore_callback()], optimizer=optimizer)
    _assert_close(checkpoint.weights[1], reference.averages[1])
    _assert_close([v.numpy() for v in model.trainable_variables], reference.averages[-1])
