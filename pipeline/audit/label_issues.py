"""Likely label errors and outliers of one split of a trained run (`python -m pipeline audit RUN`).

Label errors: cleanlab's confident learning (Northcutt, Jiang and Chuang, "Confident Learning: Estimating
Uncertainty in Dataset Labels", JAIR 2021): `cleanlab.filter.find_label_issues` (prune by noise rate) picks
the images whose given label disagrees with the model's out-of-sample probabilities more than the
estimated per-class noise explains; they are ranked by `cleanlab.rank.get_label_quality_scores`
(LABEL_SCORE; lowest first) and given the most probable class as the suggestion.

Outliers: images far from their own class in the penultimate-layer embedding space (the input of the last
Dense layer, L2-normalised): cosine distance to the class's mean embedding, as a robust z-score within the
class (median and MAD; Iglewicz and Hoaglin, "How to Detect and Handle Outliers", 1993: |z| > 3.5).

Outputs in RUN/audit/<split>/: label_issues.csv (ranked), label_issues.png (the top issues: image, given ->
suggested, score), class_pairs.csv (issues per given -> suggested pair), outliers.csv, outliers.png,
summary.json, and one line in TensorBoard's text tab (RUN/tensorboard/audit).
"""

from __future__ import annotations

import collections
import csv
import io
from pathlib import Path

import numpy as np

from pipeline.audit.common import AuditError, load_splits
from pipeline.config import rundir
from pipeline.core import fileio
from pipeline.data import readers

LABEL_SCORE = "self_confidence"  # cleanlab's default rank (benchmarks/audit_quality.py compares the others)
OUTLIER_Z = 3.5  # modified z-score above which an image is an outlier (Iglewicz and Hoaglin)
SHEET_COLUMNS = 6


def check_run(run_dir: Path, *, split: str, folds: int | None):
    """(config, class names) of a run that can be audited; raises before anything is written.

    Raises:
        RunDirError: not a run directory, no checkpoint yet.
        AuditError: --folds with a split other than train, train without --folds, K < 2.
    """
    config = rundir.load_run_config(run_dir)
    class_names = rundir.read_class_names(run_dir)
    checkpoint = rundir.checkpoint_path(run_dir)
    if not checkpoint.is_file():
        raise rundir.RunDirError(f"{checkpoint}: not found; the run has not finished an epoch, nothing to audit")
    if split == "train" and folds is None:
        raise AuditError(
            "--split train: the run has seen these labels, so its own probabilities are not out of sample "
            "and would hide the errors it memorised; add --folds K (e.g. --folds 4) to train K models "
            "that each predict the part they did not see"
        )
    if folds is not None and (split != "train" or folds < 2):
        raise AuditError(f"--folds applies to --split train and must be >= 2; received --split {split} --folds {folds}")
    return config, class_names


def feature_model(model):
    """A Keras model giving (penultimate embeddings [B, D], probabilities [B, C]), or None when the network
    has no Dense layer to take the embedding from (outliers are then skipped).

    The embedding is the input of the last Dense layer. Training wraps a registered network as
    image -> normalize -> network (a nested Functional model), so the Dense layer may sit one level down;
    the wrapper is then rebuilt as a chain around a two-output copy of the nested network."""
    import keras

    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    if dense and len(dense[-1].input.shape) == 2:
        return keras.Model(model.inputs, [dense[-1].input, model.output])
    inner = model.layers[-1]
    if not isinstance(inner, keras.Model) or len(model.inputs) != 1:
        return None
    inner_features = feature_model(inner)
    if inner_features is None:
        return None
    inputs = keras.Input(model.inputs[0].shape[1:], dtype=model.inputs[0].dtype)
    x = inputs
    for layer in model.layers[1:-1]:  # the chain before the nested network (normalisation)
        x = layer(x)
    return keras.Model(inputs, inner_features(x))


def predict(model, dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(labels [N] int64, probabilities [N, C] float32, embeddings [N, D] float32 or None) over a batched
    (images, one-hot labels) dataset, in its order."""
    features = feature_model(model)
    labels, probabilities, embeddings = [], [], []
    for images, batch_labels in dataset:
        if features is not None and not embeddings:  # a wrapper that is not a plain chain: no embeddings
            reference = np.asarray(model.predict_on_batch(images))
            if not np.allclose(np.asarray(features.predict_on_batch(images)[1]), reference, atol=1e-4):
                features = None
        if features is None:
            probabilities.append(np.asarray(model.predict_on_batch(images), np.float32))
        else:
            embedded, probability = features.predict_on_batch(images)
            embeddings.append(np.asarray(embedded, np.float32))
            probabilities.append(np.asarray(probability, np.float32))
        labels.append(np.asarray(batch_labels).argmax(axis=-1))
    return (
        np.concatenate(labels).astype(np.int64),
        np.concatenate(probabilities),
        np.concatenate(embeddings) if embeddings else None,
    )


def find_issues(labels: np.ndarray, probabilities: np.ndarray) -> dict:
    """cleanlab's label issues of out-of-sample probabilities.

    Args:
        labels: int [N] given classes; probabilities: float [N, C] out-of-sample, rows summing to 1.
    Returns:
        {"issue": bool [N], "score": float [N] (label quality, LABEL_SCORE, 0 worst .. 1),
         "suggested": int [N] (argmax class), "order": int [M] issue indices, worst first}.
    """
    from cleanlab import filter as cleanlab_filter
    from cleanlab import rank

    probabilities = np.clip(probabilities, 1e-7, None)
    probabilities = probabilities / probabilities.sum(axis=1, keepdims=True)
    score = rank.get_label_quality_scores(labels, probabilities, method=LABEL_SCORE)
    present = np.bincount(labels, minlength=probabilities.shape[1]) > 0
    if present.sum() < 2:
        issue = np.zeros(len(labels), bool)  # one class: nothing to confuse it with
    else:
        issue = cleanlab_filter.find_label_issues(labels, probabilities, filter_by="prune_by_noise_rate")
    order = np.flatnonzero(issue)
    order = order[np.argsort(score[order], kind="stable")]
    return {"issue": issue, "score": score, "suggested": probabilities.argmax(axis=1), "order": order}


def outlier_scores(embeddings: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Modified z-score [N] of each image's cosine distance to its given class's mean embedding, within
    the class (0.6745 (x - median) / MAD; a class of fewer than 3 images scores 0)."""
    unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    scores = np.zeros(len(labels), np.float64)
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        if len(rows) < 3:
            continue
        centre = unit[rows].mean(axis=0)
        centre /= max(np.linalg.norm(centre), 1e-12)
        distance = 1.0 - unit[rows] @ centre
        median = np.median(distance)
        mad = np.median(np.abs(distance - median))
        scores[rows] = 0.6745 * (distance - median) / max(mad, 1e-12)
    return scores


def _names_and_images(splits, split: str):
    """(display names [N], a function index -> uint8 image) of a split, in the split's order."""
    sources = getattr(splits, split)[0]
    if isinstance(splits.reader, readers.ArrayReader):
        return [f"{split}[{i}]" for i in range(len(sources))], lambda i: np.asarray(sources[i])

    def load(i):
        import tensorflow as tf

        from pipeline.data import decode

        try:
            return decode.decode_image(tf.io.read_file(str(sources[i])), channels=3).numpy()
        except (OSError, tf.errors.OpError):
            return None

    return [str(path) for path in sources], load


def audit_run(
    run_dir,
    *,
    split: str = "validation",
    folds: int | None = None,
    fold_epochs: int | None = None,
    top: int = 24,
    log=print,
) -> dict:
    """Label issues and outliers of one split of a run, written to RUN/audit/<split>/ (see the module docstring).

    Returns:
        summary.json's content: split, images, issues, issue_share, outliers, class_pairs, out.
    Raises:
        RunDirError, AuditError: (exit 2, nothing written) not a run, no checkpoint, a run trained on
            other classes than the dataset has now, train without --folds, --folds on a memory dataset.
    """
    from pipeline.evaluation import evaluate

    run_dir = Path(run_dir)
    config, class_names = check_run(run_dir, split=split, folds=folds)
    with rundir.exclusive(run_dir):
        splits = load_splits(config)
        if list(splits.class_names) != list(class_names):
            raise AuditError(
                f"{run_dir}: trained on classes {class_names[:5]}{'...' if len(class_names) > 5 else ''} "
                f"({len(class_names)}); the dataset now has {len(splits.class_names)} "
                f"({splits.class_names[:5]}...): another dataset version. Audit a run of this version"
            )
        if len(getattr(splits, split)[1]) == 0:
            raise AuditError(f"{run_dir}: the {split} split is empty; choose another --split")
        if split == "train":
            from pipeline.audit import folds as folds_lib

            labels, probabilities, embeddings = folds_lib.out_of_sample(
                run_dir, config, splits, folds=folds, epochs=fold_epochs, predict=predict, log=log
            )
        else:
            model = evaluate.load_checkpoint(rundir.checkpoint_path(run_dir))
            labels, probabilities, embeddings = predict(model, splits.dataset(split))
        names, load_image = _names_and_images(splits, split)
        issues = find_issues(labels, probabilities)
        outliers = outlier_scores(embeddings, labels) if embeddings is not None else None
        return _write_outputs(
            run_dir / "audit" / split,
            split=split,
            names=names,
            labels=labels,
            issues=issues,
            outliers=outliers,
            class_names=class_names,
            load_image=load_image,
            top=top,
            run_dir=run_dir,
        )


def _csv(rows: list[list]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def _write_outputs(out: Path, *, split, names, labels, issues, outliers, class_names, load_image, top, run_dir) -> dict:
    from pipeline.data import contact_sheet

    order, score, suggested = issues["order"], issues["score"], issues["suggested"]
    rows = [["rank", "path", "given", "suggested", "score"]]
    rows += [
        [rank, names[i], class_names[labels[i]], class_names[suggested[i]], f"{score[i]:.6f}"]
        for rank, i in enumerate(order, 1)
    ]
    pairs = collections.Counter((class_names[labels[i]], class_names[suggested[i]]) for i in order)
    pair_rows = [["given", "suggested", "count"]] + [[g, s, n] for (g, s), n in pairs.most_common()]
    flagged = np.flatnonzero(outliers > OUTLIER_Z) if outliers is not None else np.zeros(0, np.int64)
    flagged = flagged[np.argsort(-outliers[flagged], kind="stable")] if len(flagged) else flagged
    outlier_rows = [["rank", "path", "class", "z"]]
    outlier_rows += [
        [rank, names[i], class_names[labels[i]], f"{outliers[i]:.3f}"] for rank, i in enumerate(flagged, 1)
    ]
    summary = {
        "split": split,
        "images": int(len(labels)),
        "issues": int(len(order)),
        "issue_share": round(float(len(order) / max(len(labels), 1)), 6),
        "outliers": int(len(flagged)) if outliers is not None else None,
        "label_score": LABEL_SCORE,
        "outlier_z": OUTLIER_Z,
        "class_pairs": [{"given": g, "suggested": s, "count": n} for (g, s), n in pairs.most_common()],
        "out": str(out),
    }
    try:
        out.mkdir(parents=True, exist_ok=True)
        fileio.atomic_write_text(out / "label_issues.csv", _csv(rows))
        fileio.atomic_write_text(out / "class_pairs.csv", _csv(pair_rows))
        fileio.atomic_write_text(out / "outliers.csv", _csv(outlier_rows))
        cells = [
            (
                load_image(i),
                f"{Path(names[i]).name}\n{class_names[labels[i]]} -> {class_names[suggested[i]]}\nscore {score[i]:.3f}",
            )
            for i in order[:top]
        ]
        contact_sheet.write_sheet(
            out / "label_issues.png",
            _rows(cells),
            title=(
                f"Likely label errors, {split} split: given -> suggested, cleanlab {LABEL_SCORE} score (lowest first); "
                f"{len(order)} of {len(labels)} images"
            ),
        )
        cells = [
            (load_image(i), f"{Path(names[i]).name}\n{class_names[labels[i]]}, z {outliers[i]:.1f}")
            for i in flagged[:top]
        ]
        contact_sheet.write_sheet(
            out / "outliers.png",
            _rows(cells),
            title=(
                f"Outliers, {split} split: far from their class in the embedding space (z > {OUTLIER_Z}); "
                f"{len(flagged)} images"
            ),
        )
        fileio.atomic_write_json(out / "summary.json", summary)
    except OSError as error:
        raise AuditError(f"cannot write to {out} ({fileio.os_reason(error)})") from None
    _tensorboard_line(run_dir, summary)
    return summary


def _rows(cells: list) -> list[list]:
    return [cells[start : start + SHEET_COLUMNS] for start in range(0, len(cells), SHEET_COLUMNS)] or [[]]


def _tensorboard_line(run_dir: Path, summary: dict) -> None:
    """One line in TensorBoard's text tab (run "audit", tag "audit/<split>")."""
    import tensorflow as tf

    pairs = ", ".join(f"{p['given']} -> {p['suggested']} {p['count']}" for p in summary["class_pairs"][:5])
    line = (
        f"{summary['split']}: **{summary['issues']}** likely label errors of {summary['images']} images "
        f"({100 * summary['issue_share']:.2f}%), {summary['outliers']} outliers; top pairs: {pairs or 'none'}; "
        f"see audit/label_issues.csv"
    )
    with tf.summary.create_file_writer(str(rundir.RunLayout(run_dir).tensorboard / "audit")).as_default():
        tf.summary.text(f"audit/{summary['split']}", line, step=0)
