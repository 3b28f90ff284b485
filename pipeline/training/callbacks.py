"""Training callbacks that survive being killed at any moment.

Keras' `ModelCheckpoint` and `BackupAndRestore` write their files in place, so a `kill -9` during a save
leaves a truncated file that breaks the next resume. Here every file is written under a temporary name
in the same directory and moved into place with `os.replace` (atomic on POSIX): a reader sees the old
file or the new one, never half of one. The resume metadata is the commit point: it is replaced last and
names the weights file it belongs to.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import time
import warnings
from pathlib import Path

import keras
import numpy as np

from pipeline import compat
from pipeline.config.rundir import RunLayout
from pipeline.core.errors import UserError
from pipeline.core.fileio import DamagedFileError, atomic_write, atomic_write_json, atomic_write_text, storage_error


def _improved(mode: str, monitor: str):
    if mode == "auto":
        mode = "max" if ("acc" in monitor or monitor.endswith("auc")) else "min"
    return (lambda new, best: new > best) if mode == "max" else (lambda new, best: new < best)


class LearningRateLogger(keras.callbacks.Callback):
    """Puts the current learning rate into the epoch logs, so CSV and TensorBoard both record it."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


class _SavesFullModel:
    """For callbacks that write the model: `target` (when set) is written and restored instead of the
    model being fit. A phase with cached features fits only a head model made of the full model's layers;
    its checkpoints and resume state must still be the full model's."""

    target = None

    @property
    def saved_model(self) -> keras.Model:
        return self.target if self.target is not None else self.model

    def healthy(self, logs: dict | None) -> bool:
        """False when this epoch's loss or any weight of the saved model is NaN or infinite: such a model
        must never become a checkpoint, a resume point, an export or a metric."""
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            return False
        return all_finite(self.saved_model)


def all_finite(model: keras.Model) -> bool:
    """True when every weight (trainable or not: BatchNorm statistics too) is finite."""
    return all(np.isfinite(keras.ops.convert_to_numpy(weight)).all() for weight in model.weights)


def trim_history(path: os.PathLike, *, epochs: int) -> None:
    """Drops the rows of epochs >= `epochs` from a CSVLogger file (`epoch` column, 0-based), atomically.

    For a resume from the backup of `epochs` completed epochs: the CSV row of an epoch is written before
    its backup, so a run killed in between logged an epoch that the resumed run trains and logs again.
    A missing file, or one without later rows, is left untouched.
    """
    path = Path(path)
    if not path.is_file():
        return
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows or "epoch" not in rows[0]:
        return
    column = rows[0].index("epoch")
    kept = [rows[0]] + [
        row for row in rows[1:] if not (len(row) > column and row[column].isdigit() and int(row[column]) >= epochs)
    ]
    if len(kept) == len(rows):
        return
    out = io.StringIO(newline="")
    csv.writer(out).writerows(kept)  # csv.excel, the dialect CSVLogger writes
    atomic_write_text(path, out.getvalue())


class MonitorError(UserError):
    """A callback monitors a metric that training does not log (known only once an epoch ends)."""


class Checkpoints(_SavesFullModel, keras.callbacks.Callback):
    """Writes `last.keras` every epoch and `best.keras` when `monitor` improves, both atomically.

    Full models (architecture, weights, optimizer), so `evaluate`, `export` and transfer can load them
    without the code that built them.
    """

    def __init__(self, directory: os.PathLike, *, monitor: str = "val_accuracy", mode: str = "auto"):
        super().__init__()
        self.directory = Path(directory)
        self.monitor = monitor
        self._is_better = _improved(mode, monitor)
        self.best = None
        self.last_good_epoch = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.monitor not in logs:
            raise MonitorError(
                f"train.callbacks.checkpoint.monitor: {self.monitor!r} is not a logged metric; "
                f"logged: {', '.join(sorted(logs))}"
            )
        value = float(logs[self.monitor])
        if not self.healthy(logs):
            return  # the previous checkpoints stay the last good ones
        atomic_write(self.directory / RunLayout.LAST, self.saved_model.save, suffix=".keras")
        self.last_good_epoch = epoch + 1
        if math.isfinite(value) and (self.best is None or self._is_better(value, self.best)):
            self.best = value
            atomic_write(self.directory / RunLayout.BEST, self.saved_model.save, suffix=".keras")

    def get_state(self) -> dict:
        return {"best": self.best, "last_good_epoch": self.last_good_epoch}

    def set_state(self, state: dict) -> None:
        self.best = state.get("best")
        self.last_good_epoch = state.get("last_good_epoch")


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """`EarlyStopping` whose patience counter survives a resume."""

    def get_state(self) -> dict:
        best = None if self.best is None else float(self.best)
        return {"wait": int(self.wait), "best": best, "best_epoch": int(self.best_epoch)}

    def set_state(self, state: dict) -> None:
        self.wait = state.get("wait", 0)
        if state.get("best") is not None:
            self.best = state["best"]
        self.best_epoch = state.get("best_epoch", 0)


class Timer(keras.callbacks.Callback):
    """Wall time of `fit` and time spent in training steps only (validation excluded), across resumes."""

    def __init__(self, images_per_epoch: int):
        super().__init__()
        self.images_per_epoch = images_per_epoch
        self.fit_seconds = 0.0
        self.step_seconds = 0.0
        self.images = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()
        self._steps_end = None

    def on_test_begin(self, logs=None):
        self._steps_end = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        self.step_seconds += (self._steps_end or now) - self._epoch_start
        self.fit_seconds += now - self._epoch_start
        self.images += self.images_per_epoch

    @property
    def images_per_second(self) -> float:
        return self.images / self.step_seconds if self.step_seconds else 0.0

    def get_state(self) -> dict:
        return {"fit_seconds": self.fit_seconds, "step_seconds": self.step_seconds, "images": self.images}

    def set_state(self, state: dict) -> None:
        self.fit_seconds = state.get("fit_seconds", 0.0)
        self.step_seconds = state.get("step_seconds", 0.0)
        self.images = state.get("images", 0)


class CrashSafeBackupAndRestore(_SavesFullModel, compat.BackupAndRestoreHooks):
    """`BackupAndRestore` made atomic, phase-aware, and carrying the state of other callbacks.

    At each epoch end: the weights (model and optimizer: iteration count, moments, so the learning-rate
    schedule continues exactly) go to `epoch-NNNN.weights.h5`, then `training_metadata.json` is replaced;
    it names that file, the epoch, the phase, how many phases are complete, and the state of `stateful`
    callbacks (best checkpoint value, early-stopping patience, timers). Put this callback last, so it
    saves after the others have updated their state and restores after their `on_train_begin` reset it.

    Only the first `fit` of a process restores (`begin_phase(..., restore=True)`); later phases continue
    from the model in memory. A backup written in an earlier phase restores the model weights only: the
    new phase's optimizer starts fresh, as it would have without the interruption.
    """

    METADATA = "training_metadata.json"

    def __init__(self, backup_dir: os.PathLike, *, stateful: dict | None = None, total_phases: int = 1):
        super().__init__(str(backup_dir), save_freq="epoch", delete_checkpoint=False)
        self.directory = Path(backup_dir)
        self.stateful = stateful or {}
        self.total_phases = total_phases
        self.phase = 0
        self._restore = True
        self.diverged = False

    def begin_phase(self, index: int, *, restore: bool) -> None:
        self.phase = index
        self._restore = restore

    # -- reading --------------------------------------------------------------------------------
    def read_metadata(self) -> dict | None:
        return read_backup_metadata(self.directory)

    def on_train_begin(self, logs=None):
        metadata = self.read_metadata() if self._restore else None
        self._restore = False
        if metadata is None:
            return
        model = self.saved_model
        if metadata.get("phase", 0) == self.phase:
            if model.optimizer is not None and not model.optimizer.built:
                model.optimizer.build(model.trainable_variables)
            _load_backup_weights(model, self.directory / metadata["weights"])
        else:
            with warnings.catch_warnings():  # "Skipping variable loading for optimizer": intended
                warnings.simplefilter("ignore")
                _load_backup_weights(model, self.directory / metadata["weights"])
        self.skip_to_epoch(metadata["epoch"])
        for name, callback in self.stateful.items():
            if name in metadata.get("callbacks", {}):
                callback.set_state(metadata["callbacks"][name])

    # -- writing --------------------------------------------------------------------------------
    def on_epoch_end(self, epoch, logs=None):
        self.diverged = self.diverged or not self.healthy(logs)
        super().on_epoch_end(epoch, logs)

    def save_backup(self):
        if not self.diverged:  # a diverged model is never a resume point: resume from the last good one
            self._write(completed_phases=self.phase)

    def _write(self, completed_phases: int):
        epoch = self.current_epoch
        weights = f"epoch-{epoch:04d}.weights.h5"
        if not (self.directory / weights).exists() or completed_phases == self.phase:
            atomic_write(self.directory / weights, lambda p: self.saved_model.save_weights(p), suffix=".weights.h5")
        metadata = {
            "epoch": epoch,
            "weights": weights,
            "phase": self.phase,
            "completed_phases": completed_phases,
            "finished": completed_phases >= self.total_phases,
            "callbacks": {name: cb.get_state() for name, cb in self.stateful.items()},
        }
        atomic_write_json(self.directory / self.METADATA, metadata)
        # Only now is the old weights file unreferenced; leftovers of a killed save go too.
        for path in self.directory.glob("*.weights.h5"):
            if path.name != weights:
                path.unlink(missing_ok=True)
        for path in self.directory.glob(".tmp-*"):
            path.unlink(missing_ok=True)

    def on_train_end(self, logs=None):
        # The phase is complete (all its epochs, or early stopping ended it). Recorded so that a run
        # killed later (next phase's start, evaluation, export) neither repeats it nor trains on.
        self.diverged = self.diverged or not all_finite(self.saved_model)
        if self.current_epoch and not self.diverged:
            self._write(completed_phases=self.phase + 1)


def _backup_remedy(directory: Path) -> str:
    return (
        f"Our writes are atomic, so the run directory was copied incompletely or edited. Copy it again, or "
        f"delete {directory} to train this run again from epoch 0 (its checkpoints are replaced as it goes)."
    )


def _load_backup_weights(model, path: Path) -> None:
    """`model.load_weights(path)`; a truncated or garbled file (h5py: "truncated file", "bad object header")
    becomes `DamagedFileError` naming it instead of a traceback."""
    try:
        model.load_weights(path)
    except (OSError, ValueError, KeyError) as error:
        if storage_error(error):
            raise
        raise DamagedFileError(
            path, reason=f"resume state unreadable: {str(error)[:200]}", remedy=_backup_remedy(path.parent)
        ) from None


def read_backup_metadata(directory: os.PathLike) -> dict | None:
    """The resume metadata of a run's backup directory, or None when training never finished an epoch.

    Raises:
        DamagedFileError: training_metadata.json is not JSON of our form, or names a weights file that is gone.
    """
    path = Path(directory) / CrashSafeBackupAndRestore.METADATA
    if not path.is_file():
        return None
    try:
        metadata = json.loads(path.read_text())
        if not (Path(directory) / metadata["weights"]).is_file():
            raise KeyError(metadata["weights"])
        int(metadata["epoch"])
        return metadata
    except (ValueError, KeyError, TypeError) as error:
        raise DamagedFileError(
            path, reason=f"resume state unreadable: {error!r}", remedy=_backup_remedy(Path(directory))
        ) from None


@dataclasses.dataclass(frozen=True)
class ResumePoint:
    """Where a run resumes: what its backup (`CrashSafeBackupAndRestore`) last recorded.

    Attributes:
        epoch: epochs completed (0: a new run, or one that never finished an epoch).
        completed_phases: training phases completed.
        callbacks: the saved state of the stateful callbacks, by name.
    """

    epoch: int = 0
    completed_phases: int = 0
    callbacks: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def read(cls, run_dir: Path) -> ResumePoint:
        """The run's resume point (epoch 0 when training never finished an epoch).

        Raises:
            DamagedFileError: the backup's metadata is unreadable.
        """
        metadata = read_backup_metadata(RunLayout(run_dir).backup)
        if not metadata:
            return cls()
        return cls(
            epoch=metadata["epoch"],
            completed_phases=metadata.get("completed_phases", 0),
            callbacks=metadata.get("callbacks", {}),
        )

    def trim_history(self, run_dir: Path) -> None:
        """Drops history rows of epochs after this point: a kill between an epoch's CSV row and its backup,
        or before the first backup (then every row goes, as the resumed run logs epoch 1 again)."""
        trim_history(RunLayout(run_dir).history, epochs=self.epoch)


@dataclasses.dataclass
class RunCallbacks:
    """The run's callbacks (`all`, in order) and the ones the driver talks to by name."""

    all: list
    checkpoints: Checkpoints
    timer: Timer
    backup: CrashSafeBackupAndRestore
    stateful: dict

    def restore(self, resume: ResumePoint) -> None:
        """Puts the stateful callbacks back as `resume` recorded them (a run whose training is complete)."""
        for name, callback in self.stateful.items():
            callback.set_state(resume.callbacks.get(name, {}))

    def save_from(self, model, fitted) -> None:
        """Callbacks that save or evaluate a model use `model` while `fitted` (e.g. a head on cached
        features) is what `fit` trains."""
        for callback in self.all:
            if hasattr(callback, "target"):
                callback.target = model if fitted is not model else None


def build_callbacks(
    options,
    run_dir: Path,
    images_per_epoch: int,
    total_phases: int = 1,
    *,
    ema: bool = False,
    lookahead=None,
    steps_per_epoch: int | None = None,
    extra=(),
) -> RunCallbacks:
    """The run's callbacks, with the ones whose state the resume backup carries (by name).

    Order: EMA weights in (validation, checkpoints and `extra` see the averages), the others, `extra`
    (e.g. monitoring), the raw weights back, the resume backup last.

    Args:
        options: the `train.callbacks` section (checkpoint, early_stopping, terminate_on_nan, csv_log,
            tensorboard).
        images_per_epoch: training images per epoch (for the images/s timer).
        ema: the optimizers keep a weight EMA (`train.optimizer.ema`).
        lookahead: the `train.lookahead` section, or None; first in the list, so every other callback
            sees the slow weights after an epoch's last batch.
        steps_per_epoch: batches per epoch, for Lookahead's schedule where `fit` cannot count them (image
            files: tf.data's `ignore_errors` leaves the cardinality unknown).
        extra: callbacks to run after the others, before the backup.
    """
    from pipeline.training import ema as ema_lib

    averages = ema_lib.EMAWeights() if ema else None
    layout = RunLayout(run_dir)
    checkpoints = Checkpoints(layout.checkpoints, monitor=options.checkpoint.monitor, mode=options.checkpoint.mode)
    timer = Timer(images_per_epoch)
    stateful = {"checkpoints": checkpoints, "timer": timer}
    callback_list = [LearningRateLogger(), timer] + ([averages] if averages else [])
    if lookahead is not None and lookahead.enabled:
        from pipeline.training.lookahead import Lookahead

        callback_list.insert(
            0,
            Lookahead(
                every=lookahead.every, base=lookahead.base, power=lookahead.power, steps_per_epoch=steps_per_epoch
            ),
        )
    if options.terminate_on_nan:
        callback_list.append(keras.callbacks.TerminateOnNaN())
    callback_list.append(checkpoints)
    if options.early_stopping.enabled:
        stopper = ResumableEarlyStopping(
            monitor=options.early_stopping.monitor,
            patience=options.early_stopping.patience,
            min_delta=options.early_stopping.min_delta,
        )
        stateful["early_stopping"] = stopper
        callback_list.append(stopper)
    if options.csv_log:
        callback_list.append(keras.callbacks.CSVLogger(str(layout.history), append=True))
    if options.tensorboard.enabled:
        update_freq = options.tensorboard.update_freq
        # write_graph=False: Keras 3.15 writes only its "conceptual graph" there, which TensorBoard's Graphs
        # tab cannot show ("Malformed GraphDef"); the op graph comes from tensorboard_logging.write_op_graph.
        callback_list.append(
            keras.callbacks.TensorBoard(
                str(layout.tensorboard),
                histogram_freq=options.tensorboard.histogram_freq,
                update_freq=update_freq,
                write_graph=False,
            )
        )
    callback_list.extend(extra)
    if averages:
        callback_list.append(averages.restore_callback())
    # Last: saves after the others updated their state, restores after their on_train_begin reset it.
    backup = CrashSafeBackupAndRestore(layout.backup, stateful=stateful, total_phases=total_phases)
    callback_list.append(backup)
    return RunCallbacks(callback_list, checkpoints=checkpoints, timer=timer, backup=backup, stateful=stateful)
