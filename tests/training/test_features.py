"""Frozen-backbone feature caching (`train.phases[i].cache_features`)."""

from __future__ import annotations

import csv

import keras
import numpy as np
import pytest
from helpers import LEAN_RUN, build_network

from pipeline import cli, compat
from pipeline import experiment as experiment_lib
from pipeline import run as train
from pipeline.data import splits as splits_lib
from pipeline.training import callbacks as run_callbacks
from pipeline.training import feature_cache as features
from pipeline.training import model_setup as modeling
from pipeline.training import phases

CACHED = (
    "train.phases=[{epochs: 2, trainable: none, cache_features: true, optimizer: {name: adam, "
    "learning_rate: 0.01}}, {epochs: 1, trainable: all, optimizer: {name: sgd, learning_rate: 0.005}}]"
)


def cached_config(data_env, *extra, phases_override=CACHED, epochs=3):
    return experiment_lib.load_experiment(
        "tiny", [*data_env, "model.name=tiny_transfer", f"train.epochs={epochs}", phases_override, *LEAN_RUN, *extra]
    )


def images(count=6, size=16, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (count, size, size, 3)).astype(np.float32)


@pytest.mark.parametrize(
    "name,options,size",
    [
        ("tiny_transfer", "{}", 16),  # behind train.py's normalisation layer
        ("applications", "{backbone: mobilenet_v2, weights: null, dense_units: 8}", 32),  # preprocessing inside
    ],
)
def test_head_of_features_equals_the_model(name, options, size):
    config = experiment_lib.load_experiment("tiny", [f"model.name={name}", f"model.options={options}"])
    model = build_network(config, input_shape=(size, size, 3), num_classes=3)
    phases.set_trainable(model, "none")
    split = features.FeatureSplit(model)
    batch = images(size=size)
    expected = model(batch, training=False)
    np.testing.assert_allclose(split.head(split.extract(batch), training=False), expected, rtol=1e-4, atol=1e-5)
    # The head is made of the model's own layers: training it trains the model.
    head_weights = {id(w) for w in split.head.trainable_weights}
    assert head_weights and head_weights <= {id(w) for w in model.weights}


def test_feature_split_refuses_a_trainable_backbone():
    config = experiment_lib.load_experiment("tiny", ["model.name=tiny_transfer"])
    model = build_network(config, input_shape=(16, 16, 3), num_classes=3)
    phases.set_trainable(model, "from conv2")
    with pytest.raises(phases.PhaseError, match="trainable: none"):
        features.FeatureSplit(model)
    plain = build_network(experiment_lib.load_experiment("tiny", []), input_shape=(16, 16, 3), num_classes=3)
    with pytest.raises(phases.PhaseError, match="backbone"):
        features.FeatureSplit(plain)


@pytest.mark.slow  # 3-8 s on a 2-core AVX2 VM: make test must stay under 4 min there
def test_cached_phase_trains_the_head_and_saves_the_full_model(data_env, tmp_path, monkeypatch, interrupt_training):
    config = cached_config(data_env, "input.augment={horizontal_flip: true}")
    fitted = []
    original_fit = keras.Model.fit

    def recording_fit(self, *args, **kwargs):
        fitted.append((self.name, backbone_snapshot(model_holder[0])))
        return original_fit(self, *args, **kwargs)

    model_holder = []
    original_build = modeling.build_model

    def keep_model(*args, **kwargs):
        model_holder.append(original_build(*args, **kwargs))
        return model_holder[0]

    monkeypatch.setattr(keras.Model, "fit", recording_fit)
    monkeypatch.setattr(modeling, "build_model", keep_model)
    interrupt_training(2)
    messages = []
    with pytest.raises(KeyboardInterrupt):
        train.train(config, run_dir=tmp_path / "run", log=messages.append)
    assert any("cached backbone features" in m for m in messages)
    assert any("un-augmented" in m for m in messages)
    # Phase 1 fitted the head model; the backbone did not move and the checkpoint is the full model.
    assert fitted[0][0].endswith("_head")
    assert fitted[1][0] == config.name
    np.testing.assert_equal(backbone_snapshot(model_holder[0]), fitted[0][1])
    last = keras.models.load_model(tmp_path / "run" / "checkpoints" / "last.keras")
    assert last.name == config.name and last.input_shape == model_holder[0].input_shape
    rows = list(csv.DictReader(open(tmp_path / "run" / "history.csv")))
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    # The validation accuracy logged from the features is the full model's accuracy on the images.
    splits = splits_lib.Splits.from_config(config, log=lambda *_: None)
    result = last.evaluate(splits.dataset("validation"), verbose=0, return_dict=True)
    assert result["accuracy"] == pytest.approx(float(rows[-1]["val_accuracy"]), abs=1e-6)

    interrupt_training(None)
    metrics = train.train(config, run_dir=tmp_path / "run", log=lambda *_: None)
    assert metrics["epochs_completed"] == 3 and 0 <= metrics["test"]["accuracy"] <= 1


def backbone_snapshot(model):
    return {w.path: w.numpy().copy() for w in compat.find_layer(model, "backbone").weights}


@pytest.mark.slow  # 7-30 s on a 2-core AVX2 VM: make test must stay under 4 min there
def test_resume_inside_a_cached_phase_restores_the_optimizer(data_env, tmp_path, monkeypatch, interrupt_training):
    one_phase = (
        "train.phases=[{epochs: 3, trainable: none, cache_features: true, "
        "optimizer: {name: adam, learning_rate: 0.01}}]"
    )
    config = cached_config(data_env, phases_override=one_phase)
    interrupt_training(2)
    with pytest.raises(KeyboardInterrupt):
        train.train(config, run_dir=tmp_path / "run", log=lambda *_: None)
    assert run_callbacks.read_backup_metadata(tmp_path / "run" / "backup")["epoch"] == 2
    interrupt_training(None)
    metrics = train.train(config, run_dir=tmp_path / "run", log=lambda *_: None)
    assert metrics["epochs_completed"] == 3
    last = keras.models.load_model(tmp_path / "run" / "checkpoints" / "last.keras")
    steps = int(np.ceil(metrics["train_images"] / config.train.batch_size))
    assert int(last.optimizer.iterations.numpy()) == 3 * steps  # Adam's state carried across the kill
    rows = list(csv.DictReader(open(tmp_path / "run" / "history.csv")))
    assert sorted({int(r["epoch"]) for r in rows}) == [0, 1, 2]


def test_cache_features_needs_a_frozen_backbone(tmp_path, capsys):
    code = cli.main(
        [
            "train",
            "tiny",
            "--run-dir",
            str(tmp_path / "run"),
            "--set",
            "train.epochs=3",
            "--set",
            CACHED.replace("trainable: none", "trainable: all"),
        ]
    )
    assert code == 2
    assert "train.phases[0].cache_features" in capsys.readouterr().err and not (tmp_path / "run").exists()


@pytest.mark.slow  # 3-8 s on a 2-core AVX2 VM: make test must stay under 4 min there
def test_a_model_caching_cannot_cut_stops_before_the_run_dir(data_env, tmp_path, monkeypatch, capsys):
    def refuse(model):
        raise phases.PhaseError("cache_features: layer 'backbone' is called 2 times in 'tiny'")

    monkeypatch.setattr(features, "FeatureSplit", refuse)
    code = cli.main(
        [
            "train",
            "tiny",
            "--run-dir",
            str(tmp_path / "run"),
            "--set",
            data_env[0],
            "--set",
            "train.epochs=3",
            "--set",
            CACHED,
            "--set",
            "model.name=tiny_transfer",
        ]
    )
    assert code == 2
    assert "called 2 times" in capsys.readouterr().err and not (tmp_path / "run").exists()
