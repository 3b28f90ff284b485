"""Fine-tuning phases: what each phase trains, resume inside phase 2, and config errors."""

from __future__ import annotations

import csv
import json

import keras
import numpy as np
import pytest
from helpers import LEAN_RUN, build_network

from pipeline import cli, compat
from pipeline import experiment as experiment_lib
from pipeline import run as train
from pipeline.training import callbacks as run_callbacks
from pipeline.training import model_setup as modeling
from pipeline.training import phases

PHASES = (
    "train.phases=[{epochs: 2, trainable: none, optimizer: {name: rmsprop, learning_rate: 0.01}},"
    " {epochs: 2, trainable: from conv2, optimizer: {name: sgd, learning_rate: 0.005, momentum: 0.9}}]"
)


def two_phase_config(data_env, *extra):
    return experiment_lib.load_experiment(
        "tiny", [*data_env, "model.name=tiny_transfer", "train.epochs=4", PHASES, *LEAN_RUN, *extra]
    )


def backbone_weights(model):
    backbone = compat.find_layer(model, "backbone")
    return {w.path: w.numpy().copy() for w in backbone.weights}


def test_plan_and_set_trainable():
    model = keras.Sequential([keras.Input((8, 8, 3))])
    with pytest.raises(phases.PhaseError, match="backbone"):
        phases.set_trainable(model, "none")
    import models

    model = models.build_model("tiny_transfer", input_shape=(16, 16, 3), num_classes=3)
    phases.set_trainable(model, "none")
    assert all(not w.trainable for w in compat.find_layer(model, "backbone").weights)
    assert {w.path.split("/")[0] for w in model.trainable_weights} == {"logits"}
    phases.set_trainable(model, "from conv2")
    trainable = {w.path for w in model.trainable_weights}
    assert any("conv2" in p for p in trainable) and not any("conv1" in p or "bn1" in p for p in trainable)
    with pytest.raises(phases.PhaseError, match="did you mean 'conv2'"):
        phases.set_trainable(model, "from conv_2")
    phases.set_trainable(model, "all")
    assert len(model.trainable_weights) == len([w for w in model.weights if w.trainable])


@pytest.mark.slow  # 5-12 s on a 2-core AVX2 VM: make test must stay under 4 min there
def test_phase_one_moves_only_the_head_and_phase_two_only_the_unfrozen_layers(data_env, tmp_path, monkeypatch):
    config = two_phase_config(data_env)
    snapshots = {}
    original_fit = keras.Model.fit

    def head(model):
        return compat.find_layer(model, "logits").get_weights()[0].copy()

    def recording_fit(self, *args, **kwargs):
        snapshots.setdefault("before", []).append((backbone_weights(self), head(self)))
        history = original_fit(self, *args, **kwargs)
        snapshots.setdefault("after", []).append((backbone_weights(self), head(self)))
        return history

    monkeypatch.setattr(keras.Model, "fit", recording_fit)
    metrics = train.train(config, run_dir=tmp_path / "run", log=lambda *_: None)
    assert metrics["epochs_completed"] == 4
    (phase1_before, head1_before), (phase2_before, _) = snapshots["before"]
    (phase1_after, head1_after), (phase2_after, _) = snapshots["after"]
    for path, value in phase1_before.items():  # phase 1: the whole backbone is frozen
        np.testing.assert_array_equal(phase1_after[path], value, err_msg=path)
    assert not np.array_equal(head1_before, head1_after)  # ... and the new head trains
    changed = {p for p in phase2_before if not np.array_equal(phase2_before[p], phase2_after[p])}
    assert changed and all("conv2" in p for p in changed), changed  # phase 2: only conv2 (after it: no weights)
    # BatchNorm statistics never move: the backbone runs in inference mode even when trainable.
    assert not any("bn1" in p for p in changed)
    rows = list(csv.DictReader(open(tmp_path / "run" / "history.csv")))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    rates = [float(r["learning_rate"]) for r in rows]
    assert rates[:2] == pytest.approx([0.01, 0.01]) and rates[2:] == pytest.approx([0.005, 0.005])


# At the phase boundary, and (slow: the same code path one epoch later) inside phase 2.
@pytest.mark.parametrize("interrupt_at", [2, pytest.param(3, marks=pytest.mark.slow)])
def test_resume_in_phase_two_uses_phase_two_optimizer(
    data_env, tmp_path, monkeypatch, interrupt_at, interrupt_training
):
    config = two_phase_config(data_env)
    interrupt_training(interrupt_at)
    with pytest.raises(KeyboardInterrupt):
        train.train(config, run_dir=tmp_path / "run", log=lambda *_: None)
    metadata = run_callbacks.read_backup_metadata(tmp_path / "run" / "backup")
    assert metadata["epoch"] == interrupt_at and metadata["completed_phases"] == (1 if interrupt_at >= 2 else 0)
    interrupt_training(None)
    messages = []
    metrics = train.train(config, run_dir=tmp_path / "run", log=messages.append)
    assert metrics["epochs_completed"] == 4
    assert any("phase 2/2" in m for m in messages) and not any("phase 1/2" in m for m in messages)
    last = keras.models.load_model(tmp_path / "run" / "checkpoints" / "last.keras")
    assert isinstance(last.optimizer, keras.optimizers.SGD)
    steps = int(np.ceil(metrics["train_images"] / config.train.batch_size))
    assert int(last.optimizer.iterations.numpy()) == 2 * steps  # phase 2's own optimizer: 2 epochs of steps
    rows = list(csv.DictReader(open(tmp_path / "run" / "history.csv")))
    assert sorted({int(r["epoch"]) for r in rows}) == [0, 1, 2, 3]
    assert json.loads((tmp_path / "run" / "backup" / "training_metadata.json").read_text())["finished"]


def test_trainable_backbone_keeps_its_batchnorm_statistics(data_env, tmp_path):
    config = experiment_lib.load_experiment(
        "tiny", [*data_env, "model.name=tiny_transfer", "train.epochs=1", *LEAN_RUN]
    )
    model = build_network(config, input_shape=(16, 16, 3), num_classes=10)
    bn = compat.find_layer(model, "bn1")
    before = [w.numpy().copy() for w in bn.non_trainable_weights]
    gamma_before = bn.gamma.numpy().copy()
    modeling.compile_model(model, phases.plan(config.train)[0], steps_per_epoch=2)
    images = np.random.default_rng(0).uniform(0, 255, (16, 16, 16, 3)).astype(np.float32)
    model.fit(images, np.eye(10)[np.arange(16) % 10], batch_size=8, epochs=1, verbose=0)
    assert bn.trainable
    for old, new in zip(before, bn.non_trainable_weights):  # moving mean and variance
        np.testing.assert_array_equal(new.numpy(), old)
    assert not np.array_equal(bn.gamma.numpy(), gamma_before)  # still trained by the optimizer


def test_phase_errors_are_user_errors(data_env, tmp_path, capsys):
    bad_layer = PHASES.replace("from conv2", "from conv9")
    code = cli.main(
        [
            "train",
            "tiny",
            "--run-dir",
            str(tmp_path / "run"),
            "--set",
            data_env[0],
            "--set",
            "model.name=tiny_transfer",
            "--set",
            "train.epochs=4",
            "--set",
            bad_layer,
        ]
    )
    assert code == 2
    assert "conv9" in capsys.readouterr().err and not (tmp_path / "run").exists()
    code = cli.main(["train", "tiny", "--set", data_env[0], "--set", "train.epochs=5", "--set", PHASES])
    assert code == 2
    assert "sum of train.phases[*].epochs (4)" in capsys.readouterr().err
    code = cli.main(["train", "tiny", "--set", "train.epochs=4", "--set", PHASES.replace("none", "some")])
    assert code == 2
    assert "train.phases[0].trainable" in capsys.readouterr().err
    code = cli.main(
        [
            "train",
            "tiny",
            "--set",
            "train.epochs=4",
            "--set",
            PHASES.replace("momentum: 0.9", "momentum: 0.9, nesterov: true").replace("sgd", "adam"),
        ]
    )
    assert code == 2
    assert "train.phases[1].optimizer" in capsys.readouterr().err
