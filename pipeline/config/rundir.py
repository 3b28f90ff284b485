"""The run directory: what a run writes and reads back, and the refusal of a directory of another config.

Layout (`runs/<experiment>/<YYYYmmdd-HHMMSS>/` or `--run-dir`):
    config.yaml          the fully resolved config (written once, before training; marks a run directory)
    classes.txt          class names, one per line, label order
    checkpoints/         best.keras, last.keras (atomic writes)
    backup/              resume state (callbacks.CrashSafeBackupAndRestore)
    tensorboard/         TensorBoard logs
    history.csv          one row per epoch
    evaluation/          the test-split report (report.json, figures)
    metrics.json         written last: its presence marks a finished run
    export/              SavedModel(s) in TF Serving layout

No TensorFlow here: `evaluate`, `export`, `predict` and `report` read runs through this module.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
from pathlib import Path

from pipeline import config as config_lib
from pipeline.config import PROJECT_ROOT, Config
from pipeline.core import errors, fileio


class RunError(errors.UserError):
    """A run cannot start or continue; the message says why and what to do."""


class RunDirError(errors.UserError):
    """A path given as a run directory is not one, or lacks a file the command needs."""


def default_run_dir(name: str) -> Path:
    """runs/<name>/<YYYYmmdd-HHMMSS> under the project."""
    return PROJECT_ROOT / "runs" / name / datetime.datetime.now().strftime("%Y%m%d-%H%M%S")


def checkpoint_path(run_dir: Path, which: str = "best") -> Path:
    """RUN/checkpoints/{best,last}.keras."""
    return Path(run_dir) / "checkpoints" / f"{which}.keras"


def check_run_dir(run_dir: Path, config: Config) -> str:
    """'new', 'resume' or 'finished'.

    Raises:
        RunError: the directory exists and is not a run directory, or holds a run of another config
            (the message lists every differing key).
    """
    config_path = run_dir / "config.yaml"
    if not run_dir.exists() or (run_dir.is_dir() and not any(run_dir.iterdir())):
        return "new"
    if not config_path.is_file():
        raise RunError(
            f"--run-dir {run_dir}: the directory exists and is not a run directory "
            f"(no config.yaml); choose a new or empty directory"
        )
    try:
        previous = config_lib.from_dict(config_lib.yaml_load(config_path.read_text()))
    except (config_lib.ConfigError, config_lib.yaml.YAMLError) as error:
        raise RunError(f"{config_path}: cannot read the run's config ({error})") from None
    if previous != config:
        old, new = flatten(config_lib.to_dict(previous)), flatten(config_lib.to_dict(config))
        changed = [
            f"{key}: {old.get(key)!r} -> {new.get(key)!r}"
            for key in sorted(set(old) | set(new))
            if old.get(key) != new.get(key)
        ]
        raise RunError(
            f"--run-dir {run_dir} holds a run with a different config:\n  "
            + "\n  ".join(changed)
            + "\nResume it with the same experiment and --set values, or use a new --run-dir."
        )
    return "finished" if (run_dir / "metrics.json").is_file() else "resume"


_HELD: set[str] = set()  # run directories this process has locked


@contextlib.contextmanager
def exclusive(run_dir: Path):
    """Holds the run directory's lock while a `train` runs in it: a second process is refused at once.

    An advisory `flock` on the directory itself (no lock file: a finished run's files stay untouched);
    the kernel releases it when the holder exits, so a killed process never leaves it stuck. If the
    run never started (no config.yaml was written, e.g. the data was refused), a directory this call
    created is removed again. Re-entrant within a process (a run's own evaluation and export).

    Raises:
        RunError: another process holds the lock.
    """
    run_dir = Path(run_dir)
    key = os.path.realpath(run_dir)
    if key in _HELD:  # this process holds it already (train's own evaluation and export)
        yield
        return
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    handle = os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(handle)
        raise RunError(
            f"--run-dir {run_dir} is in use by another `train` process; wait for it to finish, "
            f"stop it, or choose another --run-dir"
        ) from None
    _HELD.add(key)
    try:
        yield
    finally:
        _HELD.discard(key)
        if created and not (run_dir / "config.yaml").exists():
            with contextlib.suppress(OSError):
                run_dir.rmdir()  # only if empty
        fcntl.flock(handle, fcntl.LOCK_UN)
        os.close(handle)


def flatten(tree: dict, prefix: str = "") -> dict:
    """{'a': {'b': 1}} -> {'a.b': 1}; empty sections stay as values."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def start(run_dir: Path, config: Config, class_names: list[str]) -> None:
    """Writes classes.txt, then config.yaml (last: its presence marks a run directory)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    fileio.atomic_write_text(run_dir / "classes.txt", "\n".join(class_names) + "\n")
    fileio.atomic_write_text(
        run_dir / "config.yaml",
        "# Fully resolved configuration of this run (defaults + YAML + --set).\n" + config_lib.dump_yaml(config),
    )


def load_run_config(run_dir: Path) -> Config:
    """The resolved config a run was trained with.

    Raises:
        RunDirError: not a run directory, or its config.yaml is invalid.
    """
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise RunDirError(
            f"{run_dir}: not a run directory (no config.yaml). Pass a directory written by "
            f"`python -m pipeline train`, e.g. runs/<experiment>/<timestamp>"
        )
    try:
        return config_lib.from_dict(config_lib.yaml_load(path.read_text()) or {})
    except (config_lib.ConfigError, config_lib.yaml.YAMLError) as error:
        raise RunDirError(f"{path}: invalid run config: {error}") from None


def read_class_names(run_dir: Path) -> list[str]:
    """Raises RunDirError when classes.txt is missing."""
    path = Path(run_dir) / "classes.txt"
    if not path.is_file():
        raise RunDirError(f"{path}: missing; the run directory is incomplete")
    return [line for line in path.read_text().splitlines() if line]


def read_metrics(run_dir: Path) -> dict:
    """metrics.json, or {} for an unfinished run."""
    path = Path(run_dir) / "metrics.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError as error:
        raise RunDirError(f"{path}: not valid JSON ({error}); re-run `python -m pipeline evaluate {run_dir}`") from None


def write_metrics(run_dir: Path, metrics: dict) -> None:
    fileio.atomic_write_json(Path(run_dir) / "metrics.json", metrics)


def metrics_record(
    *,
    test: dict,
    best_validation: dict,
    epochs_completed: int,
    train_seconds: float,
    images_per_second: float,
    split_sizes: dict,
    skipped_files: list,
    distribution: dict,
    export: str | None = None,
) -> dict:
    """What metrics.json holds for a finished run (written last by `write_metrics`: it marks the run
    finished).

    Args:
        test: the test split's metrics (accuracy, loss, top_k_accuracy, balanced_accuracy, ...).
        best_validation: {monitored metric: its best value}.
        train_seconds: seconds in `fit` (validation included); images_per_second: training images per
            second of training steps.
        split_sizes: {"train", "validation", "test"} image counts.
        skipped_files: [{"path", "reason"}] left out as unreadable.
        distribution: {strategy, num_workers, num_replicas_in_sync}.
        export: the SavedModel's path, when the run exported one.
    """
    record = {
        "test": test,
        "best_validation": best_validation,
        "epochs_completed": epochs_completed,
        "train_seconds": round(train_seconds, 2),
        "images_per_second": round(images_per_second, 1),
        "train_images": split_sizes["train"],
        "validation_images": split_sizes["validation"],
        "test_images": split_sizes["test"],
        "skipped_files": skipped_files,
        "distribution": distribution,
    }
    if export is not None:
        record["export"] = export
    return record
