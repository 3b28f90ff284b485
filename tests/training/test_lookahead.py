"""Lookahead (pipeline/training/lookahead.py): airbench94's decay schedule, the slow weights in the model
after `fit`, the same weights as the rule applied by hand, and the config switch."""

import keras
import numpy as np
import pytest

from pipeline.training import callbacks as callbacks_lib
from pipeline.training.lookahead import Lookahead, lookahead_decay


def test_decay_follows_airbench94_schedule():
    assert lookahead_decay(0, 100, every=5, base=0.95, power=3) == 0.0
    assert lookahead_decay(100, 100, every=5, base=0.95, power=3) == pytest.approx(0.95**5)
    assert lookahead_decay(50, 100, every=5, base=0.95, power=3) == pytest.approx(0.95**5 * 0.125)
    assert lookahead_decay(150, 100, every=5, base=0.95, power=3) == pytest.approx(0.95**5)  # clipped
    with pytest.raises(ValueError, match="total_steps"):
        lookahead_decay(1, 0, every=5, base=0.95, power=3)


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, kernel_initializer="ones")])
    model.compile(keras.optimizers.SGD(0.1), loss="mse")
    return model


def test_fit_with_lookahead_equals_the_rule_by_hand():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 3)).astype("float32"), rng.normal(size=(16, 2)).astype("float32")
    epochs, steps, every = 2, 4, 3  # 8 steps: Lookahead at steps 3, 6, and after each epoch's last (4, 8)
    fitted = _model()
    fitted.fit(x, y, batch_size=4, epochs=epochs, shuffle=False, verbose=0, callbacks=[Lookahead(every=every)])

    by_hand = _model()
    slow = [w.copy() for w in by_hand.get_weights()]
    total = epochs * steps
    for step in range(1, total + 1):
        batch = (step - 1) % steps
        by_hand.train_on_batch(x[batch * 4 : batch * 4 + 4], y[batch * 4 : batch * 4 + 4])
        if step % every == 0 or batch + 1 == steps:
            decay = lookahead_decay(step, total, every=every, base=0.95, power=3)
            fast = by_hand.get_weights()
            slow = [decay * s + (1 - decay) * f for s, f in zip(slow, fast)]
            by_hand.set_weights(slow)
    for got, want in zip(fitted.get_weights(), by_hand.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    plain = _model()
    plain.fit(x, y, batch_size=4, epochs=epochs, shuffle=False, verbose=0)
    assert not np.allclose(plain.get_weights()[0], fitted.get_weights()[0])  # it did something


def test_config_switch_puts_lookahead_first(tmp_path):
    from pipeline.config.schema import CallbacksConfig, LookaheadConfig

    options = CallbacksConfig()
    off = callbacks_lib.build_callbacks(options, tmp_path, 100)
    assert not any(isinstance(c, Lookahead) for c in off.all)
    on = callbacks_lib.build_callbacks(options, tmp_path, 100, lookahead=LookaheadConfig(enabled=True, every=7))
    assert isinstance(on.all[0], Lookahead) and on.all[0].every == 7


def test_unknown_cardinality_uses_the_given_steps_per_epoch():
    """Image-file pipelines end in `ignore_errors`: `fit` cannot count their batches, the driver can; the
    schedule's T comes from the given count and the epoch still ends on the slow weights."""
    import tensorflow as tf

    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(16, 3)).astype("float32"), rng.normal(size=(16, 2)).astype("float32")
    unknown = tf.data.Dataset.from_tensor_slices((x, y)).batch(4).ignore_errors()
    assert unknown.cardinality().numpy() == tf.data.UNKNOWN_CARDINALITY
    model, lookahead = _model(), Lookahead(every=3, steps_per_epoch=4)
    model.fit(unknown, epochs=2, verbose=0, callbacks=[lookahead])
    assert (lookahead._steps, lookahead._total) == (4, 8)
    assert lookahead._synced_at == int(model.optimizer.iterations.numpy())  # the last step was a Lookahead step
    for got, slow in zip([v.numpy() for v in lookahead._variables], lookahead._slow):
        np.testing.assert_array_equal(got, slow)
