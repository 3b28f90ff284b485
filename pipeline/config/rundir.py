"""The run directory: what a run writes and reads back, and the refusal of a directory of another config.

Layout (`runs/<experiment>/<YYYYmmdd-HHMMSS>/` or `--run-dir`), every name defined once in `RunLayout`:
    config.yaml          the fully resolved config (written once, before training; marks a run directory)
    classes.txt          class names, one per line, label order
    checkpoints/         best.keras, last.keras (atomic writes)
    backup/              resume state (callbacks.CrashSafeBackupAndRestore)
    tensorboard/         TensorBoard logs
    history.csv          one row per epoch
    curves.png           loss, accuracy and learning rate per epoch (from history.csv)
    evaluation/          the test-split report (report.json, per_class.csv, figures)
    metrics.json         written last: its presence marks a finished run
    export/              SavedModel(s) in TF Serving layout

No TensorFlow here: `evaluate`, `export`, `predict` and `report` read runs through this module.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import json
import os
import shutil
from pathlib import Path
from typing import ClassVar

from pipeline import config as config_lib
from pipeline.config import PROJECT_ROOT, Config
from pipeline.core import errors, fileio


class RunError(errors.UserError):
    """A run cannot start or continue; the message says why and what to do."""


class RunDirError(errors.UserError):
    """A path given as a run directory is not one, or lacks a file the command needs."""


@dataclasses.dataclass(frozen=True)
class RunLayout:
    """Every file name of a run directory, defined once. The class attributes are the names (relative to
    the run directory, or to its sub-folder for BEST, LAST, REPORT, PER_CLASS); an instance gives the paths
    of one run: `RunLayout(run_dir).history` is RUN/history.csv."""

    root: Path

    CONFIG: ClassVar[str] = "config.yaml"
    CLASSES: ClassVar[str] = "classes.txt"
    CHECKPOINTS: ClassVar[str] = "checkpoints"
    BEST: ClassVar[str] = "best.keras"
    LAST: ClassVar[str] = "last.keras"
    BACKUP: ClassVar[str] = "backup"
    TENSORBOARD: ClassVar[str] = "tensorboard"
    HISTORY: ClassVar[str] = "history.csv"
    CURVES: ClassVar[str] = "curves.png"
    EVALUATION: ClassVar[str] = "evaluation"
    REPORT: ClassVar[str] = "report.json"
    PER_CLASS: ClassVar[str] = "per_class.csv"
    METRICS: ClassVar[str] = "metrics.json"
    DATA: ClassVar[str] = "data.json"  # {"images": {"train": N, "validation": N, "test": N}} as the run saw its data
    EXPORT: ClassVar[str] = "export"

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config(self) -> Path:
        return self.root / self.CONFIG

    @property
    def classes(self) -> Path:
        return self.root / self.CLASSES

    @property
    def checkpoints(self) -> Path:
        return self.root / self.CHECKPOINTS

    def checkpoint(self, which: str = "best") -> Path:
        """RUN/checkpoints/best.keras or last.keras."""
        return self.checkpoints / {"best": self.BEST, "last": self.LAST}[which]

    @property
    def backup(self) -> Path:
        return self.root / self.BACKUP

    @property
    def tensorboard(self) -> Path:
        return self.root / self.TENSORBOARD

    @property
    def history(self) -> Path:
        return self.root / self.HISTORY

    @property
    def curves(self) -> Path:
        return self.root / self.CURVES

    @property
    def evaluation(self) -> Path:
        return self.root / self.EVALUATION

    @property
    def report(self) -> Path:
        return self.evaluation / self.REPORT

    @property
    def data_record(self) -> Path:
        return self.root / self.DATA

    @property
    def metrics(self) -> Path:
        return self.root / self.METRICS

    @property
    def export(self) -> Path:
        return self.root / self.EXPORT


def default_run_dir(name: str) -> Path:
    """runs/<name>/<YYYYmmdd-HHMMSS> under the project."""
    return PROJECT_ROOT / "runs" / name / datetime.datetime.now().strftime("%Y%m%d-%H%M%S")


def checkpoint_path(run_dir: Path, which: str = "best") -> Path:
    """RUN/checkpoints/{best,last}.keras."""
    return RunLayout(run_dir).checkpoint(which)


def check_run_dir(run_dir: Path, config: Config) -> str:
    """'new', 'resume' or 'finished'.

    Raises:
        RunError: the directory exists and is not a run directory, or holds a run of another config
            (the message lists every differing key).
    """
    config_path = RunLayout(run_dir).config
    if not run_dir.exists() or (run_dir.is_dir() and not any(run_dir.iterdir())):
        return "new"
    if not config_path.is_file():
        raise RunError(
            f"--run-dir {run_dir}: the directory exists and is not a run directory "
            f"(no config.yaml); choose a new or empty directory"
        )
    try:
        previous = config_lib.from_dict(config_lib.yaml_load(config_path.read_bytes()))
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
    return "finished" if RunLayout(run_dir).metrics.is_file() else "resume"


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
        if created and not RunLayout(run_dir).config.exists():
            with contextlib.suppress(OSError):
                run_dir.rmdir()  # only if empty
        fcntl.flock(handle, fcntl.LOCK_UN)
        os.close(handle)


def flatten(tree: dict, prefix: str = "") -> dict:
    """{'a': {'b': 1}} -> {'a.b': 1}: a config as dotted keys (the run-directory check, `compare`, the
    HParams dashboard). Lists and scalars are leaves; empty sections stay as values ({})."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def start(run_dir: Path, config: Config, class_names: list[str], split_sizes: dict | None = None) -> None:
    """Writes classes.txt, data.json (`split_sizes`: images per split, what `check_same_data` compares
    later), then config.yaml (last: its presence marks a run directory)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    layout = RunLayout(run_dir)
    fileio.atomic_write_text(layout.classes, "\n".join(class_names) + "\n")
    if split_sizes is not None:
        fileio.atomic_write_json(layout.data_record, {"images": dict(split_sizes)})
    fileio.atomic_write_text(
        layout.config,
        "# Fully resolved configuration of this run (defaults + YAML + --set).\n" + config_lib.dump_yaml(config),
    )


def load_run_config(run_dir: Path) -> Config:
    """The resolved config a run was trained with.

    Raises:
        RunDirError: not a run directory, or its config.yaml is invalid.
    """
    path = RunLayout(run_dir).config
    if not path.is_file():
        raise RunDirError(
            f"{run_dir}: not a run directory (no config.yaml). Pass a directory written by "
            f"`python -m pipeline train`, e.g. runs/<experiment>/<timestamp>"
        )
    try:
        return config_lib.from_dict(config_lib.yaml_load(path.read_bytes()) or {})
    except (config_lib.ConfigError, config_lib.yaml.YAMLError) as error:
        raise RunDirError(f"{path}: invalid run config: {error}") from None


def read_class_names(run_dir: Path) -> list[str]:
    """Raises RunDirError when classes.txt is missing."""
    path = RunLayout(run_dir).classes
    if not path.is_file():
        raise RunDirError(f"{path}: missing; the run directory is incomplete")
    return [line for line in path.read_text().splitlines() if line]


def remove_leftovers(run_dir: Path) -> list[Path]:
    """Removes the temporary files and folders (`.tmp-*`, see `fileio.atomic_write`) that a process killed
    mid-write left in a run directory. Call it holding `exclusive(run_dir)`: no live writer then exists.

    Returns:
        The paths removed.
    """
    removed = []
    for leftover in sorted(Path(run_dir).rglob(".tmp-*")):
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
        removed.append(leftover)
    return removed


def split_sizes(splits) -> dict:
    """{"train": N, "validation": N, "test": N} of a `data.splits.Splits` (anything with those (paths, labels))."""
    return {name: len(getattr(splits, name)[0]) for name in ("train", "validation", "test")}


class DataChangedError(RunError):
    """The data a command reads is not the data the run recorded (classes, their order, split sizes)."""


def check_same_data(run_dir: Path, *, class_names: list[str], split_sizes: dict | None = None) -> None:
    """Refuses data that no longer matches what the run recorded: its classes.txt (names and label order:
    the model's outputs are in that order) and the images per split (data.json; metrics.json of runs written
    before it). A directory without classes.txt (a worker's scratch copy) records nothing to compare.

    Scoring changed data against the model would be silently wrong: a renamed class folder renumbers the
    classes (googlecodelabs/tensorflow-for-poets-2#6, ultralytics/ultralytics#13936), an added or removed
    file moves images between the seeded splits, so the test split would hold training images.

    Args:
        class_names: the classes of the data as read now, label order.
        split_sizes: {"train": N, "validation": N, "test": N} as read now (`split_sizes`).

    Raises:
        DataChangedError: the message names every difference and what to do.
    """
    layout = RunLayout(run_dir)
    if not layout.classes.is_file():
        return
    recorded = read_class_names(run_dir)
    found = list(class_names)
    fix = "Restore the data the run was trained on, or train a new run on this data (a new --run-dir)."
    if recorded != found:
        missing = [name for name in recorded if name not in found]
        new = [name for name in found if name not in recorded]
        differences = [f"the run's classes missing from the data: {', '.join(missing)}"] if missing else []
        differences += [f"classes in the data the run never saw: {', '.join(new)}"] if new else []
        if not differences:
            differences = [f"the same classes in another label order: {', '.join(found)}"]
        raise DataChangedError(
            f"the data's classes differ from the run's ({layout.classes}: {', '.join(recorded)}):\n  "
            + "\n  ".join(differences)
            + f"\nThe model's outputs are in the run's order; scoring this data against them would be wrong. {fix}"
        )
    record = layout.data_record
    try:
        sizes = json.loads(record.read_text())["images"] if record.is_file() else None
    except (ValueError, KeyError, TypeError):
        raise fileio.DamagedFileError(record, reason="not this pipeline's JSON", remedy="Copy the run again.") from None
    if sizes is None:
        record = layout.metrics
        metrics = read_metrics(run_dir)
        sizes = {
            split: metrics[f"{split}_images"]
            for split in ("train", "validation", "test")
            if f"{split}_images" in metrics
        }
    changed = [
        f"{split}: {sizes[split]} images when trained, {count} now"
        for split, count in (split_sizes or {}).items()
        if isinstance(sizes.get(split), int) and sizes[split] != count
    ]
    if changed:
        raise DataChangedError(
            f"the data differs from what the run recorded in {record}:\n  "
            + "\n  ".join(changed)
            + f"\nFiles were added or removed, so the seeded splits no longer match (the test split could hold "
            f"images the model trained on). {fix}"
        )


def read_metrics(run_dir: Path) -> dict:
    """metrics.json, or {} for an unfinished run."""
    path = RunLayout(run_dir).metrics
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError as error:
        raise RunDirError(f"{path}: not valid JSON ({error}); re-run `python -m pipeline evaluate {run_dir}`") from None


def write_metrics(run_dir: Path, metrics: dict) -> None:
    fileio.atomic_write_json(RunLayout(run_dir).metrics, metrics)


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


# A study directory (`python -m pipeline tune`): its marker file and the folder of its trials' run
# directories, here so that `report` and `tune` read one definition.
STUDY_FILE = "study.json"
TRIALS_DIR = "trials"


def is_study_dir(path: Path) -> bool:
    """Whether `path` holds a study (`study.json`) written by `python -m pipeline tune`."""
    return (Path(path) / STUDY_FILE).is_file()


def study_trial_dirs(study_dir: Path) -> list[Path]:
    """The run directories of a study's trials that have a config.yaml, in trial order."""
    trials = Path(study_dir) / TRIALS_DIR
    return sorted(path for path in trials.glob("*") if path.is_dir() and RunLayout(path).config.is_file())


def expand_study_dirs(paths) -> list[Path]:
    """Each study directory among `paths` replaced by its trials' run directories; other paths kept."""
    expanded = []
    for path in map(Path, paths):
        expanded.extend(study_trial_dirs(path) if is_study_dir(path) else [path])
    return expanded
