"""`python -m pipeline summary` (pipeline/inspection/summary.py) and the figures it prints: layer table, parameters and FLOPs
(pipeline/inspection/model_stats.py), per-phase counts, bad-size arithmetic (pipeline/inspection/layer_sizes.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import keras
import pytest

import models
from pipeline import cli
from pipeline.inspection import layer_sizes, model_stats, summary


def _rows_by_path(rows):
    return {row["path"]: row for row in rows}


def test_lenet_table():
    model = models.build_model("lenet", input_shape=(28, 28, 1), num_classes=10)
    rows = model_stats.summarize(model)
    by_path = _rows_by_path(rows)
    assert [row["name"] for row in rows] == [
        "image",
        "conv1",
        "pool1",
        "conv2",
        "pool2",
        "flatten",
        "fc1",
        "logits",
        "probabilities",
    ]
    assert by_path["conv1"]["output_shape"] == (None, 28, 28, 20)
    assert by_path["pool2"]["output_shape"] == (None, 7, 7, 50)
    assert by_path["flatten"]["output_shape"] == (None, 2450)
    assert by_path["conv1"]["flops"] == 2 * 28 * 28 * 20 * 25 == 784_000  # 5x5x1 kernel, 20 filters
    assert by_path["conv2"]["flops"] == 2 * 14 * 14 * 50 * (5 * 5 * 20)
    assert by_path["fc1"]["flops"] == 2 * 2450 * 500
    assert by_path["pool1"]["flops"] == 0
    assert by_path["fc1"]["params"] == 2450 * 500 + 500
    totals = model_stats.totals(model, rows)
    assert totals["params"] == totals["trainable_params"] == 1_256_080
    assert totals["non_trainable_params"] == 0
    assert totals["flops"] == sum(row["flops"] for row in rows)
    table = summary.format_table(rows, totals)
    assert "1,256,080" in table and "784,000" in table and "(None, 28, 28, 20)" in table


def test_vgg16_finetune_expands_the_backbone():
    model = models.build_model("vgg16_finetune", input_shape=(32, 32, 3), num_classes=10)
    rows = model_stats.summarize(model)
    by_path = _rows_by_path(rows)
    backbone = by_path["backbone"]
    assert backbone["nested"] and backbone["params"] == 14_714_688
    assert by_path["backbone/block1_conv1"]["depth"] == 1
    assert by_path["backbone/block1_conv1"]["flops"] == 2 * 32 * 32 * 64 * (3 * 3 * 3)
    assert by_path["backbone/block5_pool"]["output_shape"] == (None, 1, 1, 512)
    assert backbone["flops"] == sum(row["flops"] for path, row in by_path.items() if path.startswith("backbone/"))
    assert not any(row["type"] == "InputLayer" for row in rows if row["depth"])  # inner inputs left out
    assert [row["type"] for row in rows if row["path"].startswith("preprocess/")] == ["Flip", "Normalization"]
    totals = model_stats.totals(model, rows)
    assert totals["params"] == 14_714_688 + 512 * 256 + 256 + 256 * 10 + 10
    assert 0.6e9 < totals["flops"] < 0.7e9  # VGG16 at 32x32: ~0.63 GFLOPs


def test_cli_prints_the_table(capsys):
    assert cli.main(["summary", "mnist_lenet"]) == 0
    out = capsys.readouterr().out
    assert "input 28x28x1, 10 classes" in out
    assert "Total params:         1,256,080" in out
    assert "784,000" in out and "GFLOPs" in out


def test_native_size_when_the_config_has_none(capsys):
    assert cli.main(["summary", "mnist_lenet", "--set", "input.image_size=null", "--set", "input.channels=null"]) == 0
    assert "input 28x28x1" in capsys.readouterr().out
    assert cli.main(["summary", "mnist_lenet", "--set", "dataset.name=folder", "--set", "input.image_size=null"]) == 2
    assert "input.image_size" in capsys.readouterr().err


def test_bad_input_size_names_the_first_failing_layer(capsys):
    code = cli.main(["summary", "tiny", "--set", "model.name=vgg16_finetune", "--set", "input.image_size=[16,16]"])
    assert code == 2
    err = capsys.readouterr().err
    assert (
        "block5_pool (MaxPooling2D): (N + 2P - F) / S + 1 = (1 + 2*0 - 2) / 2 + 1 = 0.5 -> not a whole positive number"
    ) in err
    assert "block4_pool 1x1" in err  # the sizes that led there
    assert "`upscale_to=[32, 32]` to upscale inside the model" in err  # and the builder's fix


def test_conv_arithmetic_on_layer_configs():
    def conv(name, kernel, strides=1, padding="valid"):
        return {
            "class_name": "Conv2D",
            "config": {
                "name": name,
                "kernel_size": [kernel, kernel],
                "strides": [strides, strides],
                "padding": padding,
            },
        }

    chain = [conv("c1", 3), conv("c2", 3, strides=2), conv("c3", 3, padding="same")]
    assert layer_sizes.conv_arithmetic(chain, (7, 7)) is None  # 7 -> 5 -> 2 -> 2
    failure = layer_sizes.conv_arithmetic(chain, (4, 4))  # 4 -> 2 -> (2 - 3) / 2 + 1 = 0.5
    assert failure["layer"] == "c2"
    assert failure["message"] == (
        "c2 (Conv2D): (N + 2P - F) / S + 1 = (2 + 2*0 - 3) / 2 + 1 = 0.5 -> not a whole positive number"
    )
    assert layer_sizes.conv_arithmetic(chain, (9, 4))["axis"] == "width"
    padded = [{"class_name": "ZeroPadding2D", "config": {"name": "pad", "padding": [[1, 1], [1, 1]]}}, *chain]
    assert layer_sizes.conv_arithmetic(padded, (4, 4)) is None  # 6 -> 4 -> floor(1.5) = 1 -> 1
    assert layer_sizes.conv_arithmetic(padded, (2, 2))["layer"] == "c2"  # 4 -> 2 -> 0.5
    assert layer_sizes.conv_arithmetic(chain[:1], (2, 2))["message"].endswith("= 0 -> not a whole positive number")


def test_conv_arithmetic_follows_the_graph():
    """Two parallel stride-2 branches merged: a walk in list order would halve the size twice."""
    inputs = keras.Input(shape=(8, 8, 3))
    left = keras.layers.Conv2D(4, 3, strides=2, padding="same", name="left")(inputs)
    right = keras.layers.MaxPooling2D(2, name="right")(inputs)
    right = keras.layers.Conv2D(4, 1, name="project")(right)
    merged = keras.layers.Add(name="add")([left, right])
    last = keras.layers.Conv2D(4, 4, name="last")(merged)
    model = keras.Model(inputs, last)
    assert layer_sizes.conv_arithmetic(model.get_config(), (8, 8)) is None  # 8 -> 4 -> (4 - 4) / 1 + 1 = 1
    failure = layer_sizes.conv_arithmetic(model.get_config(), (6, 6))  # 6 -> 3 -> (3 - 4) / 1 + 1 = 0
    assert failure["layer"] == "last"
    assert "(3 + 2*0 - 4) / 1 + 1 = 0 ->" in failure["message"]


def test_phase_parameter_counts():
    from pipeline.training.phases import PhaseError

    model = models.build_model("vgg16_finetune", input_shape=(32, 32, 3), num_classes=10)
    total = model.count_params()
    head = (512 * 256 + 256) + (256 * 10 + 10)
    block5 = 3 * (3 * 3 * 512 * 512 + 512)
    phases = [
        {"epochs": 2, "trainable": "none"},
        {"epochs": 3, "trainable": "from block5_conv1"},
        {"epochs": 1, "trainable": "all"},
    ]
    counts = summary.phase_parameter_counts(model, phases)
    assert [(c["trainable_params"], c["frozen_params"]) for c in counts] == [
        (head, total - head),
        (head + block5, total - head - block5),
        (total, 0),
    ]
    assert len(model.trainable_weights) == len(model.weights)  # flags restored
    assert all(layer.trainable for layer in model.get_layer("backbone").layers)
    with pytest.raises(PhaseError, match="did you mean 'block5_conv1'"):
        summary.phase_parameter_counts(model, [{"trainable": "from blok5_conv1"}])
    assert len(model.trainable_weights) == len(model.weights)  # restored after an error too


def test_phases_from_the_config_are_printed(capsys):
    phases = "train.phases=[{epochs: 1, trainable: none}, {epochs: 2, trainable: from block5_conv1}]"
    code = cli.main(
        [
            "summary",
            "tiny",
            "--set",
            "model.name=vgg16_finetune",
            "--set",
            "input.image_size=[32,32]",
            "--set",
            "train.epochs=3",
            "--set",
            phases,
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    head = (512 * 256 + 256) + (256 * 10 + 10)
    block5 = 3 * (3 * 3 * 512 * 512 + 512)
    total = 14_714_688 + head
    assert f"phase 1: 1 epoch, trainable none: {head:,} trainable, {total - head:,} frozen parameters" in out
    assert f"phase 2: 2 epochs, trainable from block5_conv1: {head + block5:,} trainable" in out
    code = cli.main(
        ["summary", "mnist_lenet", "--set", "train.epochs=1", "--set", "train.phases=[{epochs: 1, trainable: none}]"]
    )
    assert code == 2
    assert "backbone" in capsys.readouterr().err


def test_options_the_builder_refuses_are_reported_as_model_options(capsys):
    code = cli.main(
        [
            "summary",
            "tiny",
            "--set",
            "model.name=applications",
            "--set",
            "model.options.pooling=mean",
            "--set",
            "input.image_size=[32,32]",
        ]
    )
    assert code == 2
    assert capsys.readouterr().err.strip() == (
        "error: model.options: The `pooling` argument should be one of 'avg', "
        "'max', 'flatten'. Received: pooling='mean'"
    )


def test_a_config_error_is_reported_before_tensorflow_is_imported():
    script = (
        "import sys; from pipeline import cli; "
        "code = cli.main(['summary', 'tiny', '--set', 'train.epoch=3']); "
        "print(code, 'tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.stdout.split() == ["2", "False", "False"], done.stderr
    assert "did you mean 'train.epochs'" in done.stderr
