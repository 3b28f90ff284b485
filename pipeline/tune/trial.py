"""One trial: a normal `python -m pipeline train CONFIG --run-dir DIR` in its own process, watched through the
run's history.csv, stopped when the pruner says so.

A process per trial, not a Keras fit per trial in one process: memory does not grow across trials
(keras#17458, tensorflow#61791, keras-tuner#395), a crash or a NaN in one trial cannot take the study down,
and the tuner never imports TensorFlow. The trial's run directory is an ordinary run: `train` resumes it
after an interruption by itself, and its config.yaml re-runs with `pipeline train`.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from pipeline.config import rundir

# What a trial runs (tests replace it with a stub trainer). The run directory is appended as --run-dir.
TRAIN_COMMAND = [sys.executable, "-m", "pipeline", "train"]
INTERRUPTED = "interrupted"  # the reason of a trial stopped by a Ctrl-C (SIGINT), not by its own failure
POLL_SECONDS = 0.5  # how often history.csv is read: epochs take seconds at least

# The child asks the kernel for SIGKILL when the tuner dies (prctl PR_SET_PDEATHSIG = 1), so a `kill -9`
# of the tuner leaves no orphan training on, and holding the trial's run-directory lock, when the same
# command resumes. Done in the child before exec (not with Popen's preexec_fn, unsafe with threads); the
# signal is tied to the thread that started the child, which in the tuner lives until its trial ends.
_ORPHAN_GUARD = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)\n"
    "if os.getppid() != int(sys.argv[1]): sys.exit(137)\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


@dataclasses.dataclass
class Outcome:
    """How a trial ended: state COMPLETE (value = best epoch), PRUNED or FAIL (with the reason)."""

    state: str
    value: float | None = None
    epochs: int = 0
    reason: str = ""
    seconds: float = 0.0


def read_history(path: Path, metric: str) -> list[float]:
    """The metric's value per completed epoch from a CSVLogger file (complete lines only: the file may
    be in the middle of a write). Missing file: []."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    by_epoch = {}  # a resumed run logs again an epoch it had logged but not backed up: the last row counts
    for index, row in enumerate(csv.DictReader(text.splitlines())):
        epoch = int(row["epoch"]) if (row.get("epoch") or "").isdigit() else index
        by_epoch[epoch] = float(row[metric]) if row.get(metric) not in (None, "") else math.nan
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


def best(values: list[float], *, maximize: bool) -> float:
    """The best of a trial's per-epoch values (the epoch its best checkpoint keeps)."""
    return max(values) if maximize else min(values)


def run_trial(
    *,
    config_path: Path,
    run_dir: Path,
    log_path: Path,
    metric: str,
    maximize: bool,
    on_epoch,
    heartbeat=lambda: None,
    poll_seconds: float | None = None,
    heartbeat_seconds: float = 10.0,
) -> Outcome:
    """Runs one training process to its end, its pruning, or its failure.

    Args:
        config_path: the trial's resolved YAML (what `train` reads).
        run_dir: the trial's run directory (an interrupted one resumes).
        log_path: where the process's stdout and stderr go.
        metric: the history.csv column watched.
        maximize: whether larger values of `metric` are better.
        on_epoch: called as on_epoch(epoch, value) (epoch 1-based) for each new row; returns a reason
            string to prune the trial there, or None to go on.
        heartbeat: called every `heartbeat_seconds` while the process runs (the study marks it alive).

    Returns:
        The Outcome; a FAIL names the reason (the run's own `error:` line when it gave one).
    """
    started = time.monotonic()
    command = [sys.executable, "-c", _ORPHAN_GUARD, str(os.getpid()), *TRAIN_COMMAND]
    command += [str(config_path), "--run-dir", str(run_dir)]
    history = rundir.RunLayout(run_dir).history
    reported, last_beat = 0, time.monotonic()
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            while True:
                finished = process.poll() is not None  # read after the exit: the last row is then complete
                values = read_history(history, metric)
                for epoch in range(reported + 1, len(values) + 1):
                    reported = epoch
                    value = values[epoch - 1]
                    if not math.isfinite(value):
                        _stop(process)
                        return Outcome(
                            "FAIL",
                            epochs=epoch,
                            reason=f"{metric} is {value} in epoch {epoch}",
                            seconds=time.monotonic() - started,
                        )
                    reason = on_epoch(epoch, value)
                    if reason and not (finished and process.returncode == 0):
                        _stop(process)
                        return Outcome(
                            "PRUNED", value=value, epochs=epoch, reason=reason, seconds=time.monotonic() - started
                        )
                if finished:
                    break
                if time.monotonic() - last_beat >= heartbeat_seconds:
                    heartbeat()
                    last_beat = time.monotonic()
                time.sleep(POLL_SECONDS if poll_seconds is None else poll_seconds)
        finally:
            _stop(process)
    seconds = time.monotonic() - started
    if process.returncode != 0:
        return Outcome("FAIL", epochs=reported, reason=_failure_reason(log_path, process.returncode), seconds=seconds)
    if not values:
        return Outcome("FAIL", reason=f"the run finished without a {metric} row in {history}", seconds=seconds)
    return Outcome("COMPLETE", value=best(values, maximize=maximize), epochs=len(values), seconds=seconds)


def _stop(process: subprocess.Popen) -> None:
    """Kills a trial's process (its run directory's files are written atomically: a resume continues)."""
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.wait()


def _failure_reason(log_path: Path, returncode: int) -> str:
    """The run's own `error: ...` message (the CLI's one line), else the last line of its log."""
    try:
        lines = [line.strip() for line in Path(log_path).read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        lines = []
    errors = [line for line in lines if line.startswith("error:")]
    detail = errors[-1][len("error:") :].strip() if errors else (lines[-1] if lines else "no output")
    if returncode in (130, -signal.SIGINT):
        return f"{INTERRUPTED} (Ctrl-C)"
    how = f"killed by signal {-returncode}" if returncode < 0 else f"exit code {returncode}"
    return f"{how}: {detail[:300]}"
