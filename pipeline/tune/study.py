"""The study: its directory (study.json, trials/), Optuna's storage, sampler and pruner, and the record of
which process runs which trial, so that a search killed at any moment resumes with its exact count.

Storage: by default Optuna's JournalStorage with its file backend, `journal.log` in the study directory
(an append-only log under a file lock: safe for several processes on one machine, no server). Several
machines share a study through a database URL (`--storage postgresql://...`). SQLite is refused with more
than one worker: it locks the whole file per write and parallel workers fail with "database is locked"
(optuna#820; Optuna's FAQ advises against it for parallel runs).

Trials left RUNNING by a killed tuner (optuna#913, #3215): every running trial records its owner (host,
pid, process start time) and a heartbeat. A trial whose owner on this host is gone, or whose heartbeat
from another host is older than `GRACE_SECONDS`, is marked FAIL ("interrupted") and its parameters
are enqueued again with its run directory, which `train` resumes from the last completed epoch.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import optuna

from pipeline import config as config_lib
from pipeline.config import rundir
from pipeline.tune import space as space_lib
from pipeline.tune.space import TuneError

JOURNAL_FILE = "journal.log"
# Settings a resumed study may change: how many trials it wants, and how many failures stop it.
RESUMABLE_CHANGES = ("tune.trials", "tune.max_failures")
HEARTBEAT_SECONDS = 10.0
GRACE_SECONDS = 120.0  # another host's trial without a heartbeat for this long is taken as interrupted
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
COUNTED = (*FINISHED, optuna.trial.TrialState.RUNNING)
optuna.logging.set_verbosity(optuna.logging.WARNING)  # our progress line per trial says what happened


def default_study_dir(experiment: str, study_name: str) -> Path:
    """runs/<experiment>/tune-<study_name> under the project: the same command finds the same study."""
    return config_lib.PROJECT_ROOT / "runs" / experiment / f"tune-{study_name}"


def study_record(*, config, storage: str | None) -> dict:
    """What study.json holds: the study's name, storage, search section and base config (the trials' config
    before the sampled values; `tune` left out, `train` ignores it)."""
    base = config_lib.to_dict(config)
    tune = base.pop("tune")
    return {"study_name": tune["study_name"], "storage": storage, "tune": tune, "base": base}


def check_study_dir(study_dir: Path, record: dict) -> bool:
    """Whether the study directory already holds this study (resume) rather than being new.

    Raises:
        TuneError: the path is a file, a non-empty directory that is not a study, or a study of another
            space, search settings or base config (the differing keys are listed, as `train` does).
    """
    study_dir = Path(study_dir)
    if study_dir.exists() and not study_dir.is_dir():
        raise TuneError(f"--study {study_dir}: a file, not a study directory")
    if not rundir.is_study_dir(study_dir):
        if study_dir.is_dir() and any(study_dir.iterdir()):
            raise TuneError(
                f"--study {study_dir}: the directory exists and is not a study directory (no "
                f"{rundir.STUDY_FILE}); choose a new or empty directory"
            )
        return False
    previous = read_record(study_dir)
    if record["storage"] is None:
        record["storage"] = previous.get("storage")  # resumed without --storage: the study's own
    old, new = rundir.flatten(previous), rundir.flatten(record)
    changed = [
        f"{key}: {old.get(key)!r} -> {new.get(key)!r}"
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key) and key not in RESUMABLE_CHANGES
    ]
    if changed:
        raise TuneError(
            f"--study {study_dir} holds a study with different settings:\n  "
            + "\n  ".join(changed)
            + "\nResume it with the same experiment, --set values and --storage, or use a new --study."
        )
    return True


def read_record(study_dir: Path) -> dict:
    """study.json of a study directory.

    Raises:
        TuneError: not a study directory, or the file is unreadable.
    """
    path = Path(study_dir) / rundir.STUDY_FILE
    if not path.is_file():
        raise TuneError(
            f"{study_dir}: not a study directory (no {rundir.STUDY_FILE}); pass one written by "
            f"`python -m pipeline tune`, e.g. runs/<experiment>/tune-search"
        )
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise TuneError(f"{path}: cannot read the study record ({error})") from None


def check_storage(url: str | None, workers: int) -> None:
    """Raises TuneError for SQLite with several workers (one line: why, and what to use)."""
    if url and url.startswith("sqlite") and workers > 1:
        raise TuneError(
            f"--storage {url}: SQLite locks the whole file on every write, so parallel workers fail with "
            f"'database is locked' (optuna#820); omit --storage (a journal file, safe on one machine) or use "
            f"postgresql://... for --workers {workers}"
        )


def open_storage(url: str | None, study_dir: Path):
    """Optuna storage: the study directory's journal file, or the database at `url`."""
    if not url:
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return JournalStorage(JournalFileBackend(str(Path(study_dir) / JOURNAL_FILE)))
    if url.startswith("postgresql://"):  # SQLAlchemy 2.1's default driver is psycopg 3; psycopg2 is the one pinned
        url = "postgresql+psycopg2://" + url[len("postgresql://") :]
    return optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})


def make_sampler(tune: dict, params: list, seed: int | None):
    """TPE (constant liar: running trials count as bad, so parallel workers spread out), random or grid."""
    name = tune["sampler"]["name"]
    if name == "grid":
        grid = {param.key: [encode(value) for value in space_lib.grid_values(param)] for param in params}
        return _GridSampler(grid, seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


class _GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler without its end-of-grid `study.stop()`, which raises outside `study.optimize`
    (this search asks and tells itself, and stops at tune.trials, which cannot exceed the grid)."""

    def after_trial(self, study, trial, state, values) -> None:
        pass


def make_pruner(tune: dict, epochs: int):
    """Median (after `warmup_epochs` epochs and `startup_trials` finished trials), Hyperband, or none."""
    pruner = tune["pruner"]
    if pruner["name"] == "median":
        # Optuna prunes from step == n_warmup_steps; steps here are 1-based epochs.
        return optuna.pruners.MedianPruner(
            n_startup_trials=pruner["startup_trials"], n_warmup_steps=pruner["warmup_epochs"] + 1
        )
    if pruner["name"] == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=3)
    return optuna.pruners.NopPruner()


def distributions(params: list) -> dict:
    """Optuna distributions by dotted key (a categorical choice that is not a scalar travels as JSON)."""
    result = {}
    for param in params:
        if param.type == "categorical":
            result[param.key] = optuna.distributions.CategoricalDistribution([encode(c) for c in param.choices])
        elif param.type == "int":
            result[param.key] = optuna.distributions.IntDistribution(
                param.low, param.high, log=param.log, step=param.step or 1
            )
        else:
            result[param.key] = optuna.distributions.FloatDistribution(
                param.low, param.high, log=param.log, step=param.step
            )
    return result


def encode(value):
    """Optuna's categorical choices are scalars; a list (e.g. an image size) is stored as its JSON text."""
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def decode(params: dict, space: list) -> dict:
    """Trial params back to config values (JSON text of non-scalar choices parsed again)."""
    originals = {param.key: {encode(c): c for c in param.choices} for param in space if param.type == "categorical"}
    return {
        key: originals.get(key, {}).get(value, value) if key in originals else value for key, value in params.items()
    }


def distinct_points(params: list) -> int | None:
    """How many different trials the space holds, or None when a range is continuous."""
    count = 1
    for param in params:
        if param.type == "float" and param.step is None:
            return None
        count *= len(space_lib.grid_values(param))
    return count


# --------------------------------------------------------------------------------------------------
# Which process runs which trial
# --------------------------------------------------------------------------------------------------


def _start_token(pid: int) -> str | None:
    """The process's start time in clock ticks (/proc/PID/stat field 22): a reused pid has another."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]


def owner() -> dict:
    """This process as a trial's owner."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "start": _start_token(os.getpid())}


def stale_reason(trial: optuna.trial.FrozenTrial, *, now: float | None = None) -> str | None:
    """Why a RUNNING trial is taken as interrupted, or None while its owner may still be running it."""
    now = time.time() if now is None else now
    who = trial.user_attrs.get("owner")
    beat = trial.user_attrs.get("heartbeat") or (trial.datetime_start.timestamp() if trial.datetime_start else now)
    if who and who["host"] == socket.gethostname():
        if _start_token(who["pid"]) != who["start"]:
            return f"interrupted: its tuner process {who['pid']} on this machine is gone"
        return None
    if now - beat > GRACE_SECONDS:
        return f"interrupted: no heartbeat from {who['host'] if who else 'its tuner'} for {now - beat:.0f} s"
    return None


def fail_stale_trials(study: optuna.Study, log=print) -> int:
    """Marks every interrupted RUNNING trial FAIL and enqueues its parameters again, with its run directory
    (which `train` resumes). Returns how many were re-enqueued. A trial another process has just marked is
    skipped (the storage refuses a second update of a finished trial)."""
    storage, count = study._storage, 0  # Study has no public setter for another trial's state
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        reason = stale_reason(trial)
        if reason is None:
            continue
        try:
            storage.set_trial_user_attr(trial._trial_id, "fail_reason", reason)
            storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        except (RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
            continue
        attrs = {key: trial.user_attrs[key] for key in ("run_dir", "baseline") if key in trial.user_attrs}
        attrs["resumes"] = trial.number
        study.enqueue_trial(trial.params, user_attrs=attrs)
        log(f"trial {trial.number} {reason}; enqueued again (its run directory resumes)")
        count += 1
    return count


def counts(study: optuna.Study) -> dict:
    """Trials by state name."""
    result: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        result[trial.state.name] = result.get(trial.state.name, 0) + 1
    return result


def surplus_or_duplicate(study: optuna.Study, trial: optuna.trial.Trial, limit: int) -> str | None:
    """Why a just-asked trial must not run: beyond `limit` counted trials (another worker asked at the same
    moment: the lower trial numbers keep their places), or the same parameters as a trial that finished
    or runs. None when it may run."""
    others = study.get_trials(deepcopy=False, states=COUNTED)
    numbers = sorted(other.number for other in others)
    if trial.number in numbers and numbers.index(trial.number) >= limit:
        return "surplus"
    for other in others:
        if other.number != trial.number and other.params == trial.params:
            return f"duplicate of trial {other.number}"
    return None
