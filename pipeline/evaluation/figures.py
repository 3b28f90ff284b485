"""Matplotlib figures of the monitoring reports: confusion matrix, image grids, reliability diagram, curves.

Figures are built on `matplotlib.figure.Figure` directly, never through `pyplot`: no global backend
switch, no figure registry that leaks memory in a long run, safe to call from a Keras callback. PNGs are
rendered by Agg (Matplotlib's default for `savefig(format="png")` on a bare Figure) and written
atomically (`pipeline.core.fileio`). Matplotlib is imported inside the functions, so importing this module
costs nothing to the CLI's argument parsing.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np

from pipeline.core import fileio

DPI = 100
# Confusion matrices with more classes than this get colour only: counts would not fit in a cell.
MAX_CLASSES_WITH_COUNTS = 30


def _new_figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _integer_ticks():
    from matplotlib import ticker

    return ticker.MaxNLocator(integer=True)


def png_bytes(figure) -> bytes:
    """The figure as PNG file contents (for `tf.summary.image` after `tf.io.decode_png`)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def save_png(figure, path: os.PathLike) -> Path:
    """Writes the figure to `path` as a PNG, atomically; returns the path."""
    path = Path(path)
    fileio.atomic_write(path, lambda temporary: figure.savefig(temporary, format="png", dpi=DPI), suffix=".png")
    return path


def _short(name: str, limit: int = 18) -> str:
    name = str(name)
    return name if len(name) <= limit else name[: limit - 1] + "…"


def confusion_matrix_figure(matrix, class_names, *, title: str = "Confusion matrix"):
    """Counts in cells, colour = fraction of the true class (row-normalised), class names on both axes.

    Args:
        matrix: [C, C] integer counts, rows = true label, columns = predicted label, label order.
        class_names: C names in label order.
        title: figure title.

    Returns:
        A Matplotlib Figure, about 4 inches wide for 2 classes and at most 22 for 100 and more; counts
        are written in the cells up to `MAX_CLASSES_WITH_COUNTS` classes.
    """
    matrix = np.asarray(matrix, dtype=np.int64)
    num_classes = matrix.shape[0]
    row_sums = matrix.sum(axis=1, keepdims=True)
    fractions = np.divide(matrix, row_sums, out=np.zeros(matrix.shape, np.float64), where=row_sums > 0)
    side = min(max(4.5, 0.55 * num_classes + 3.0), 22.0)
    figure = _new_figure(side + 1.2, side)
    axes = figure.add_subplot()
    image = axes.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    colorbar = figure.colorbar(image, ax=axes, fraction=0.046 * min(1.0, 8.0 / side), pad=0.02)
    colorbar.set_label("fraction of the true class")
    cell_points = 72.0 * 0.75 * side / num_classes  # rough size of one cell in points
    label_size = float(np.clip(cell_points * 0.45, 4.0, 10.0))
    ticks = np.arange(num_classes)
    names = [_short(name) for name in class_names]
    axes.set_xticks(
        ticks,
        names,
        rotation=90 if num_classes > 10 else 45,
        ha="center" if num_classes > 10 else "right",
        rotation_mode="anchor" if num_classes <= 10 else "default",
        fontsize=label_size,
    )
    axes.set_yticks(ticks, names, fontsize=label_size)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(title)
    if num_classes <= MAX_CLASSES_WITH_COUNTS:
        count_size = float(np.clip(cell_points * 0.3, 5.0, 10.0))
        for row in range(num_classes):
            for column in range(num_classes):
                axes.text(
                    column,
                    row,
                    str(matrix[row, column]),
                    ha="center",
                    va="center",
                    fontsize=count_size,
                    color="white" if fractions[row, column] > 0.5 else "black",
                )
    return figure


def displayable(images) -> np.ndarray:
    """[N, H, W, C] images of any range as float [0, 1] for `imshow`.

    uint8 and [0, 255] floats are divided by 255; [0, 1] floats are kept; anything else (standardised
    inputs) is min-max scaled per image, which is only meant for looking at.
    """
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 255.0
    images = images.astype(np.float32)
    low, high = float(images.min(initial=0.0)), float(images.max(initial=0.0))
    if low >= 0.0 and high <= 1.0:
        return images
    if low >= 0.0 and high <= 255.0:
        return images / 255.0
    low = images.min(axis=(1, 2, 3), keepdims=True)
    span = np.maximum(images.max(axis=(1, 2, 3), keepdims=True) - low, 1e-12)
    return (images - low) / span


def image_grid_figure(images, titles, *, title: str | None = None, title_colors=None):
    """A grid of images, each with a (multi-line) caption.

    Args:
        images: [N, H, W, C] images, C in {1, 3, 4}, any range (see `displayable`). N >= 1.
        titles: N captions.
        title: figure title.
        title_colors: optional N Matplotlib colours for the captions.

    Returns:
        A Matplotlib Figure with ceil(sqrt(N)) columns, about 1.8 inches per image.
    """
    images = displayable(images)
    count = len(images)
    columns = max(1, math.ceil(math.sqrt(count)))
    rows = math.ceil(count / columns)
    figure = _new_figure(1.8 * columns, 1.9 * rows + (0.4 if title else 0.0))
    if title:
        figure.suptitle(title)
    for index in range(count):
        axes = figure.add_subplot(rows, columns, index + 1)
        image = images[index]
        if image.shape[-1] == 1:
            axes.imshow(image[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        else:
            axes.imshow(image[..., :3], interpolation="nearest")
        color = {} if title_colors is None else {"color": title_colors[index]}
        axes.set_title(titles[index], fontsize=8, **color)
        axes.set_axis_off()
    return figure


def message_figure(message: str, *, title: str | None = None):
    """A small figure that says `message` (e.g. "no mistakes"), so a file that is expected always exists."""
    figure = _new_figure(6.0, 2.0)
    if title:
        figure.suptitle(title)
    figure.text(0.5, 0.5, message, ha="center", va="center", fontsize=13, wrap=True)
    return figure


def reliability_figure(bins: list[dict], *, expected_calibration_error: float, title: str = "Reliability diagram"):
    """Accuracy per confidence bin against the diagonal (Guo et al. 2017, fig. 1), and the bin counts.

    Args:
        bins: per-bin dicts with `lower`, `upper`, `count`, `accuracy`, `confidence` (None when empty),
            as in `report["calibration"]["bins"]`.
        expected_calibration_error: shown in the title.
    """
    figure = _new_figure(5.5, 6.5)
    grid = figure.add_gridspec(2, 1, height_ratios=[3, 1])
    top, bottom = figure.add_subplot(grid[0]), figure.add_subplot(grid[1])
    filled = [b for b in bins if b["count"]]
    lefts = np.array([b["lower"] for b in filled])
    widths = np.array([b["upper"] - b["lower"] for b in filled])
    accuracy = np.array([b["accuracy"] for b in filled])
    confidence = np.array([b["confidence"] for b in filled])
    top.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfect calibration")
    top.bar(lefts, accuracy, width=widths, align="edge", color="tab:blue", edgecolor="black", label="accuracy")
    top.bar(
        lefts,
        confidence - accuracy,
        bottom=accuracy,
        width=widths,
        align="edge",
        color="tab:red",
        alpha=0.3,
        edgecolor="tab:red",
        hatch="//",
        label="gap to mean confidence",
    )
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.set_title(f"{title}\nexpected calibration error {expected_calibration_error:.4f} ({len(bins)} bins)")
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(
        [b["lower"] for b in bins],
        [b["count"] for b in bins],
        width=[b["upper"] - b["lower"] for b in bins],
        align="edge",
        color="gray",
        edgecolor="black",
    )
    bottom.set_xlim(0, 1)
    bottom.set_xlabel("confidence (highest predicted probability)")
    bottom.set_ylabel("images")
    return figure


def curves_figure(history: dict[str, np.ndarray], *, title: str | None = None):
    """Loss, accuracy and learning rate per epoch from `history` columns (see `read_history`).

    Panels are drawn for the quantities present: `loss`/`val_loss`, `accuracy`/`val_accuracy`, and
    `learning_rate` (or Keras 2's `lr`). Epochs are shown from 1.
    """
    epochs = history["epoch"] + 1
    panels = [
        ("loss", ["loss", "val_loss"]),
        ("accuracy", ["accuracy", "val_accuracy"]),
        ("learning rate", ["learning_rate", "lr"]),
    ]
    panels = [(name, [c for c in columns if c in history]) for name, columns in panels]
    panels = [(name, columns) for name, columns in panels if columns]
    figure = _new_figure(4.5 * max(len(panels), 1), 3.8)
    if title:
        figure.suptitle(title)
    for index, (name, columns) in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), index + 1)
        for column in columns:
            label = "validation" if column.startswith("val_") else ("train" if name != "learning rate" else None)
            axes.plot(
                epochs,
                history[column],
                marker="o",
                markersize=3,
                linestyle="--" if column.startswith("val_") else "-",
                label=label,
            )
        if name == "learning rate" and np.all(history[columns[0]][np.isfinite(history[columns[0]])] > 0):
            axes.set_yscale("log")
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(_integer_ticks())
        axes.set_title(name)
        axes.grid(alpha=0.3)
        if name != "learning rate":
            axes.legend(fontsize=8)
    return figure


def runs_figure(series: dict[str, dict[str, np.ndarray]], *, metrics=("val_accuracy", "val_loss")):
    """One panel per metric, one line per run: `series[run_label][column]` against `series[...]["epoch"]`."""
    figure = _new_figure(5.5 * len(metrics), 4.2)
    for index, metric in enumerate(metrics):
        axes = figure.add_subplot(1, len(metrics), index + 1)
        for label, history in series.items():
            if metric in history:
                axes.plot(history["epoch"] + 1, history[metric], marker="o", markersize=3, label=label)
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(_integer_ticks())
        axes.set_title(metric.replace("val_", "validation "))
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
    return figure
