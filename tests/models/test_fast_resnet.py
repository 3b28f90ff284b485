"""models/fast_resnet.py: the cifar10_fast network's size and head, its options, one training step, a
save/load round trip, and the whitening stem."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from benchmarks import common
from models import MODELS, build_model, fast_resnet


def test_registered_with_its_options_and_the_documented_size():
    assert "cifar10_fast" in MODELS.names()
    assert set(MODELS.options("cifar10_fast")) == {
        "width",
        "multipliers",
        "residual",
        "activation",
        "batchnorm_momentum",
        "logit_scale",
        "whiten",
        "identity_init",
    }
    model = build_model("cifar10_fast", input_shape=(32, 32, 3), num_classes=10)
    assert model.count_params() == 1_973_944
    assert sum(int(np.prod(v.shape)) for v in model.trainable_variables) == 1_971_640
    flops, _ = common.count_flops(model)
    assert flops == 236_294_720  # 0.236 GFLOPs per 32x32 image, forward
    assert model.layers[-1].name == "probabilities" and model.output.dtype == "float32"
    assert model.get_layer("group2_bn").momentum == 0.9 and model.get_layer("group2_bn").scale is False


def test_options_change_the_network_and_bad_ones_are_refused():
    plain = build_model(
        "cifar10_fast",
        input_shape=(16, 16, 1),
        num_classes=3,
        width=8,
        residual=False,
        activation="relu",
        multipliers=(1, 2, 2),
    )
    assert not any(isinstance(layer, keras.layers.Add) for layer in plain.layers)
    assert plain.get_layer("group3_conv").filters == 16 and plain.output_shape == (None, 3)
    assert plain.get_layer("whiten").kernel.shape == (2, 2, 1, 8)
    with pytest.raises(
        ValueError, match=r"multipliers must have 3 values \(one per group\). Received: multipliers=\(1, 2\)"
    ):
        build_model("cifar10_fast", input_shape=(32, 32, 3), num_classes=10, multipliers=(1, 2))
    with pytest.raises(ValueError, match=r"at least 16x16. Received: input_shape=\(8, 8, 3\)"):
        build_model("cifar10_fast", input_shape=(8, 8, 3), num_classes=10)


def test_one_training_step_and_a_keras_file_round_trip(tmp_path):
    keras.utils.set_random_seed(0)
    model = build_model("cifar10_fast", input_shape=(32, 32, 3), num_classes=10, width=8)
    model.compile(
        keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.2),
    )
    images = np.random.default_rng(0).normal(size=(8, 32, 32, 3)).astype(np.float32)
    labels = np.eye(10, dtype=np.float32)[np.arange(8)]
    before = model.get_layer("fc").kernel.numpy().copy()
    loss = model.train_on_batch(images, labels)
    assert np.isfinite(loss) and not np.array_equal(before, model.get_layer("fc").kernel.numpy())
    model.save(tmp_path / "fast.keras")
    loaded = keras.saving.load_model(tmp_path / "fast.keras", compile=False)  # built-in layers only
    np.testing.assert_allclose(loaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6)


def test_identity_init_passes_channels_through_and_round_trips(tmp_path):
    keras.utils.set_random_seed(0)
    model = build_model(
        "cifar10_fast", input_shape=(32, 32, 3), num_classes=10, width=8, identity_init=True, residual=False
    )
    kernel = model.get_layer("group1_conv").kernel.numpy()  # [3, 3, 24, 8]: 8 identity filters
    expected = np.zeros((3, 3, 24, 8), np.float32)
    expected[1, 1, np.arange(8), np.arange(8)] = 1
    np.testing.assert_array_equal(kernel, expected)
    kernel = model.get_layer("group2_conv").kernel.numpy()  # [3, 3, 8, 32]: 8 identities, 24 random filters
    np.testing.assert_array_equal(kernel[..., :8], expected[:, :, :8, :8])
    assert np.count_nonzero(kernel[..., 8:]) > 0.99 * kernel[..., 8:].size
    # A conv of the identity filters reproduces its input's channels (padding "same").
    x = np.random.default_rng(0).normal(size=(2, 5, 5, 32)).astype(np.float32)  # group 3: 32 -> 32, all identities
    out = keras.ops.conv(x, model.get_layer("group3_res_conv").kernel, padding="same").numpy()
    np.testing.assert_allclose(out, x, atol=1e-6)
    model.save(tmp_path / "identity.keras")
    loaded = keras.saving.load_model(tmp_path / "identity.keras", compile=False)
    assert isinstance(loaded.get_layer("group1_conv").kernel_initializer, fast_resnet.PartialIdentity)


def test_whitening_stem_decorrelates_the_patches():
    rng = np.random.default_rng(0)
    # Correlated pixels: a smooth random field plus a little noise.
    base = rng.normal(size=(64, 9, 9, 3))
    images = tf.image.resize(base, (24, 24)).numpy() + 0.05 * rng.normal(size=(64, 24, 24, 3))
    network = build_model("cifar10_fast", input_shape=(24, 24, 3), num_classes=10, width=8)
    fast_resnet.init_whitening(network, images, epsilon=1e-6)
    stem = network.get_layer("whiten")
    assert not stem.trainable and np.all(stem.bias.numpy() == 0)
    responses = tf.nn.conv2d(images.astype(np.float32), stem.kernel, 1, "VALID").numpy().reshape(-1, 24)
    covariance = responses[:, :12].T @ responses[:, :12] / len(responses)
    np.testing.assert_allclose(covariance, np.eye(12), atol=2e-3)  # unit variance, uncorrelated
    np.testing.assert_allclose(responses[:, 12:], -responses[:, :12], atol=1e-4)  # then the negatives
    with pytest.raises(ValueError, match="needs a cifar10_fast network"):
        fast_resnet.init_whitening(build_model("tiny", input_shape=(24, 24, 3), num_classes=10), images)


@pytest.mark.slow  # 3-8 s on a 2-core AVX2 VM: make test must stay under 4 min there
def test_whiten_option_sets_a_frozen_stem_from_normalised_training_images(data_env, tmp_path):
    from pipeline import experiment as experiment_lib
    from pipeline import run as train
    from pipeline.data.splits import Splits
    from pipeline.training import phases

    config = experiment_lib.load_experiment(
        "tiny",
        [
            *data_env,
            "model.name=cifar10_fast",
            "input.image_size=[16,16]",
            "input.normalization=standardize",
            "model.options={width: 8, whiten: true}",
        ],
    )
    splits = Splits.from_config(config, log=lambda *_: None)
    messages = []
    model = train.build_checked_model(config, splits, log=messages.append)  # + the phase's trainable: all
    assert messages == [
        f"model cifar10_fast: stem 'whiten' set to the PCA whitening of {len(splits.train[1])} "
        "training images' 2x2 patches (frozen)"
    ]
    stem = model.get_layer("cifar10_fast").get_layer("whiten")
    assert not stem.trainable
    # The kernel whitens the images the network receives: the training split behind the model's own
    # normalisation layer.
    normalised = model.get_layer("normalize")(splits.sample_images()).numpy()
    np.testing.assert_allclose(stem.kernel.numpy(), fast_resnet.whitening_kernel(normalised), rtol=1e-4, atol=1e-4)
    before = stem.kernel.numpy().copy()
    phases.set_trainable(model, "all")
    model.compile(keras.optimizers.SGD(0.1), loss="categorical_crossentropy")
    model.train_on_batch(np.full((4, 16, 16, 3), 100.0, np.float32), np.eye(10, dtype=np.float32)[:4])
    np.testing.assert_array_equal(stem.kernel.numpy(), before)
    # The builder freezes the stem itself, so sizes and summaries count it as frozen.
    assert (
        not build_model("cifar10_fast", input_shape=(16, 16, 3), num_classes=10, width=8, whiten=True)
        .get_layer("whiten")
        .trainable
    )
    # Without the option the stem is an ordinary trainable layer.
    plain = train.build_checked_model(
        experiment_lib.load_experiment(
            "tiny", [*data_env, "model.name=cifar10_fast", "input.image_size=[16,16]", "model.options={width: 8}"]
        ),
        splits,
    )
    assert plain.get_layer("cifar10_fast").get_layer("whiten").trainable


@pytest.mark.slow  # 3-8 s on a 2-core AVX2 VM: make test must stay under 4 min there
def test_noise_filled_erasing_with_a_whitening_stem_is_warned_about(data_env):
    from pipeline import experiment as experiment_lib
    from pipeline import run as train
    from pipeline.data.splits import Splits

    base = [
        *data_env,
        "model.name=cifar10_fast",
        "input.image_size=[16,16]",
        "input.normalization=standardize",
        "model.options={width: 8, whiten: true}",
        "input.augment.random_erasing=0.5",
    ]
    config = experiment_lib.load_experiment("tiny", base)
    splits = Splits.from_config(config, log=lambda *_: None)
    messages = []
    train.build_checked_model(config, splits, log=messages.append)
    assert any(
        m.startswith("warning: input.augment.random_erasing fills with noise")
        and "input.augment.random_erasing_fill" in m
        for m in messages
    ), messages
    messages.clear()
    filled = experiment_lib.load_experiment("tiny", base + ["input.augment.random_erasing_fill=[125, 123, 114]"])
    train.build_checked_model(filled, splits, log=messages.append)
    assert not any("warning" in m for m in messages), messages
