"""The study's parts on their own: pruners, samplers' grid, choices that are lists, stale trials, seeds."""

from __future__ import annotations

import datetime
import socket
import subprocess
import sys

import optuna
import pytest

from pipeline.tune import command
from pipeline.tune import space as space_lib
from pipeline.tune import study as study_lib
from pipeline.tune import trial as trial_lib

TUNE = {"pruner": {"name": "median", "warmup_epochs": 2, "startup_trials": 3}, "sampler": {"name": "tpe"}}


def test_pruners_take_the_section_and_the_epoch_count():
    median = study_lib.make_pruner(TUNE, epochs=10)
    assert isinstance(median, optuna.pruners.MedianPruner)
    assert median._n_warmup_steps == 3 and median._n_startup_trials == 3  # steps are 1-based epochs
    hyperband = study_lib.make_pruner({"pruner": {"name": "hyperband"}}, epochs=7)
    assert isinstance(hyperband, optuna.pruners.HyperbandPruner) and hyperband._max_resource == 7
    assert isinstance(study_lib.make_pruner({"pruner": {"name": "none"}}, epochs=7), optuna.pruners.NopPruner)


def test_grid_values_list_choices_and_distinct_points():
    step = space_lib.Param("train.label_smoothing", "float", low=0.0, high=0.2, step=0.05)
    sizes = space_lib.Param("input.image_size", "categorical", choices=([16, 16], [24, 24]))
    assert space_lib.grid_values(step) == [0.0, 0.05, 0.1, 0.15, 0.2]
    assert study_lib.distinct_points([step, sizes]) == 10
    assert study_lib.distinct_points([space_lib.Param("x", "float", low=0.0, high=1.0)]) is None
    encoded = study_lib.distributions([sizes])["input.image_size"].choices
    assert encoded == ("[16, 16]", "[24, 24]")
    assert study_lib.decode({"input.image_size": "[24, 24]"}, [sizes]) == {"input.image_size": [24, 24]}


def frozen(owner=None, heartbeat=None):
    return optuna.trial.FrozenTrial(
        number=0,
        state=optuna.trial.TrialState.RUNNING,
        value=None,
        values=None,
        datetime_start=datetime.datetime.now(),
        datetime_complete=None,
        params={},
        distributions={},
        user_attrs={"owner": owner, "heartbeat": heartbeat},
        system_attrs={},
        intermediate_values={},
        trial_id=0,
    )


def test_a_trial_is_stale_when_its_owner_is_gone_or_silent():
    me = study_lib.owner()
    assert study_lib.stale_reason(frozen(me, heartbeat=0.0)) is None  # alive on this host: never stale
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    gone = dict(me, pid=int(finished.stdout), start="1")
    assert study_lib.stale_reason(frozen(gone)).startswith("interrupted: its tuner process")
    elsewhere = {"host": socket.gethostname() + "-other", "pid": 1, "start": "1"}
    assert study_lib.stale_reason(frozen(elsewhere, heartbeat=1000.0), now=1000.0 + 60) is None
    reason = study_lib.stale_reason(frozen(elsewhere, heartbeat=1000.0), now=1000.0 + study_lib.GRACE_SECONDS + 1)
    assert reason.startswith("interrupted: no heartbeat from")


def test_sampler_seeds_per_process():
    assert command._seed(0, existing=0, storage_url=None) == 0  # a fresh study on one machine: the seed as given
    assert command._seed(0, existing=5, storage_url=None) == 5
    assert command._seed(None, existing=5, storage_url=None) is None
    shared = command._seed(0, existing=0, storage_url="postgresql://x/y")
    assert isinstance(shared, int) and shared != 0


def test_history_reading_keeps_complete_lines_and_the_last_row_of_an_epoch(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("epoch,val_accuracy\n0,0.5\n0,0.55\n1,0.6\n2,0.")  # a repeated epoch, a line being written
    assert trial_lib.read_history(path, "val_accuracy") == [0.55, 0.6]
    assert trial_lib.read_history(tmp_path / "missing.csv", "val_accuracy") == []
    assert trial_lib.best([0.55, 0.6], maximize=True) == 0.6 and trial_lib.best([0.3, 0.2], maximize=False) == 0.2


def test_space_metric_and_direction():
    assert space_lib.direction("val_loss", "auto") == "minimize"
    assert space_lib.direction("val_accuracy", "auto") == "maximize"
    assert space_lib.direction("val_loss", "maximize") == "maximize"
    with pytest.raises(space_lib.ConfigError, match="step and log cannot be combined"):
        space_lib.parse_space(
            {"train.optimizer.learning_rate": {"type": "float", "low": 0.001, "high": 0.1, "log": True, "step": 0.01}},
            {"train": {"optimizer": {"learning_rate": 0.001}}},
            check=lambda data: None,
        )
