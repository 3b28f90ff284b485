"""Out-of-sample probabilities for the training split: K cross-validated trainings of the run's experiment.

Why not the run's own predictions: it was trained on these labels, and a network that memorised a wrong
label predicts it with confidence, so the errors it learnt are the ones it would hide (Northcutt et al.
2021, section 5, compute the probabilities by cross-validation for this reason). A cheaper stand-in
(one model trained on half the data) would audit only half the images.

Fold k trains on the training split without fold k (stratified, seeded by the run's `seed`) and predicts
fold k. Each fold is an ordinary run of the run's own config.yaml, read through list files (`file_list`
dataset) under RUN/audit/folds/fold-k/, started as a `python -m pipeline train` subprocess: an interrupted
audit resumes every fold where it stopped, and a finished fold is not trained again. The run's validation
split stays the folds' validation split (checkpoint selection); the held-out fold is their test split.
Image-file datasets only: an in-memory dataset (MNIST, CIFAR-10 arrays) has no files for lists to name.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from pipeline.audit.common import AuditError, load_splits
from pipeline.config import PROJECT_ROOT, rundir
from pipeline.core import fileio
from pipeline.data import readers


def assign_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold index [N] in 0..folds-1, stratified: each class's images shuffled (seeded) and dealt in turn."""
    rng = np.random.default_rng(seed)
    fold = np.zeros(len(labels), np.int64)
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        fold[rows] = np.arange(len(rows)) % folds
    return fold


def _list_text(paths, labels, root: Path) -> str:
    lines = ["# labels: indices (0-based lines of classes.txt)\n"]
    lines += [f"{Path(path).relative_to(root).as_posix()} {int(label)}\n" for path, label in zip(paths, labels)]
    return "".join(lines)


def out_of_sample(run_dir: Path, config, splits, *, folds: int, epochs: int | None, predict, log=print):
    """(labels [N], probabilities [N, C], embeddings [N, D] or None) of the training split, each row
    predicted by the fold model that did not train on it; rows in the split's order.

    Args:
        run_dir: the audited run; folds live in RUN/audit/folds/.
        config: its config; splits: its `Splits`.
        folds: K >= 2; epochs: each fold's epochs (default the run's).
        predict: `label_issues.predict` (model, dataset) -> (labels, probabilities, embeddings).
    Raises:
        AuditError (a UserError): an in-memory dataset, a fold smaller than a class count, a fold training
            that failed (its output is named).
    """
    from pipeline.evaluation import evaluate

    if not isinstance(splits.reader, readers.FileReader):
        raise AuditError(
            f"--folds: dataset {config.dataset.name!r} is held in memory, not as image files, and the folds are "
            f"trained from list files; audit --split validation or test, or a copy of it written as class folders"
        )
    paths, labels = splits.train
    if np.bincount(labels).min(initial=len(labels)) < folds:
        raise AuditError(f"--folds {folds}: a class has fewer training images than folds; choose a smaller K")
    every = [str(p) for p in paths] + [str(p) for p in splits.validation[0]] + [str(p) for p in splits.test[0]]
    root = Path(os.path.commonpath(every))
    root = root if root.is_dir() else root.parent
    fold_of = assign_folds(labels, folds, config.seed)
    position = {str(path): n for n, path in enumerate(paths)}
    probabilities, embeddings = None, None
    for k in range(folds):
        folder = Path(run_dir) / "audit" / "folds" / f"fold-{k}"
        lists = {
            "train": folder / "train.txt",
            "test": folder / "held_out.txt",
            **({"validation": folder / "val.txt"} if len(splits.validation[1]) else {}),
        }
        fileio.atomic_write_text(lists["train"], _list_text(paths[fold_of != k], labels[fold_of != k], root))
        fileio.atomic_write_text(lists["test"], _list_text(paths[fold_of == k], labels[fold_of == k], root))
        if "validation" in lists:
            fileio.atomic_write_text(lists["validation"], _list_text(*splits.validation, root))
        fileio.atomic_write_text(folder / "classes.txt", "\n".join(splits.class_names) + "\n")
        overrides = [
            "dataset.name=file_list",
            f"dataset.root={root}",
            f"dataset.classes={folder / 'classes.txt'}",
            "dataset.lists={" + ", ".join(f"{split}: {path}" for split, path in lists.items()) + "}",
            "export.enabled=false",
            *([f"train.epochs={epochs}"] if epochs else []),
        ]
        command = [
            sys.executable,
            "-m",
            "pipeline",
            "train",
            str(rundir.RunLayout(run_dir).config),
            "--run-dir",
            str(folder / "run"),
        ]
        for override in overrides:
            command += ["--set", override]
        log(
            f"fold {k + 1}/{folds}: training on {int((fold_of != k).sum())} images, predicting {int((fold_of == k).sum())}"
        )
        completed = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True)
        if completed.returncode != 0:
            (folder / "train.log").write_text(completed.stdout + completed.stderr)
            last = (completed.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise AuditError(f"fold {k} training failed ({last}); full output in {folder / 'train.log'}")
        fold_config = rundir.load_run_config(folder / "run")
        fold_splits = load_splits(fold_config)
        model = evaluate.load_checkpoint(rundir.checkpoint_path(folder / "run"))
        _, probability, embedding = predict(model, fold_splits.dataset("test"))
        rows = np.asarray([position[str(path)] for path in fold_splits.test[0]], np.int64)
        if probabilities is None:
            probabilities = np.zeros((len(labels), probability.shape[1]), np.float32)
            embeddings = np.zeros((len(labels), embedding.shape[1]), np.float32) if embedding is not None else None
        probabilities[rows] = probability
        if embeddings is not None and embedding is not None:
            embeddings[rows] = embedding
    return np.asarray(labels, np.int64), probabilities, embeddings
