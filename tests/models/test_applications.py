"""Transfer-learning models (models/applications.py, models/weights.py): structure, preprocessing inside the
model, Keras-style argument errors, minimum sizes, inference-mode backbone, weight transfer from earlier
runs, and the offline ImageNet error.

Random weights (weights=None) and small inputs keep this fast; nothing is downloaded.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

import models
from models import applications
from models.applications import BACKBONES, WeightsError
from pipeline import compat
from pipeline import config as config_lib
from pipeline import experiment as experiment_lib

VGG16_BASE_PARAMETERS = 14_714_688


def build(name="applications", input_shape=(32, 32, 3), num_classes=3, **options):
    return models.build_model(name, input_shape=input_shape, num_classes=num_classes, **options)


def pixels(shape, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, size=shape).astype("float32")


def predict(model, images):
    return keras.ops.convert_to_numpy(model(images, training=False))


# --------------------------------------------------------------------------------------------------
# Registration and structure
# --------------------------------------------------------------------------------------------------


def test_registered_with_their_own_preprocessing():
    assert {"applications", "vgg16_finetune"} <= set(models.MODELS.names())
    assert models.includes_preprocessing("applications")
    assert models.includes_preprocessing("vgg16_finetune")
    assert not models.includes_preprocessing("lenet")
    assert models.MODELS.options("applications") == [
        "backbone",
        "weights",
        "pooling",
        "dense_units",
        "dropout_rate",
        "upscale_to",
        "bn_momentum",
    ]
    assert "backbone" not in models.MODELS.options("vgg16_finetune")
    with pytest.raises(KeyError, match="unknown model"):
        models.includes_preprocessing("nope")


def test_config_accepts_the_options():
    config = config_lib.from_dict(
        {"model": {"name": "applications", "options": {"backbone": "mobilenet_v2", "upscale_to": [32, 32]}}}
    )
    experiment_lib.check_registries(config)
    assert config.model.options["backbone"] == "mobilenet_v2"
    with pytest.raises(config_lib.ConfigError, match="did you mean 'model.options.upscale_to'"):
        experiment_lib.check_registries(
            config_lib.from_dict({"model": {"name": "applications", "options": {"upscale": [32, 32]}}})
        )


def test_vgg16_finetune_is_the_seed_recipe():
    model = build("vgg16_finetune", num_classes=10)
    backbone = model.get_layer("backbone")
    assert backbone.count_params() == VGG16_BASE_PARAMETERS
    assert isinstance(backbone, keras.Model)  # the base is ONE nested layer
    assert [layer.name for layer in model.layers] == [
        "image",
        "preprocess",
        "backbone",
        "pool",
        "fc",
        "dropout",
        "logits",
        "probabilities",
    ]
    assert isinstance(model.get_layer("pool"), keras.layers.Flatten)
    assert model.get_layer("fc").units == 256
    assert model.get_layer("dropout").rate == 0.5
    assert model.get_layer("probabilities").dtype_policy.name == "float32"
    # flatten of 1x1x512 -> 256 -> 10
    assert model.count_params() == VGG16_BASE_PARAMETERS + (512 * 256 + 256) + (256 * 10 + 10)


def test_head_options():
    model = build(backbone="vgg16", pooling="max", dense_units=0, dropout_rate=0.2)
    assert isinstance(model.get_layer("pool"), keras.layers.GlobalMaxPooling2D)
    assert "fc" not in [layer.name for layer in model.layers]
    assert model.count_params() == VGG16_BASE_PARAMETERS + 512 * 3 + 3
    with pytest.raises(ValueError) as error:
        build(backbone="resnet5")
    assert str(error.value) == (
        "Unknown backbone (did you mean 'resnet50'?). The `backbone` argument should be one "
        f"of {', '.join(BACKBONES)}. Received: backbone='resnet5'"
    )
    with pytest.raises(ValueError) as error:
        build(pooling="mean")
    assert str(error.value) == (
        "The `pooling` argument should be one of 'avg', 'max', 'flatten'. Received: pooling='mean'"
    )
    with pytest.raises(
        ValueError, match="1 \\(grey, repeated to RGB\\) or 3 input channels. Received: input_shape=\\(32, 32, 4\\)"
    ):
        build(input_shape=(32, 32, 4))
    with pytest.raises(
        ValueError, match="`dense_units` argument should be an integer >= 0 or None. Received: dense_units=-1"
    ):
        build(dense_units=-1)
    with pytest.raises(
        ValueError, match="`dropout_rate` argument should be a number in \\[0, 1\\). Received: dropout_rate=1"
    ):
        build(dropout_rate=1)
    with pytest.raises(
        ValueError, match="`upscale_to` argument should be \\[height, width\\].*Received: upscale_to=\\[32\\]"
    ):
        build(upscale_to=[32])


# One backbone in make test; the others (2-4 s each on a 2-core VM) in make test-slow.
@pytest.mark.parametrize(
    "backbone", [b if b == "mobilenet_v2" else pytest.param(b, marks=pytest.mark.slow) for b in sorted(BACKBONES)]
)
def test_each_backbone_builds_at_its_minimum_and_preprocesses_like_keras(backbone):
    size = BACKBONES[backbone].min_size
    model = build(input_shape=(size, size, 3), backbone=backbone, dense_units=16)
    images = pixels((2, size, size, 3), seed=1)
    probabilities = predict(model, images)
    assert probabilities.shape == (2, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    # The preprocessing inside the model is keras.applications.<family>.preprocess_input.
    family = getattr(keras.applications, BACKBONES[backbone].family)
    expected = family.preprocess_input(images.copy())
    inside = keras.ops.convert_to_numpy(model.get_layer("preprocess")(images))
    assert np.abs(inside - expected).max() < 1e-4


def test_grey_input_is_repeated_to_rgb():
    grey = build(input_shape=(32, 32, 1), backbone="vgg16", dense_units=8)
    rgb = build(input_shape=(32, 32, 3), backbone="vgg16", dense_units=8)
    rgb.set_weights(grey.get_weights())  # same weights: grey_to_rgb has none
    images = pixels((2, 32, 32, 1), seed=2)
    assert grey.get_layer("grey_to_rgb").output.shape == (None, 32, 32, 3)
    np.testing.assert_allclose(predict(grey, images), predict(rgb, np.repeat(images, 3, axis=-1)), atol=1e-6)


def test_below_the_minimum_size_says_how_to_fix_it():
    with pytest.raises(ValueError) as error:
        build(input_shape=(28, 28, 1), backbone="vgg16")
    assert str(error.value) == (
        "The input size [28, 28] is below vgg16's minimum of 32x32: use images of at least "
        "[32, 32], or `upscale_to=[32, 32]` to upscale inside the model. "
        "Received: image_size=[28, 28]"
    )
    with pytest.raises(ValueError, match="inception_v3's minimum of 75x75.*at least \\[75, 80\\]"):
        build(input_shape=(60, 80, 3), backbone="inception_v3")
    with pytest.raises(ValueError) as error:
        build(input_shape=(28, 28, 1), backbone="vgg16", upscale_to=[16, 16])
    assert str(error.value) == (
        "The `upscale_to` size is below vgg16's minimum of 32x32: upscale to at least "
        "[32, 32]. Received: upscale_to=[16, 16]"
    )
    model = build(input_shape=(28, 28, 1), backbone="vgg16", upscale_to=32, dense_units=8)
    assert model.get_layer("upscale").output.shape == (None, 32, 32, 3)
    np.testing.assert_allclose(predict(model, pixels((2, 28, 28, 1))).sum(axis=1), 1.0, atol=1e-5)


# --------------------------------------------------------------------------------------------------
# An earlier run of this pipeline, trained one step and saved (VGG16: quick to build, save and load)
# --------------------------------------------------------------------------------------------------


def _fit_one_step(model, seed):
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy", run_eagerly=True)
    model.fit(pixels((8, 32, 32, 3), seed=seed), np.arange(8) % 5, batch_size=8, epochs=1, verbose=0)


@pytest.fixture(scope="module")
def earlier_run(tmp_path_factory):
    keras.utils.set_random_seed(0)
    folder = tmp_path_factory.mktemp("earlier_run")
    model = build(num_classes=5, backbone="vgg16", dense_units=16)
    _fit_one_step(model, seed=4)
    inputs = keras.Input(shape=(32, 32, 3), name="image")  # train.py's outer model around the network
    wrapper = keras.Model(inputs, model(keras.layers.Rescaling(1.0, name="normalize")(inputs)), name="run")
    paths = {
        "keras": folder / "best.keras",
        "weights": folder / "model.weights.h5",
        "wrapper_keras": folder / "wrapper.keras",
        "wrapper_weights": folder / "wrapper.weights.h5",
    }
    model.save(paths["keras"])
    model.save_weights(paths["weights"])
    wrapper.save(paths["wrapper_keras"])
    wrapper.save_weights(paths["wrapper_weights"])
    return {"model": model, **paths}


def _backbone_outputs(model, seed=5):
    features = keras.applications.vgg16.preprocess_input(pixels((2, 32, 32, 3), seed=seed))
    return keras.ops.convert_to_numpy(model.get_layer("backbone")(features))


def test_saved_model_loads_with_its_preprocessing(earlier_run):
    loaded = keras.models.load_model(earlier_run["keras"])  # no custom_objects (models is imported)
    images = pixels((2, 32, 32, 3), seed=3)
    np.testing.assert_allclose(predict(loaded, images), predict(earlier_run["model"], images), atol=1e-6)
    inside = keras.ops.convert_to_numpy(loaded.get_layer("preprocess")(images))  # caffe: flip + mean
    assert np.abs(inside - keras.applications.vgg16.preprocess_input(images.copy())).max() < 1e-4
    assert isinstance(loaded.get_layer("backbone"), applications.BackboneModel)


def test_transfer_from_keras_with_new_classes_keeps_a_new_head(earlier_run, capsys):
    source = earlier_run["model"]
    model = build(num_classes=2, backbone="vgg16", dense_units=16, weights=str(earlier_run["keras"]))
    np.testing.assert_array_equal(_backbone_outputs(model), _backbone_outputs(source))
    assert model.get_layer("logits").kernel.shape == (16, 2)
    np.testing.assert_array_equal(model.get_layer("fc").kernel.numpy(), source.get_layer("fc").kernel.numpy())
    assert "head copied: fc; new head kept: logits" in capsys.readouterr().out


def test_transfer_from_keras_with_same_classes_copies_the_head(earlier_run, capsys):
    model = build(num_classes=5, backbone="vgg16", dense_units=16, weights=str(earlier_run["keras"]))
    images = pixels((2, 32, 32, 3), seed=6)
    np.testing.assert_allclose(predict(model, images), predict(earlier_run["model"], images), atol=1e-6)
    assert "head copied: fc, logits" in capsys.readouterr().out


def test_transfer_through_train_py_wrapper(earlier_run):
    model = build(num_classes=2, backbone="vgg16", dense_units=16, weights=str(earlier_run["wrapper_keras"]))
    np.testing.assert_array_equal(_backbone_outputs(model), _backbone_outputs(earlier_run["model"]))


def test_weights_h5_files_load(earlier_run):
    """save_weights files of a same-architecture model: the bare network's reproduces its predictions;
    train.py's wrapper's, with another class count, gives the same backbone and a new head."""
    images = pixels((2, 32, 32, 3), seed=7)
    same = build(num_classes=5, backbone="vgg16", dense_units=16, weights=str(earlier_run["weights"]))
    np.testing.assert_allclose(predict(same, images), predict(earlier_run["model"], images), atol=1e-6)
    other = build(num_classes=2, backbone="vgg16", dense_units=16, weights=str(earlier_run["wrapper_weights"]))
    np.testing.assert_array_equal(_backbone_outputs(other), _backbone_outputs(earlier_run["model"]))
    source_fc = earlier_run["model"].get_layer("fc").kernel.numpy()
    np.testing.assert_array_equal(other.get_layer("fc").kernel.numpy(), source_fc)
    assert other.get_layer("logits").kernel.shape == (16, 2)
    assert other.get_layer("backbone").inference_mode


# --------------------------------------------------------------------------------------------------
# BatchNormalization: learns from scratch, frozen statistics once trained (MobileNetV2)
# --------------------------------------------------------------------------------------------------


def _batch_norm_state(model):
    layers = [
        layer for layer in model.get_layer("backbone").layers if isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert layers
    return [
        [
            np.array(keras.ops.convert_to_numpy(v), copy=True)
            for v in (bn.moving_mean, bn.moving_variance, bn.gamma, bn.beta)
        ]
        for bn in layers
    ]


@pytest.mark.slow  # 7-30 s on a 2-core AVX2 VM: make test must stay under 4 min there
def test_batch_norm_learns_from_scratch_and_stays_frozen_once_trained(tmp_path):
    keras.utils.set_random_seed(1)
    scratch = build(num_classes=5, backbone="mobilenet_v2", dense_units=16)
    assert not scratch.get_layer("backbone").inference_mode  # weights=None: nothing to keep
    before = _batch_norm_state(scratch)
    _fit_one_step(scratch, seed=4)
    learned = _batch_norm_state(scratch)
    assert any(not np.array_equal(b[0], a[0]) for b, a in zip(before, learned))  # statistics moved
    path = tmp_path / "scratch.keras"
    scratch.save(path)

    # Starting from those weights, the backbone runs in inference mode although it is trainable.
    model = build(num_classes=5, backbone="mobilenet_v2", dense_units=16, weights=str(path))
    backbone = model.get_layer("backbone")
    assert backbone.trainable and backbone.inference_mode
    copied = _batch_norm_state(model)
    for source, target in zip(learned, copied):  # non-trainable statistics were transferred too
        for a, b in zip(source, target):
            np.testing.assert_array_equal(a, b)
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="sparse_categorical_crossentropy", run_eagerly=True)
    model.fit(pixels((8, 32, 32, 3), seed=9), np.arange(8) % 5, batch_size=8, epochs=1, verbose=0)
    after = _batch_norm_state(model)
    for (mean0, variance0, _, _), (mean1, variance1, _, _) in zip(copied, after):
        np.testing.assert_array_equal(mean0, mean1)
        np.testing.assert_array_equal(variance0, variance1)
    assert any(not np.array_equal(b[2], a[2]) or not np.array_equal(b[3], a[3]) for b, a in zip(copied, after))


@pytest.mark.slow  # 3-8 s on a 2-core AVX2 VM: make test must stay under 4 min there
def test_files_that_do_not_fit_raise_weights_error(earlier_run, tmp_path):
    with pytest.raises(WeightsError, match="does not fit this model's backbone") as error:
        build(backbone="vgg19", weights=str(earlier_run["keras"]))
    assert str(earlier_run["keras"]) in str(error.value)
    with pytest.raises(WeightsError, match="do not fit this model") as error:
        build(backbone="vgg19", weights=str(earlier_run["weights"]))
    assert str(earlier_run["weights"]) in str(error.value)
    plain = models.build_model("tiny", input_shape=(32, 32, 3), num_classes=3)
    plain_path = tmp_path / "tiny.keras"
    plain.save(plain_path)
    with pytest.raises(WeightsError, match="no layer named 'backbone'") as error:
        build(backbone="vgg16", weights=str(plain_path))
    assert str(plain_path) in str(error.value)
    with pytest.raises(WeightsError) as error:
        build(backbone="vgg16", weights=str(tmp_path / "missing.keras"))
    assert str(error.value) == (
        f"Weights file not found: {tmp_path / 'missing.keras'}. Received: weights={str(tmp_path / 'missing.keras')!r}"
    )
    with pytest.raises(
        ValueError,
        match="should be None, 'imagenet', the path of a .keras or .weights.h5 file.*Received: weights='imagenet21k'",
    ):
        build(backbone="vgg16", weights="imagenet21k")


def test_relative_weights_paths_are_taken_from_the_working_directory(earlier_run, tmp_path, monkeypatch):
    """Models do not know the project: a config-relative path is resolved by the layer above."""
    monkeypatch.chdir(earlier_run["keras"].parent)
    model = build(num_classes=5, backbone="vgg16", dense_units=16, weights=earlier_run["keras"].name)
    np.testing.assert_array_equal(_backbone_outputs(model), _backbone_outputs(earlier_run["model"]))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(WeightsError, match="Weights file not found: best.keras"):
        build(num_classes=5, backbone="vgg16", dense_units=16, weights="best.keras")


# --------------------------------------------------------------------------------------------------
# ImageNet weights offline
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backbone", ["vgg16", "mobilenet_v2", "efficientnet_b0"])
def test_imagenet_offline_names_the_file_to_place_by_hand(backbone, monkeypatch):
    from keras.src.utils import file_utils  # what keras.applications calls to download

    requested = []

    def failed_download(fname=None, origin=None, *args, **kwargs):
        requested.append(fname)
        raise Exception(f"URL fetch failure on {origin}: None -- [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(file_utils, "get_file", failed_download)
    with pytest.raises(WeightsError) as error:
        build(backbone=backbone, weights="imagenet")
    assert requested, "keras.applications did not ask for a file"
    message = str(error.value)
    assert f"~/.keras/models/{requested[0]}" in message
    assert requested[0] == applications.weights_file_name(backbone, (32, 32))
    assert "URL fetch failure" in message
    assert message.endswith("Or start from random weights with weights=None. Received: weights='imagenet'")


# --------------------------------------------------------------------------------------------------
# ImageNet-format weights files, made here (keras.applications' legacy HDF5 layout)
# --------------------------------------------------------------------------------------------------


def write_applications_file(path, backbone="mobilenet_v2", shape=(32, 32, 3), seed=7):
    """A no-top weights file as keras.applications ships them: HDF5 by layer, random values."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    keras.utils.set_random_seed(seed)
    base = getattr(keras.applications, BACKBONES[backbone].constructor)(
        include_top=False, weights=None, input_shape=shape
    )
    with h5py.File(path, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, base)
    return [w.numpy() for w in base.weights]


def backbone_arrays(model):
    return [w.numpy() for w in compat.find_layer(model, "backbone").weights]


def assert_same_arrays(actual, expected):
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected):
        np.testing.assert_array_equal(got, want)


@pytest.mark.slow  # 4 s on a 2-core AVX2 VM: make test must stay under 4 min there
def test_applications_h5_file_by_path_loads_into_the_backbone(tmp_path):
    path = tmp_path / applications.weights_file_name("mobilenet_v2", (32, 32))
    expected = write_applications_file(path)
    model = build(backbone="mobilenet_v2", weights=str(path), dense_units=0)
    assert_same_arrays(backbone_arrays(model), expected)
    assert compat.find_layer(model, "backbone").inference_mode  # trained weights: inference mode
    with pytest.raises(WeightsError, match="not a vgg16 no-top weights file"):
        build(backbone="vgg16", weights=str(path))


@pytest.mark.slow  # 4 s on a 2-core AVX2 VM: make test must stay under 4 min there
def test_imagenet_uses_the_file_keras_finds_in_its_cache(tmp_path, monkeypatch):
    from keras.src.utils import file_utils

    path = tmp_path / applications.weights_file_name("mobilenet_v2", (32, 32))
    expected = write_applications_file(path)
    asked = []

    def cached(fname=None, origin=None, *args, **kwargs):  # what get_file returns on a cache hit
        asked.append(fname)
        return str(path)

    monkeypatch.setattr(file_utils, "get_file", cached)
    model = build(backbone="mobilenet_v2", weights="imagenet", dense_units=0)
    assert asked == [path.name]
    assert_same_arrays(backbone_arrays(model), expected)


@pytest.mark.slow  # 3-4 s on a 2-core AVX2 VM: make test must stay under 4 min there
def test_bn_momentum_replaces_the_backbones_batchnorm_momentum():
    model = build(backbone="mobilenet_v2", bn_momentum=0.9, dense_units=0)
    norms = [
        layer
        for layer in compat.find_layer(model, "backbone").layers
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert norms and all(layer.momentum == 0.9 for layer in norms)
    default = build(backbone="mobilenet_v2", dense_units=0)
    assert {
        layer.momentum
        for layer in compat.find_layer(default, "backbone").layers
        if isinstance(layer, keras.layers.BatchNormalization)
    } == {0.999}  # keras.applications' own
    with pytest.raises(ValueError, match="bn_momentum"):
        build(backbone="mobilenet_v2", bn_momentum=1.5)
