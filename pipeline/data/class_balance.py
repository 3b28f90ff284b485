"""Class imbalance: per-class loss weights, the sample weights of (mixed) one-hot labels, balanced accuracy.

`train.class_weight` is `none`, `balanced` or `{class name: weight}`. `balanced` is scikit-learn's
formula, n_samples / (n_classes * count_c) (King & Zeng 2001; `sklearn.utils.class_weight`), computed on
the training split. It makes the average weight over the training examples exactly 1, so the loss keeps
its scale and the learning rate needs no change.

A class with no training example gets weight 1.0 and is left out of n_classes (what
`compute_class_weight` does with the classes it is given): no training example ever carries its weight,
and the others keep an average of exactly 1. (`compute_class_weight` itself refuses such a class.)

With MixUp or CutMix the labels are mixed, so weights go to the loss as sample weights computed from the
label: w = sum_c y_c * weight_c (`sample_weights`), the mixed example's expected class weight. Keras'
`fit(class_weight=...)` would weight it by its argmax class alone. Label smoothing stays in the loss and
is applied after: weights come from the unsmoothed label.

Importable without TensorFlow (the config validation may call `check_mode`).
"""

from __future__ import annotations

import numpy as np

from pipeline.core.errors import UserError, did_you_mean

MODES = ("none", "balanced")


class ClassWeightError(UserError):
    """A `train.class_weight` value that cannot be used."""


def check_mode(mode, class_names=None, *, key: str = "train.class_weight") -> None:
    """Raises ClassWeightError unless `mode` is "none", "balanced" or {class name: weight >= 0}; names are
    checked against `class_names` when given (with a "did you mean")."""
    if isinstance(mode, str):
        if mode not in MODES:
            raise ClassWeightError(
                f"{key}: must be none, balanced or a mapping {{class name: weight}}. "
                f"Received: {mode!r}{did_you_mean(mode, MODES)}"
            )
        return
    if not isinstance(mode, dict) or not mode:
        raise ClassWeightError(f"{key}: must be none, balanced or a mapping {{class name: weight}}. Received: {mode!r}")
    for name, weight in mode.items():
        if class_names is not None and name not in class_names:
            raise ClassWeightError(
                f"{key}.{name}: no such class; classes: {', '.join(map(str, class_names))}. "
                f"Received: {name!r}{did_you_mean(name, class_names)}"
            )
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
            raise ClassWeightError(f"{key}.{name}: must be a number >= 0. Received: {weight!r}")


def class_weights(labels, num_classes: int, mode, *, class_names=None) -> np.ndarray | None:
    """Per-class loss weights, or None for mode "none".

    Args:
        labels: training labels, int [N] in [0, num_classes).
        num_classes: number of classes.
        mode: "none", "balanced" or {class name: weight}; unlisted classes weigh 1.0.
        class_names: the class names in index order; needed for a mapping.
    Returns:
        float32 [num_classes], or None.
    Raises:
        ClassWeightError: for a bad mode, an unknown class name, a negative weight, or a mapping
            without class_names.
        ValueError: for labels outside [0, num_classes).
    """
    check_mode(mode, class_names)
    if mode == "none":
        return None
    if isinstance(mode, dict):
        if class_names is None or len(class_names) != num_classes:
            raise ClassWeightError(
                "train.class_weight: a {class name: weight} mapping needs the dataset's "
                f"{num_classes} class names. Received: class_names={class_names!r}"
            )
        weights = np.ones(num_classes, np.float32)
        for name, weight in mode.items():
            weights[list(class_names).index(name)] = float(weight)
        return weights
    labels = np.asarray(labels).reshape(-1)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must be in [0, {num_classes}). Received: min {labels.min()}, max {labels.max()}")
    counts = np.bincount(labels.astype(np.int64), minlength=num_classes)
    present = np.flatnonzero(counts)
    weights = np.ones(num_classes, np.float32)
    if present.size:
        from sklearn.utils.class_weight import compute_class_weight

        weights[present] = compute_class_weight("balanced", classes=present, y=labels)
    return weights


def sample_weights(labels, weights):
    """The weight of each example of a batch: labels @ weights (a one-hot label picks its class's weight;
    a MixUp/CutMix label lam * y_a + (1 - lam) * y_b gets lam * w_a + (1 - lam) * w_b).

    Args:
        labels: float [batch, classes], one-hot or mixed (rows sum to 1), before label smoothing.
        weights: [classes] from `class_weights`.
    Returns:
        float32 tf.Tensor [batch].
    """
    import tensorflow as tf

    labels = tf.cast(labels, tf.float32)
    return tf.linalg.matvec(labels, tf.constant(np.asarray(weights, np.float32)))


def per_class_recall(y_true, y_pred, num_classes: int) -> np.ndarray:
    """Recall of each class (correct / examples of that class); NaN for a class with no example.

    Args:
        y_true, y_pred: int [N] class indices.
    Returns:
        float64 [num_classes].
    """
    y_true, y_pred = np.asarray(y_true).reshape(-1), np.asarray(y_pred).reshape(-1)
    support = np.bincount(y_true, minlength=num_classes).astype(np.float64)
    correct = np.bincount(y_true[y_true == y_pred], minlength=num_classes).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, correct / support, np.nan)


def balanced_accuracy(y_true, y_pred, num_classes: int) -> float:
    """Mean recall over the classes present in y_true (scikit-learn's `balanced_accuracy_score`); equals
    accuracy when the classes are balanced. NaN when y_true is empty."""
    recall = per_class_recall(y_true, y_pred, num_classes)
    return float(np.nanmean(recall)) if np.isfinite(recall).any() else float("nan")
