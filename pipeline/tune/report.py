"""What a study shows: the best trials as a table, parameter importances, the gain over the baseline trial,
`best.yaml` (the best trial's config, ready for `train`) and every trial in TensorBoard's HParams dashboard
(`STUDY/tensorboard/`). TensorFlow-free: the events are written with TensorBoard's own writer.
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

import optuna

from pipeline.config import rundir
from pipeline.core import fileio

BEST_FILE = "best.yaml"
TENSORBOARD_DIR = "tensorboard"
TOP = 5  # trials in the table


def _value(trial) -> str:
    return f"{trial.value:.4f}" if trial.value is not None else "-"


def best_trials(study: optuna.Study, count: int = TOP) -> list:
    """The COMPLETE trials, best first."""
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    reverse = study.direction == optuna.study.StudyDirection.MAXIMIZE
    return sorted(complete, key=lambda trial: trial.value, reverse=reverse)[:count]


def baseline_trial(study: optuna.Study):
    """The finished baseline trial (the experiment's own values), or None."""
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if trial.user_attrs.get("baseline"):
            return trial
    return None


def importances(study: optuna.Study) -> dict:
    """Optuna's parameter importances (fANOVA) over the COMPLETE trials; {} while fewer than two finished
    or the parameters never varied."""
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < 2:
        return {}
    try:
        return optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError, ZeroDivisionError):
        return {}


def status_text(study: optuna.Study, study_dir: Path, metric: str, trials_wanted: int) -> str:
    """The status report: counts by state, the best trials, importances, gain over the baseline."""
    states: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        states[trial.state.name] = states.get(trial.state.name, 0) + 1
    done = states.get("COMPLETE", 0) + states.get("PRUNED", 0)
    lines = [
        f"study {study.study_name!r} in {study_dir}: {done}/{trials_wanted} trials done ("
        + ", ".join(f"{count} {name}" for name, count in sorted(states.items()))
        + f"); {study.direction.name.lower()} {metric}"
    ]
    top = best_trials(study)
    if top:
        keys = list(top[0].params)
        lines += ["", "| trial | " + metric + " | epochs | " + " | ".join(keys) + " |"]
        lines.append("|" + " --- |" * (3 + len(keys)))
        for trial in top:
            cells = [str(trial.number), _value(trial), str(trial.user_attrs.get("epochs", "-"))]
            cells += [_cell(trial.params.get(key)) for key in keys]
            lines.append("| " + " | ".join(cells) + " |")
    ranked = importances(study)
    if ranked:
        lines += ["", "importance: " + ", ".join(f"{key} {value:.2f}" for key, value in ranked.items())]
    baseline = baseline_trial(study)
    if top and baseline is not None:
        gain = top[0].value - baseline.value
        lines += [
            "",
            f"baseline (trial {baseline.number}, the experiment's own values): {metric} {baseline.value:.4f}; "
            f"best (trial {top[0].number}): {top[0].value:.4f}; gain {gain:+.4f}",
        ]
    failed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))
    real = [trial for trial in failed if not _bookkeeping(trial)]
    if real:
        lines += [
            "",
            f"failed trials: {len(real)}; last: trial {real[-1].number}: "
            f"{real[-1].user_attrs.get('fail_reason', 'no reason recorded')}",
        ]
    if top and (Path(study_dir) / BEST_FILE).is_file():
        lines += [
            "",
            f"best config: {Path(study_dir) / BEST_FILE} (python -m pipeline train {Path(study_dir) / BEST_FILE})",
        ]
    return "\n".join(lines) + "\n"


def _bookkeeping(trial) -> bool:
    """A FAIL recorded only to refuse a proposal (surplus, duplicate) or to hand an interrupted trial on."""
    reason = trial.user_attrs.get("fail_reason", "")
    return reason == "surplus" or reason.startswith(("duplicate of", "interrupted"))


def _cell(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def write_best(study: optuna.Study, study_dir: Path) -> Path | None:
    """Copies the best trial's resolved config to STUDY/best.yaml (None before any trial completed)."""
    top = best_trials(study, 1)
    if not top:
        return None
    run_dir = Path(study_dir) / top[0].user_attrs["run_dir"]
    layout = rundir.RunLayout(run_dir)
    source = layout.config if layout.config.is_file() else run_dir.with_suffix(".yaml")
    if not source.is_file():  # the trial ran on another machine: its run directory is there
        return None
    text = source.read_text()
    header = (
        f"# Best trial {top[0].number} of study {study.study_name!r} ({top[0].value:.4f}); "
        f"`python -m pipeline train best.yaml` trains it.\n"
    )
    fileio.atomic_write_text(Path(study_dir) / BEST_FILE, header + text)
    return Path(study_dir) / BEST_FILE


def write_hparams(study: optuna.Study, study_dir: Path, metric: str) -> Path:
    """Every finished trial as an HParams session under STUDY/tensorboard/<NNNN>/ (its parameters, state,
    per-epoch metric and final value); rewritten whole on each call, so it always matches the storage."""
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.plugins.hparams import summary_v2

    root = Path(study_dir) / TENSORBOARD_DIR
    shutil.rmtree(root, ignore_errors=True)
    trials = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished() and not _bookkeeping(t)]
    keys = list(dict.fromkeys(key for trial in trials for key in trial.params))

    def write(directory: Path, summary, step: int = 0, wall_time: float | None = None) -> None:
        writer = EventFileWriter(str(directory))
        writer.add_event(event_pb2.Event(summary=summary, step=step, wall_time=wall_time or time.time()))
        writer.close()

    config = summary_v2.hparams_config_pb(
        [summary_v2.HParam(key) for key in keys] + [summary_v2.HParam("state")],
        [summary_v2.Metric(f"tune/{metric}"), summary_v2.Metric(f"tune/{metric}_per_epoch")],
    )
    write(root, config)
    for trial in trials:
        directory = root / f"{trial.number:04d}"
        hparams = {key: _scalar(value) for key, value in trial.params.items()}
        hparams["state"] = trial.state.name
        writer = EventFileWriter(str(directory))
        start = trial.datetime_start.timestamp() if trial.datetime_start else time.time()
        session = summary_v2.hparams_pb(hparams, trial_id=f"{trial.number:04d}", start_time_secs=start)
        writer.add_event(event_pb2.Event(summary=session, wall_time=start))
        for step, value in sorted(trial.intermediate_values.items()):
            scalar = summary_pb2.Summary(
                value=[summary_pb2.Summary.Value(tag=f"tune/{metric}_per_epoch", simple_value=value)]
            )
            writer.add_event(event_pb2.Event(summary=scalar, step=step, wall_time=start + step))
        final = (
            trial.value
            if trial.value is not None
            else (trial.intermediate_values[max(trial.intermediate_values)] if trial.intermediate_values else math.nan)
        )
        scalar = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=f"tune/{metric}", simple_value=final)])
        writer.add_event(event_pb2.Event(summary=scalar, step=0, wall_time=start))
        writer.close()
    return root


class EventFileWriter:
    """An events file in a directory, TensorFlow-free: TensorBoard's EventFileWriter imports TensorFlow when it
    is installed (tensorboard.compat.tf, for gfile), its RecordWriter only packs the records."""

    def __init__(self, directory: str):
        from tensorboard.compat.proto import event_pb2
        from tensorboard.summary.writer.record_writer import RecordWriter

        Path(directory).mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{time.time():.0f}.tune"
        self._writer = RecordWriter(open(Path(directory) / name, "wb"))  # noqa: SIM115 (closed in close())
        self.add_event(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

    def add_event(self, event) -> None:
        self._writer.write(event.SerializeToString())

    def close(self) -> None:
        self._writer.flush()
        self._writer.close()


def _scalar(value):
    return value if isinstance(value, (bool, int, float, str)) else str(value)
