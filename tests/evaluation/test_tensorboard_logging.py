"""TensorBoard summaries: a tiny fit writes them, the event files are read back, a resume adds no samples."""

from __future__ import annotations

import collections
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.compat.proto import graph_pb2
from tensorboard.plugins.hparams import metadata as hparams_metadata

from pipeline.evaluation import report as evaluation_report
from pipeline.evaluation import tensorboard_logging as tb_logging

CLASSES = ["cat", "dog", "a b/c"]  # a name TensorFlow refuses in a tag, on purpose


def read_events(run_dir: Path) -> dict:
    """{tag: [(step, plugin name, value proto)]} of every event file in one run directory, file order."""
    found = collections.defaultdict(list)
    for path in sorted(run_dir.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            if event.graph_def:
                found["__graph__"].append((event.step, "graph", event.graph_def))
            for value in event.summary.value:
                found[value.tag].append((event.step, value.metadata.plugin_data.plugin_name, value))
    return found


def steps(events, tag):
    return [step for step, _, _ in events.get(tag, [])]


def scalar(value) -> float:
    return float(tf.make_ndarray(value.tensor))


def tiny_model(num_classes=len(CLASSES)):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    hidden = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    hidden = keras.layers.GlobalAveragePooling2D(name="pool")(hidden)
    model = keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax", name="head")(hidden))
    model.compile("adam", "categorical_crossentropy", metrics=["accuracy"])
    return model


def dataset(count=32, num_classes=len(CLASSES), seed=0):
    rng = np.random.default_rng(seed)
    images = rng.random((count, 8, 8, 3)).astype("float32")
    labels = np.arange(count) % num_classes
    return tf.data.Dataset.from_tensor_slices((images, tf.one_hot(labels, num_classes))).batch(8)


def fit(model, log_dir, *, initial_epoch=0, epochs=2, profile=None):
    callbacks = [
        keras.callbacks.TensorBoard(str(log_dir), write_graph=False),
        tb_logging.ProfileSteps(log_dir, steps=profile),
        tb_logging.InputSamples(
            log_dir, class_names=CLASSES, train_data=dataset(), eval_data=dataset(seed=1), max_images=6
        ),
        tb_logging.ValidationConfusion(log_dir, validation_data=dataset(seed=1), class_names=CLASSES),
    ]
    model.fit(
        dataset(),
        validation_data=dataset(seed=1),
        initial_epoch=initial_epoch,
        epochs=epochs,
        callbacks=callbacks,
        verbose=0,
    )


def test_fit_writes_samples_once_confusion_every_epoch_and_a_profile(tmp_path):
    log_dir = tmp_path / "tensorboard"
    model = tiny_model()
    fit(model, log_dir, profile=[2, 3])
    train, validation = read_events(log_dir / "train"), read_events(log_dir / "validation")
    assert steps(train, "input_samples/train_augmented") == [0]
    assert steps(validation, "input_samples/evaluation") == [0]
    assert steps(validation, "confusion_matrix") == [0, 1]
    assert {plugin for _, plugin, _ in validation["confusion_matrix"]} == {"images"}
    assert steps(train, "epoch_loss") == [0, 1]  # Keras' own scalars are still there
    for kind in ("precision", "recall"):
        for tag in ("0_cat", "1_dog", "2_a_b_c"):
            assert steps(validation, f"per_class_{kind}/{tag}") == [0, 1]
            assert all(0.0 <= scalar(value) <= 1.0 for _, _, value in validation[f"per_class_{kind}/{tag}"])
    traces = tb_logging.profile_traces(log_dir)
    assert len(traces) == 1 and traces[0].stat().st_size > 0 and traces[0].parent.parent.name == "profile"
    assert "__graph__" not in train and not [tag for tag in train if tag.startswith("batch_")]  # no empty graph

    # Resumed: epoch 1 runs again; no second set of input samples, one more confusion matrix.
    fit(model, log_dir, initial_epoch=1)
    train, validation = read_events(log_dir / "train"), read_events(log_dir / "validation")
    assert steps(train, "input_samples/train_augmented") == [0]
    assert steps(validation, "input_samples/evaluation") == [0]
    assert steps(validation, "confusion_matrix") == [0, 1, 1]


def test_no_per_class_scalars_past_twenty_classes(tmp_path):
    names = [f"class {i}" for i in range(21)]
    model = tiny_model(num_classes=21)
    callback = tb_logging.ValidationConfusion(tmp_path, validation_data=dataset(42, num_classes=21), class_names=names)
    callback.set_model(model)
    matrix = callback.log_epoch(0)
    callback.on_train_end()
    assert matrix.shape == (21, 21) and matrix.sum() == 42
    events = read_events(tmp_path / "validation")
    assert set(events) == {"confusion_matrix"}


def test_hparams_config_and_evaluation_summary(tmp_path):
    hparams = {
        "train.optimizer.learning_rate": 0.001,
        "model.name": "tiny",
        "input.image_size": [16, 16],
        "train.epochs": np.int64(2),
        "dataset.root": None,
    }
    tb_logging.write_hparams(tmp_path, hparams, trial_id="run-1")
    tb_logging.write_config_text(tmp_path, "train:\n  epochs: 2\n")
    root = read_events(tmp_path)
    # No experiment config: TensorBoard infers it, so the hparams that differ between runs are shown first.
    assert hparams_metadata.EXPERIMENT_TAG not in root
    session = hparams_metadata.parse_session_start_info_plugin_data(
        root[hparams_metadata.SESSION_START_INFO_TAG][0][2].metadata.plugin_data.content
    )
    assert session.group_name == "run-1"
    assert session.hparams["train.optimizer.learning_rate"].number_value == 0.001
    assert session.hparams["model.name"].string_value == "tiny"
    assert session.hparams["input.image_size"].string_value == "[16, 16]"
    assert session.hparams["train.epochs"].number_value == 2
    config_text = tf.make_ndarray(root["config"][0][2].tensor).item().decode()
    assert "    train:" in config_text and "      epochs: 2" in config_text

    labels = np.array([0, 1, 2, 0])
    probabilities = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.3, 0.6, 0.1]])
    report = evaluation_report.build_report(labels=labels, probabilities=probabilities, class_names=CLASSES, top_k=2)
    tb_logging.write_evaluation_summary(tmp_path, report, step=4, loss=0.5)
    test = read_events(tmp_path / "test")
    assert scalar(test["epoch_accuracy"][0][2]) == pytest.approx(0.75) and steps(test, "epoch_accuracy") == [4]
    assert scalar(test["epoch_loss"][0][2]) == pytest.approx(0.5)
    assert scalar(test["evaluation/top_k_accuracy"][0][2]) == pytest.approx(1.0)
    assert {
        "evaluation/balanced_accuracy",
        "evaluation/expected_calibration_error",
        "evaluation/macro_f1",
        "confusion_matrix",
        "evaluation",
    } <= set(test)
    table = tf.make_ndarray(test["evaluation"][0][2].tensor).item().decode()
    assert "| test accuracy | 0.7500 (3 / 4) |" in table and "| a b/c |" in table


def test_op_graph_of_the_forward_pass(tmp_path):
    tb_logging.write_op_graph(tmp_path, tiny_model())
    graphs = read_events(tmp_path / "train")["__graph__"]
    assert len(graphs) == 1
    graph = graph_pb2.GraphDef.FromString(graphs[0][2])
    ops = {node.op for node in graph.node}
    assert {"Placeholder", "Conv2D", "MatMul", "Softmax"} <= ops  # the layers' ops, inlined
    assert any("/conv" in node.name for node in graph.node)


@pytest.mark.parametrize("steps_value, expected", [(None, 0), ([], 0), ([3, 5], (3, 5)), ((2, 2), (2, 2))])
def test_profile_batch_range(steps_value, expected):
    assert tb_logging.profile_batch_range(steps_value) == expected


@pytest.mark.parametrize("steps_value", [[0, 2], [5, 3], [1], "1,2", [1.0, 2], [True, 2]])
def test_profile_batch_range_refuses(steps_value):
    with pytest.raises(ValueError, match=r"\[start, stop\].*Received"):
        tb_logging.profile_batch_range(steps_value)


def test_tag_names_sort_by_label_and_are_valid():
    assert tb_logging.tag_name(3, "a b/c", 12) == "03_a_b_c"
    assert tb_logging.tag_name(0, "cat", 3) == "0_cat"


def test_confusion_every_freq_epochs_and_the_last(tmp_path):
    callback = tb_logging.ValidationConfusion(tmp_path, validation_data=None, class_names=CLASSES, freq=3)
    logged = []
    callback.log_epoch = logged.append
    callback.set_params({"epochs": 5})
    for epoch in range(5):
        callback.on_epoch_end(epoch)
    assert logged == [0, 3, 4]
    with pytest.raises(ValueError, match="freq=0"):
        tb_logging.ValidationConfusion(tmp_path, validation_data=None, class_names=CLASSES, freq=0)
