"""The evaluation report of a run: metrics from scikit-learn, figures from Matplotlib, files in one folder.

`build_report` turns test labels and predicted probabilities into a JSON-able dict (accuracy, top-k,
balanced accuracy, per-class precision/recall/F1, confusion matrix, averages, calibration error);
`write_report` writes it with its figures (`report.json`, `per_class.csv`, `confusion_matrix.png`,
`mistakes.png`, `calibration.png`); `plot_curves` draws a run's `history.csv`. No TensorFlow here:
callers pass NumPy arrays (e.g. from `model.predict`).
"""

from __future__ import annotations

import csv
import io
import math
import os
import warnings
from pathlib import Path

import numpy as np

from pipeline.config.rundir import RunLayout
from pipeline.core import fileio
from pipeline.core.errors import UserError
from pipeline.evaluation import figures

# Guo et al. 2017, "On Calibration of Modern Neural Networks" (ICML), eq. 3, with M = 15 equal-width
# bins of the top-1 confidence, as in their experiments.
CALIBRATION_BINS = 15
CALIBRATION_SOURCE = (
    "Guo et al. 2017, On Calibration of Modern Neural Networks, eq. 3: "
    "sum over bins of |bin| / N * |accuracy(bin) - mean confidence(bin)|, "
    "equal-width bins of the highest predicted probability"
)
MAX_MISTAKES = 25


class ReportError(UserError):
    """A file the report needs is missing or unreadable; the message names it."""


def _check(labels, probabilities, class_names) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"`labels` must be a 1-D integer array. Received: shape={labels.shape}, dtype={labels.dtype}")
    if probabilities.ndim != 2 or probabilities.shape[0] != labels.shape[0]:
        raise ValueError(
            f"`probabilities` must have shape [N, C] with N = len(labels) = {labels.shape[0]}. "
            f"Received: shape={probabilities.shape}"
        )
    if labels.shape[0] == 0:
        raise ValueError("`labels` is empty: a report needs at least one example.")
    num_classes = probabilities.shape[1]
    if len(class_names) != num_classes:
        raise ValueError(
            f"`class_names` must have one name per column of `probabilities` ({num_classes}). "
            f"Received: {len(class_names)} names"
        )
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(
            f"`labels` must lie in [0, {num_classes - 1}]. Received: min={labels.min()}, max={labels.max()}"
        )
    sums = probabilities.sum(axis=1)
    if not np.all(np.abs(sums - 1.0) < 1e-2):
        worst = sums[np.argmax(np.abs(sums - 1.0))]
        raise ValueError(
            f"`probabilities` rows must sum to 1 (softmax outputs, not logits). Received: a row summing to {worst:.4f}"
        )
    return labels.astype(np.int64), probabilities


def calibration_bins(confidences: np.ndarray, correct: np.ndarray, *, bins: int = CALIBRATION_BINS):
    """Expected calibration error and its per-bin figures.

    Args:
        confidences: [N] float, the highest predicted probability of each example.
        correct: [N] bool, whether that prediction is the true label.
        bins: M equal-width bins ((m-1)/M, m/M], m = 1..M (a confidence of 0 goes to the first).

    Returns:
        (ece, per_bin), per_bin a list of M dicts {lower, upper, count, accuracy, confidence}
        (accuracy and confidence None for an empty bin). Source: `CALIBRATION_SOURCE`.
    """
    index = np.clip(np.ceil(confidences * bins).astype(np.int64) - 1, 0, bins - 1)
    total = len(confidences)
    ece, per_bin = 0.0, []
    for m in range(bins):
        members = index == m
        count = int(members.sum())
        accuracy = float(correct[members].mean()) if count else None
        confidence = float(confidences[members].mean()) if count else None
        if count:
            ece += count / total * abs(accuracy - confidence)
        per_bin.append(
            {"lower": m / bins, "upper": (m + 1) / bins, "count": count, "accuracy": accuracy, "confidence": confidence}
        )
    return ece, per_bin


def build_report(*, labels, probabilities, class_names, top_k: int = 5, bins: int = CALIBRATION_BINS) -> dict:
    """Metrics of one evaluation, as a JSON-able dict.

    Args:
        labels: [N] integer true labels in [0, C).
        probabilities: [N, C] float predicted probabilities (softmax outputs; rows sum to 1).
        class_names: C names, label order.
        top_k: k of the top-k accuracy; capped at C (so k = C gives 1.0).
        bins: calibration bins (see `calibration_bins`).

    Returns:
        {num_examples, num_classes, accuracy, top_k, top_k_accuracy, balanced_accuracy, macro_avg,
        weighted_avg, expected_calibration_error, calibration: {bins, source, per_bin}, per_class:
        [{class, precision, recall, f1, support}] in label order, confusion_matrix: [C][C] counts with
        rows = true label}. `accuracy` is the fraction of examples whose argmax (first maximum, like
        Keras' accuracy metric) is the label, exactly `num_correct / num_examples`.

    Raises:
        ValueError: shapes, label range or probabilities that are not a distribution.
    """
    from sklearn import exceptions, metrics

    labels, probabilities = _check(labels, probabilities, class_names)
    num_examples, num_classes = probabilities.shape
    if top_k < 1:
        raise ValueError(f"`top_k` must be >= 1. Received: top_k={top_k}")
    k = min(int(top_k), num_classes)
    label_ids = list(range(num_classes))
    predictions = np.argmax(probabilities, axis=1)
    correct = predictions == labels
    # Binary problems: scikit-learn wants the positive class' score only.
    scores = probabilities[:, 1] if num_classes == 2 else probabilities
    with warnings.catch_warnings():
        # k == C ("perfect score") and classes absent from a small test set are expected here.
        warnings.simplefilter("ignore", category=exceptions.UndefinedMetricWarning)
        warnings.filterwarnings("ignore", message=".*y_pred contains classes not in y_true.*")
        top_k_accuracy = metrics.top_k_accuracy_score(labels, scores, k=k, labels=label_ids)
        balanced = metrics.balanced_accuracy_score(labels, predictions)
        precision, recall, f1, support = metrics.precision_recall_fscore_support(
            labels, predictions, labels=label_ids, zero_division=0
        )
        averages = {
            average: metrics.precision_recall_fscore_support(
                labels, predictions, labels=label_ids, average=average, zero_division=0
            )[:3]
            for average in ("macro", "weighted")
        }
    matrix = metrics.confusion_matrix(labels, predictions, labels=label_ids)
    ece, per_bin = calibration_bins(probabilities.max(axis=1), correct, bins=bins)
    return {
        "num_examples": int(num_examples),
        "num_classes": int(num_classes),
        "num_correct": int(correct.sum()),
        "accuracy": int(correct.sum()) / num_examples,
        "top_k": k,
        "top_k_accuracy": float(top_k_accuracy),
        "balanced_accuracy": float(balanced),
        "macro_avg": dict(zip(("precision", "recall", "f1"), map(float, averages["macro"]))),
        "weighted_avg": dict(zip(("precision", "recall", "f1"), map(float, averages["weighted"]))),
        "expected_calibration_error": float(ece),
        "calibration": {"bins": bins, "source": CALIBRATION_SOURCE, "per_bin": per_bin},
        "per_class": [
            {"class": str(name), "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(class_names, precision, recall, f1, support)
        ],
        "confusion_matrix": matrix.astype(int).tolist(),
    }


def per_class_csv(report: dict) -> str:
    """`class,precision,recall,f1,support` lines in label order (the report's `per_class`)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["class", "precision", "recall", "f1", "support"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(report["per_class"])
    return buffer.getvalue()


def most_confident_mistakes(labels, probabilities, max_images: int = MAX_MISTAKES) -> np.ndarray:
    """Indices of the wrong predictions, highest predicted-class probability first, at most `max_images`."""
    labels, probabilities = np.asarray(labels), np.asarray(probabilities)
    predictions = np.argmax(probabilities, axis=1)
    wrong = np.flatnonzero(predictions != labels)
    scores = probabilities[wrong, predictions[wrong]]
    return wrong[np.argsort(-scores, kind="stable")[:max_images]]


def mistakes_figure(*, labels, probabilities, class_names, images, max_images: int = MAX_MISTAKES, image_indices=None):
    """The most confident wrong predictions as an image grid, or a "no mistakes" message figure.

    Args:
        labels: [N] int true labels; probabilities: [N, C] float.
        images: [N, H, W, channels] any range; or, with `image_indices`, only the images of those examples
            (enough when they include `most_confident_mistakes`: a test split need not be held in memory).
        max_images: at most this many images, highest wrong-class probability first.
    """
    labels, probabilities = _check(labels, probabilities, class_names)
    images = np.asarray(images)
    indices = np.arange(len(labels)) if image_indices is None else np.asarray(image_indices)
    if images.ndim != 4 or len(images) != len(indices):
        raise ValueError(
            f"`images` must have shape [N, H, W, channels] with N = {len(indices)}. Received: shape={images.shape}"
        )
    predictions = np.argmax(probabilities, axis=1)
    wrong = np.flatnonzero(predictions != labels)
    if not len(wrong):
        return figures.message_figure(
            f"No mistakes: all {len(labels)} test images are classified correctly.", title="Most confident mistakes"
        )
    chosen = most_confident_mistakes(labels, probabilities, max_images)
    position = {int(index): order for order, index in enumerate(indices)}
    missing = [int(i) for i in chosen if int(i) not in position]
    if missing:
        raise ValueError(f"`image_indices` must include the most confident mistakes. Missing: {missing[:5]}")
    titles = [
        f"true: {class_names[labels[i]]}\npred: {class_names[predictions[i]]} ({probabilities[i, predictions[i]]:.2f})"
        for i in chosen
    ]
    return figures.image_grid_figure(
        images[[position[int(i)] for i in chosen]],
        titles,
        title=f"Most confident mistakes ({len(chosen)} of {len(wrong)} wrong out of {len(labels)})",
    )


def write_report(
    report: dict, out_dir: os.PathLike, *, labels, probabilities, class_names, images=None, image_indices=None
) -> dict[str, Path]:
    """Writes the report and its figures into `out_dir` (created), each file atomically.

    Args:
        report: from `build_report` on the same `labels` and `probabilities`.
        out_dir: e.g. `RUN/evaluation`.
        labels, probabilities, class_names: as given to `build_report`.
        images: optional [N, H, W, channels] test images (uint8, or floats in [0, 1] / [0, 255]) for
            `mistakes.png`; without them no mistakes figure is written.
        image_indices: the examples `images` belong to, when not all (see `mistakes_figure`).

    Returns:
        {"report": .../report.json, "per_class": .../per_class.csv, "confusion_matrix": ...png,
        "calibration": ...png, and "mistakes": ...png when images are given}.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"report": out_dir / RunLayout.REPORT, "per_class": out_dir / RunLayout.PER_CLASS}
    fileio.atomic_write_json(paths["report"], report)
    fileio.atomic_write_text(paths["per_class"], per_class_csv(report))
    accuracy = f"accuracy {report['accuracy']:.4f} on {report['num_examples']} images"
    paths["confusion_matrix"] = figures.save_png(
        figures.confusion_matrix_figure(
            report["confusion_matrix"], class_names, title=f"Test confusion matrix ({accuracy})"
        ),
        out_dir / "confusion_matrix.png",
    )
    paths["calibration"] = figures.save_png(
        figures.reliability_figure(
            report["calibration"]["per_bin"], expected_calibration_error=report["expected_calibration_error"]
        ),
        out_dir / "calibration.png",
    )
    if images is not None:
        paths["mistakes"] = figures.save_png(
            mistakes_figure(
                labels=labels,
                probabilities=probabilities,
                class_names=class_names,
                images=images,
                image_indices=image_indices,
            ),
            out_dir / "mistakes.png",
        )
    return paths


def read_history(path: os.PathLike) -> dict[str, np.ndarray]:
    """Columns of a Keras `CSVLogger` file as float arrays, one entry per epoch, sorted by epoch.

    A resumed run may have logged an epoch twice (killed after the CSV row, before the resume state):
    the last row of an epoch wins. Cells that are not numbers (Keras writes "NA") become NaN.

    Raises:
        ReportError: the file is missing, empty, or has no `epoch` column.
    """
    path = Path(path)
    try:
        rows = list(csv.DictReader(path.read_text().splitlines()))
    except OSError as error:
        raise ReportError(f"{path}: cannot read the training history ({fileio.os_reason(error)})") from None
    if not rows or "epoch" not in rows[0]:
        raise ReportError(
            f"{path}: not a training history: expected a CSV header with an 'epoch' column "
            f"and one row per epoch (Keras CSVLogger)"
        )

    def number(text):
        try:
            return float(text)
        except (TypeError, ValueError):
            return math.nan

    by_epoch = {}
    for row in rows:
        epoch = number(row.get("epoch"))
        if math.isfinite(epoch):
            by_epoch[int(epoch)] = row
    epochs = sorted(by_epoch)
    return {column: np.array([number(by_epoch[e].get(column)) for e in epochs], dtype=np.float64) for column in rows[0]}


def plot_curves(history_csv: os.PathLike, out_png: os.PathLike, *, title: str | None = None) -> Path:
    """Loss, accuracy and learning rate per epoch (train and validation) from `history.csv`, as a PNG.

    Raises:
        ReportError: `history_csv` is missing or not a Keras CSVLogger file.
    """
    history = read_history(history_csv)
    return figures.save_png(figures.curves_figure(history, title=title), out_png)
