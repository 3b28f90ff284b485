"""The search loop: workers that ask the study for a trial, run it as its own `train` process, and tell
the result, until COMPLETE + PRUNED trials reach `tune.trials` across all workers, processes and restarts.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import optuna

from pipeline import config as config_lib
from pipeline.config import ConfigError, rundir
from pipeline.tune import space as space_lib
from pipeline.tune import study as study_lib
from pipeline.tune import trial as trial_lib
from pipeline.tune.space import TuneError

WAIT_SECONDS = 1.0  # poll while other workers hold the last trials
MAX_REJECTED = 50  # duplicates or surplus proposals in a row before the search gives up


class Search:
    """One tuner process: `workers` threads, each running one trial process at a time.

    Args:
        study: the Optuna study (storage, sampler and pruner set).
        study_dir: where trials/<NNNN>/ run directories, their YAMLs and logs go.
        params: the validated space (space.Param list).
        record: the study record (study.json): `base` config dict and `tune` section.
        check: validates a trial's whole config dict as `train` does; raises ConfigError.
        workers: trials run at once by this process.
        log: where progress lines go.
    """

    def __init__(self, *, study, study_dir: Path, params: list, record: dict, check, workers: int = 1, log=print):
        self.study, self.study_dir, self.params, self.check = study, Path(study_dir), params, check
        self.base, self.tune, self.workers, self.log = record["base"], record["tune"], workers, log
        self.metric = self.tune["metric"]
        self.maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
        self.lock = threading.Lock()
        self.failures_in_row, self.rejected_in_row = 0, 0
        self.stop_reason: str | None = None
        self.interrupted = False
        self.distributions = study_lib.distributions(params)

    # ----------------------------------------------------------------------------------------------
    def run(self) -> None:
        """Runs trials until the study holds `tune.trials` COMPLETE + PRUNED ones.

        Raises:
            TuneError: `tune.max_failures` trials failed in a row, or the sampler kept proposing points
                that already ran (the space is smaller than tune.trials).
        """
        study_lib.fail_stale_trials(self.study, log=self.log)
        self._enqueue_baseline()
        threads = [
            threading.Thread(target=self._worker, name=f"tune-worker-{index}", daemon=True)
            for index in range(self.workers)
        ]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                while thread.is_alive():
                    thread.join(timeout=0.5)  # with a timeout, a Ctrl-C reaches this thread at once
        except KeyboardInterrupt:
            # Ctrl-C: the running trials stay RUNNING; this process ends (and their `train` processes with it),
            # so the same command finds them interrupted and resumes their run directories.
            self.interrupted = True
            raise
        if self.stop_reason:
            raise TuneError(self.stop_reason)

    def _enqueue_baseline(self) -> None:
        """The experiment's own values first, once per study, so the search reports what it gained."""
        if not self.tune["baseline"] or self.study.get_trials(deepcopy=False):
            return
        values = space_lib.base_values(self.params, self.base)
        inside = {
            key: study_lib.encode(value)
            for key, value in values.items()
            if _inside(self.distributions[key], study_lib.encode(value))
        }
        for key in sorted(set(values) - set(inside)):
            self.log(f"baseline: {key}={values[key]!r} is outside the space; the baseline trial samples it")
        self.study.enqueue_trial(inside, user_attrs={"baseline": True})

    # ----------------------------------------------------------------------------------------------
    def _worker(self) -> None:
        while True:
            with self.lock:
                if self.stop_reason or self.interrupted:
                    return
                study_lib.fail_stale_trials(self.study, log=self.log)
                states = study_lib.counts(self.study)
                finished = states.get("COMPLETE", 0) + states.get("PRUNED", 0)
                if finished >= self.tune["trials"]:
                    return
                trial = None
                if finished + states.get("RUNNING", 0) < self.tune["trials"]:
                    trial = self._ask()
            if trial is None:  # others hold the last places (or a proposal was refused): look again soon
                time.sleep(WAIT_SECONDS)
                continue
            self._run(trial)

    def _ask(self):
        """A new trial that may run, or None (refused as surplus or duplicate, recorded as FAIL)."""
        trial = self.study.ask(self.distributions)
        trial.set_user_attr("owner", study_lib.owner())
        trial.set_user_attr("heartbeat", time.time())
        refused = study_lib.surplus_or_duplicate(self.study, trial, self.tune["trials"])
        if refused is None:
            self.rejected_in_row = 0
            return trial
        trial.set_user_attr("fail_reason", refused)
        self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        self.rejected_in_row += 1
        if self.rejected_in_row >= MAX_REJECTED:
            self.stop_reason = (
                f"the sampler proposed {MAX_REJECTED} points in a row that already ran; the space holds fewer "
                f"distinct points than tune.trials ({self.tune['trials']}): widen it or lower tune.trials"
            )
        return None

    def _run(self, trial) -> None:
        values = study_lib.decode(trial.params, self.params)
        run_name = trial.user_attrs.get("run_dir") or f"{rundir.TRIALS_DIR}/{trial.number:04d}"
        trial.set_user_attr("run_dir", run_name)
        run_dir = self.study_dir / run_name
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        config_path = run_dir.with_suffix(".yaml")
        try:
            config = self.check(space_lib.with_values(self.base, values))
        except ConfigError as error:  # a combination of values the schema refuses
            outcome = trial_lib.Outcome("FAIL", reason=f"config refused: {error}")
        else:
            write_trial_config(config_path, config, trial.number, self.study.study_name)
            outcome = trial_lib.run_trial(
                config_path=config_path,
                run_dir=run_dir,
                log_path=run_dir.with_suffix(".log"),
                metric=self.metric,
                maximize=self.maximize,
                on_epoch=lambda epoch, value: self._report(trial, epoch, value),
                heartbeat=lambda: trial.set_user_attr("heartbeat", time.time()),
                heartbeat_seconds=study_lib.HEARTBEAT_SECONDS,
            )
        self._tell(trial, outcome, values)

    def _report(self, trial, epoch: int, value: float) -> str | None:
        """Reports an epoch's metric; the reason to prune there, or None."""
        trial.report(value, step=epoch)
        if not trial.should_prune():
            return None
        return f"{self.tune['pruner']['name']} pruner after epoch {epoch}: {self.metric} {value:.4f}"

    def _tell(self, trial, outcome: trial_lib.Outcome, values: dict) -> None:
        if self.interrupted or outcome.reason.startswith(trial_lib.INTERRUPTED):
            self.interrupted = True  # the Ctrl-C may reach the trial before this process's main thread
            return  # left RUNNING: the next tuner resumes it
        trial.set_user_attr("epochs", outcome.epochs)
        trial.set_user_attr("seconds", round(outcome.seconds, 1))
        if outcome.reason:
            trial.set_user_attr("fail_reason" if outcome.state == "FAIL" else "prune_reason", outcome.reason)
        with self.lock:
            if outcome.state == "COMPLETE":
                self.study.tell(trial, outcome.value)
            elif outcome.state == "PRUNED":
                trial.set_user_attr("pruned_at_epoch", outcome.epochs)
                self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            else:
                self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            self.failures_in_row = self.failures_in_row + 1 if outcome.state == "FAIL" else 0
            if self.failures_in_row >= self.tune["max_failures"] and not self.stop_reason:
                self.stop_reason = (
                    f"{self.failures_in_row} trials failed in a row (tune.max_failures); the last, trial "
                    f"{trial.number}: {outcome.reason}. See {self.study_dir / rundir.TRIALS_DIR}/<NNNN>.log; "
                    f"run the same command to go on once fixed"
                )
            self.log(self._progress_line(trial, outcome, values))

    def _progress_line(self, trial, outcome: trial_lib.Outcome, values: dict) -> str:
        states = study_lib.counts(self.study)
        done = states.get("COMPLETE", 0) + states.get("PRUNED", 0)
        value = f"{self.metric} {outcome.value:.4f}" if outcome.value is not None else f"{self.metric} -"
        shown = " ".join(f"{key.rpartition('.')[2]}={_short(value)}" for key, value in values.items())
        why = f" ({outcome.reason})" if outcome.reason else ""
        return (
            f"trial {trial.number:4d} [{done}/{self.tune['trials']}] {outcome.state:8s} {value} "
            f"epochs {outcome.epochs} {outcome.seconds:.1f} s  {shown}{why}"
        )


def write_trial_config(path: Path, config, number: int, study_name: str) -> None:
    """The trial's resolved YAML, which `train` reads (and a user re-runs by hand)."""
    from pipeline.core import fileio

    fileio.atomic_write_text(
        path,
        f"# Trial {number} of study {study_name!r}: the fully resolved config; `python -m pipeline train "
        f"{path.name}` re-runs it.\n" + config_lib.dump_yaml(config),
    )


def _inside(distribution, value) -> bool:
    """Whether a value lies in a distribution (a choice it holds, a number within its range)."""
    try:
        return distribution._contains(distribution.to_internal_repr(value))
    except (ValueError, TypeError):
        return False


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
