"""Weight EMA (Polyak averaging) that validation, checkpoints and export all see.

Keras 3 optimizers keep the average themselves: `optimizer(use_ema=True, ema_momentum=m)` updates, after
every step, average = m * average + (1 - m) * weight (the first step copies the weights), for trainable
variables only: BatchNorm's moving mean and variance are not averaged, they keep following the raw
weights. On its own Keras uses the average once: at the end of `fit` (`optimizer.finalize_variable_values`
copies it into the model), so validation during `fit`, and checkpoints written by callbacks, see the raw
weights. `keras.callbacks.SwapEMAWeights(swap_on_epoch=True)` swaps the two sets at epoch end, but the
model then ends `fit` with the raw weights whenever training stops before `epochs` (early stopping, a
time limit): the swap leaves the raw weights in the average slots that `finalize_variable_values` copies
back (checked with Keras 3.15.1). And a backup taken while the swap is in place would resume training
from the averaged weights.

`EMAWeights` copies instead of swapping: the optimizer's averages are never touched, the raw weights are
kept aside while the averages are in the model:
* validation (`on_test_begin` .. `on_test_end`, in `fit` and in `evaluate`) runs on the averages;
* at each epoch end the averages go into the model, for the callbacks after it (checkpoints, export);
* `EMAWeights.restore_callback()`, placed just before the resume backup, puts the raw weights back, so the
  backup (weights and optimizer state) resumes training exactly; without it the next epoch's start does;
* `fit` ends with the averages in the model (Keras' `finalize_variable_values`), whatever ended it.

Callback order: [..., ema, checkpoints, early stopping, logging, ema.restore_callback(), backup].
"""

from __future__ import annotations

import keras

from pipeline import compat


def ema_optimizer_options(momentum: float | None) -> dict:
    """Keyword arguments that make a Keras optimizer keep a weight EMA: {} for None or 0 (off), else
    {"use_ema": True, "ema_momentum": momentum}. Typical momenta: 0.99 to 0.9999; the average spans
    about 1 / (1 - momentum) steps. Raises ValueError unless 0 <= momentum < 1."""
    if momentum is None or float(momentum) == 0.0:
        return {}
    momentum = float(momentum)
    if not 0.0 < momentum < 1.0:
        raise ValueError(f"ema must be in (0, 1) (0 or null = off). Received: ema={momentum!r}")
    return {"use_ema": True, "ema_momentum": momentum}


def _keeps_ema(optimizer) -> bool:
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    return bool(getattr(inner, "use_ema", False))


class _RestoreTrainingWeights(keras.callbacks.Callback):
    """Puts the raw weights back at epoch end (see `EMAWeights.restore_callback`)."""

    def __init__(self, owner: EMAWeights):
        super().__init__()
        self.owner = owner

    def on_epoch_end(self, epoch, logs=None):
        self.owner.put_training_weights()


class EMAWeights(keras.callbacks.Callback):
    """Puts the optimizer's weight EMA into the model for validation and at each epoch end (see the
    module docstring for the order of callbacks). The model's optimizer must be built with
    `use_ema=True` (`ema_optimizer_options`); `on_train_begin` raises ValueError otherwise. In `evaluate`
    or `predict` without a built EMA optimizer it does nothing.
    """

    def __init__(self):
        super().__init__()
        self._training_weights = None  # raw weights (numpy) while the averages are in the model
        self._for_test = False

    def restore_callback(self) -> keras.callbacks.Callback:
        """A callback that puts the raw weights back at epoch end: place it just before the resume backup."""
        return _RestoreTrainingWeights(self)

    # -- the two moves ------------------------------------------------------------------------
    def _pairs(self):
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is None or not _keeps_ema(optimizer):
            return None
        inner = getattr(optimizer, "inner_optimizer", optimizer)
        return compat.ema_variable_pairs(optimizer) if inner.built else None

    def put_averages(self) -> bool:
        """Copies the averages into the model, keeping the raw weights aside; True when they are in."""
        if self._training_weights is not None:
            return True
        pairs = self._pairs()
        if not pairs:
            return False
        self._training_weights = [keras.ops.convert_to_numpy(variable) for variable, _ in pairs]
        for variable, average in pairs:
            variable.assign(keras.ops.convert_to_numpy(average))
        return True

    def put_training_weights(self) -> None:
        """Puts the raw weights back (nothing to do when they are in)."""
        if self._training_weights is None:
            return
        for (variable, _), value in zip(self._pairs(), self._training_weights):
            variable.assign(value)
        self._training_weights = None

    # -- callback hooks -----------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        if not _keeps_ema(self.model.optimizer):
            raise ValueError(
                "EMAWeights needs an optimizer built with use_ema=True (train.optimizer.ema); "
                f"Received: {type(self.model.optimizer).__name__} without it"
            )
        self._training_weights = None

    def on_epoch_begin(self, epoch, logs=None):
        self.put_training_weights()  # when no restore callback did at the last epoch end

    def on_test_begin(self, logs=None):
        self._for_test = self._training_weights is None and self.put_averages()

    def on_test_end(self, logs=None):
        if self._for_test:
            self.put_training_weights()
        self._for_test = False

    on_predict_begin = on_test_begin
    on_predict_end = on_test_end

    def on_epoch_end(self, epoch, logs=None):
        self.put_averages()

    def on_train_end(self, logs=None):
        # `fit` has just copied the averages into the model (finalize_variable_values); the raw weights
        # kept aside, if any, are stale.
        self._training_weights = None
