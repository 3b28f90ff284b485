"""pipeline/evaluation/tta.py: the flip TTA model averages the two probability vectors, evaluates, saves, loads and
exports as a SavedModel that applies the mirror itself."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from models import build_model
from pipeline.evaluation import tta


@pytest.fixture(scope="module")
def tiny():
    keras.utils.set_random_seed(0)
    return build_model("tiny", input_shape=(16, 16, 3), num_classes=5)


def _images(count=4):
    return np.random.default_rng(1).uniform(0, 1, size=(count, 16, 16, 3)).astype(np.float32)


def test_output_is_the_mean_of_the_image_and_its_mirror(tiny):
    images = _images()
    wrapped = tta.flip_tta_model(tiny)
    expected = (tiny.predict(images, verbose=0) + tiny.predict(images[:, :, ::-1], verbose=0)) / 2
    np.testing.assert_allclose(wrapped.predict(images, verbose=0), expected, rtol=1e-5, atol=1e-6)
    # A mirrored batch gives the same TTA output: the average is symmetric.
    np.testing.assert_allclose(wrapped.predict(images[:, :, ::-1], verbose=0), expected, rtol=1e-5, atol=1e-6)
    assert wrapped.output.dtype == "float32" and wrapped.layers[-1].name == "probabilities"
    assert wrapped.count_params() == tiny.count_params()  # weights shared, none added


def test_evaluate_and_keras_file_round_trip(tiny, tmp_path):
    images, labels = _images(8), np.arange(8) % 5
    wrapped = tta.flip_tta_model(tiny)
    wrapped.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    loss, accuracy = wrapped.evaluate(images, labels, verbose=0)
    probabilities = wrapped.predict(images, verbose=0)
    assert loss == pytest.approx(float(np.mean(-np.log(probabilities[np.arange(8), labels]))), rel=1e-4)
    wrapped.save(tmp_path / "tta.keras")
    loaded = keras.saving.load_model(tmp_path / "tta.keras", compile=False)  # no custom objects
    np.testing.assert_allclose(loaded.predict(images, verbose=0), probabilities, rtol=1e-5, atol=1e-6)


def test_exported_saved_model_serves_the_averaged_probabilities(tiny, tmp_path):
    images = _images()
    wrapped = tta.flip_tta_model(tiny)
    wrapped.export(str(tmp_path / "saved"), verbose=False)
    loaded = tf.saved_model.load(str(tmp_path / "saved"))  # keep a reference: it owns the variables
    served = loaded.serve(tf.constant(images))
    np.testing.assert_allclose(served.numpy(), wrapped.predict(images, verbose=0), rtol=1e-5, atol=1e-6)


def test_with_tta_modes_and_refusals(tiny):
    assert tta.with_tta(tiny, "none") is tiny
    assert tta.with_tta(tiny, "flip").name == "tiny_flip_tta"
    assert tta.with_tta(tiny, "flip_translate").name == "tiny_flip_translate_tta"
    with pytest.raises(ValueError, match=r"tta must be one of none, flip, flip_translate. Received: tta='flips'"):
        tta.with_tta(tiny, "flips")
    flat = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    with pytest.raises(
        ValueError, match=r"flip TTA needs image input \[batch, H, W, C\]. Received: input shape \(None, 4\)"
    ):
        tta.flip_tta_model(flat)


def _reflect_shift(images, dy, dx):
    """Numpy reference: content moved by (dy, dx) pixels, the uncovered border filled by reflection."""
    padded = np.pad(images, [(0, 0), (1, 1), (1, 1), (0, 0)], mode="reflect")
    height, width = images.shape[1:3]
    return padded[:, 1 - dy : 1 - dy + height, 1 - dx : 1 - dx + width]


def test_flip_translate_weights_the_six_views(tiny, tmp_path):
    images = _images()
    predict = lambda x: tiny.predict(x, verbose=0)  # noqa: E731
    shifted = [_reflect_shift(images, 1, 1), _reflect_shift(images, -1, -1)]
    assert np.array_equal(shifted[0][:, 1:, 1:], images[:, :-1, :-1])  # really moved down-right
    expected = (
        0.5 * (predict(images) + predict(images[:, :, ::-1])) / 2
        + 0.5 * sum(predict(view) + predict(view[:, :, ::-1]) for view in shifted) / 4
    )
    wrapped = tta.flip_translate_tta_model(tiny)
    np.testing.assert_allclose(wrapped.predict(images, verbose=0), expected, rtol=1e-5, atol=1e-6)
    assert wrapped.count_params() == tiny.count_params()
    wrapped.save(tmp_path / "tta.keras")
    loaded = keras.saving.load_model(tmp_path / "tta.keras", compile=False)
    np.testing.assert_allclose(loaded.predict(images, verbose=0), expected, rtol=1e-5, atol=1e-6)
    wrapped.export(str(tmp_path / "saved"), verbose=False)
    served = tf.saved_model.load(str(tmp_path / "saved"))
    np.testing.assert_allclose(served.serve(tf.constant(images)).numpy(), expected, rtol=1e-5, atol=1e-6)
