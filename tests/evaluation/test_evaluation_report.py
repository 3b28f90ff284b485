"""Evaluation report: metrics against hand-computed values, the files it writes, the training curves."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from pipeline.evaluation import figures
from pipeline.evaluation import report as evaluation_report

CLASSES = ["cat", "dog", "bird"]
# 6 examples, 3 classes. argmax: 0, 1, 2, 1, 0 (tie 0/1: first wins, like Keras), 2.
LABELS = np.array([0, 1, 2, 0, 1, 2])
PROBABILITIES = np.array(
    [
        [0.7, 0.2, 0.1],
        [0.1, 0.8, 0.1],
        [0.2, 0.2, 0.6],
        [0.3, 0.6, 0.1],  # wrong: cat -> dog
        [0.45, 0.45, 0.1],  # wrong by the tie: dog -> cat
        [0.1, 0.3, 0.6],
    ],
    dtype=np.float32,
)


def report(**overrides):
    options = dict(labels=LABELS, probabilities=PROBABILITIES, class_names=CLASSES, top_k=2)
    options.update(overrides)
    return evaluation_report.build_report(**options)


def test_metrics_match_hand_computed_values():
    result = report()
    assert result["num_examples"] == 6 and result["num_classes"] == 3
    assert result["accuracy"] == 4 / 6 and result["num_correct"] == 4
    assert result["confusion_matrix"] == [[1, 1, 0], [1, 1, 0], [0, 0, 2]]  # rows = true label
    assert [row["class"] for row in result["per_class"]] == CLASSES
    cat, dog, bird = result["per_class"]
    assert (cat["precision"], cat["recall"], cat["support"]) == (0.5, 0.5, 2)
    assert (bird["precision"], bird["recall"], bird["f1"]) == (1.0, 1.0, 1.0)
    assert result["macro_avg"]["recall"] == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert result["balanced_accuracy"] == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert result["top_k"] == 2 and result["top_k_accuracy"] == 1.0  # every label is in its top 2
    json.dumps(result)  # JSON-able as is


def test_top_k_is_capped_at_the_class_count_and_binary_works():
    assert report(top_k=5)["top_k"] == 3
    labels = np.array([0, 1, 1, 0])
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    binary = evaluation_report.build_report(
        labels=labels, probabilities=probabilities, class_names=["ants", "bees"], top_k=5
    )
    assert binary["top_k"] == 2 and binary["top_k_accuracy"] == 1.0
    assert binary["accuracy"] == 0.5 and binary["confusion_matrix"] == [[1, 1], [1, 1]]


def test_expected_calibration_error_follows_guo_et_al():
    # All confidences 0.9 (one bin), half of them right: ECE = |0.5 - 0.9| = 0.4.
    labels = np.array([0, 0, 1, 1])
    probabilities = np.array([[0.9, 0.1], [0.1, 0.9], [0.1, 0.9], [0.9, 0.1]])
    result = evaluation_report.build_report(labels=labels, probabilities=probabilities, class_names=["a", "b"])
    assert result["expected_calibration_error"] == pytest.approx(0.4)
    calibration = result["calibration"]
    assert calibration["bins"] == 15 and "Guo et al. 2017" in calibration["source"]
    filled = [b for b in calibration["per_bin"] if b["count"]]
    assert len(filled) == 1 and filled[0]["count"] == 4 and filled[0]["lower"] < 0.9 <= filled[0]["upper"]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(labels=LABELS[:5]), "shape [N, C]"),
        (dict(class_names=["cat", "dog"]), "one name per column"),
        (dict(labels=LABELS + 1), "must lie in [0, 2]"),
        (dict(probabilities=PROBABILITIES * 3), "sum to 1"),
        (dict(top_k=0), "top_k"),
    ],
)
def test_bad_arguments_are_refused_with_what_was_received(overrides, message):
    with pytest.raises(ValueError, match="Received") as raised:
        report(**overrides)
    assert message in str(raised.value)


def _png_size(path):
    with Image.open(path) as image:
        image.load()
        return image.size


def test_write_report_writes_every_file(tmp_path):
    result = report()
    images = np.random.default_rng(0).integers(0, 256, (6, 12, 12, 3), dtype=np.uint8)
    paths = evaluation_report.write_report(
        result, tmp_path / "evaluation", labels=LABELS, probabilities=PROBABILITIES, class_names=CLASSES, images=images
    )
    assert sorted(paths) == ["calibration", "confusion_matrix", "mistakes", "per_class", "report"]
    assert json.loads(paths["report"].read_text()) == result
    rows = list(csv.DictReader(paths["per_class"].read_text().splitlines()))
    assert [row["class"] for row in rows] == CLASSES and rows[2]["support"] == "2"
    for name in ("confusion_matrix", "mistakes", "calibration"):
        width, height = _png_size(paths[name])
        assert 300 <= width <= 2500 and 200 <= height <= 2500, (name, width, height)
    assert not list((tmp_path / "evaluation").glob(".tmp-*"))  # atomic writes leave nothing behind


def test_mistakes_without_images_or_mistakes(tmp_path):
    perfect = np.eye(3)[LABELS]
    result = evaluation_report.build_report(labels=LABELS, probabilities=perfect, class_names=CLASSES)
    paths = evaluation_report.write_report(result, tmp_path, labels=LABELS, probabilities=perfect, class_names=CLASSES)
    assert "mistakes" not in paths and not (tmp_path / "mistakes.png").exists()
    figure = evaluation_report.mistakes_figure(
        labels=LABELS, probabilities=perfect, class_names=CLASSES, images=np.zeros((6, 8, 8, 1), np.float32)
    )
    assert any("No mistakes: all 6 test images" in text.get_text() for text in figure.texts)


def test_confusion_matrix_figure_stays_bounded_for_many_classes():
    rng = np.random.default_rng(0)
    matrix = rng.integers(0, 5, (100, 100))
    figure = figures.confusion_matrix_figure(matrix, [f"class_{i}" for i in range(100)])
    width, height = figure.get_size_inches() * figures.DPI
    assert width <= 2400 and height <= 2400
    assert not figure.axes[0].texts  # no counts drawn in 100x100 cells
    small = figures.confusion_matrix_figure(matrix[:3, :3], CLASSES)
    assert len(small.axes[0].texts) == 9


def test_history_and_curves(tmp_path):
    history = tmp_path / "history.csv"
    # Epoch 1 logged twice (killed after the CSV row, before the resume state): the last row wins.
    history.write_text(
        "epoch,accuracy,learning_rate,loss,val_accuracy,val_loss\n"
        "0,0.5,0.001,1.0,0.4,1.2\n1,0.6,0.001,0.9,0.5,1.1\n1,0.65,0.001,0.85,0.55,NA\n"
    )
    columns = evaluation_report.read_history(history)
    assert columns["epoch"].tolist() == [0, 1] and columns["accuracy"].tolist() == [0.5, 0.65]
    assert np.isnan(columns["val_loss"][1])
    out = evaluation_report.plot_curves(history, tmp_path / "curves.png")
    width, height = _png_size(out)
    assert width > 800 and height > 250
    no_lr = tmp_path / "no_lr.csv"
    no_lr.write_text("epoch,accuracy,loss\n0,0.5,1.0\n")
    evaluation_report.plot_curves(no_lr, tmp_path / "curves2.png")
    with pytest.raises(evaluation_report.ReportError, match="missing.csv"):
        evaluation_report.read_history(tmp_path / "missing.csv")
    (tmp_path / "bad.csv").write_text("not,a,history\n")
    with pytest.raises(evaluation_report.ReportError, match="bad.csv.*'epoch' column"):
        evaluation_report.read_history(tmp_path / "bad.csv")
