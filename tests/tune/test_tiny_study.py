"""End to end with the real `train` on `tiny` (synthetic data): each trial a process that imports TensorFlow,
so these are `slow` (`make test-slow`). The fast equivalents on a stub trainer are in test_search.py."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from pipeline.tune import study as study_lib

PROJECT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(PROJECT / "tests"))
from helpers import LEAN_RUN  # noqa: E402

pytestmark = pytest.mark.slow

SPACE = """
train: {epochs: 3}
dataset: {validation_split: 0.2}
tune:
  trials: 4
  pruner: {name: none}
  space:
    train.optimizer.learning_rate: {type: float, low: 1.0e-3, high: 3.0e-2, log: true}
    train.batch_size: {type: categorical, choices: [32, 64]}
"""


def experiment(tmp_path) -> str:
    path = tmp_path / "tiny_search.yaml"
    path.write_text(f"base: {PROJECT / 'experiments' / 'tiny.yaml'}\n{SPACE}")
    return str(path)


def tune_command(tmp_path, data_env, study_dir) -> list[str]:
    sets = [item for override in (*data_env, *LEAN_RUN) for item in ("--set", override)]
    return [sys.executable, "-m", "pipeline", "tune", experiment(tmp_path), "--study", str(study_dir), *sets]


def best_epoch(run_dir: Path) -> float:
    with open(run_dir / "history.csv") as handle:
        return max(float(row["val_accuracy"]) for row in csv.DictReader(handle))


def load(study_dir) -> optuna.Study:
    return optuna.load_study(study_name="search", storage=study_lib.open_storage(None, study_dir))


def test_four_trials_on_tiny_and_best_yaml_reproduces_the_metric(tmp_path, data_env):
    study_dir = tmp_path / "study"
    subprocess.run(tune_command(tmp_path, data_env, study_dir), cwd=PROJECT, check=True, timeout=600)
    study = load(study_dir)
    assert study_lib.counts(study) == {"COMPLETE": 4}
    assert study.trials[0].params["train.optimizer.learning_rate"] == 0.001  # tiny's own rate: the baseline
    best = max(study.trials, key=lambda trial: trial.value)
    best_yaml = yaml.safe_load((study_dir / "best.yaml").read_text())
    assert best_yaml["train"]["batch_size"] == best.params["train.batch_size"]
    again = tmp_path / "again"
    subprocess.run(
        [sys.executable, "-m", "pipeline", "train", str(study_dir / "best.yaml"), "--run-dir", str(again)],
        cwd=PROJECT,
        check=True,
        timeout=300,
    )
    assert best_epoch(again) == pytest.approx(best.value, abs=1e-6)  # same seed on CPU: the same metric


def test_kill_9_mid_trial_then_the_same_command_ends_with_exactly_the_trials(tmp_path, data_env):
    study_dir = tmp_path / "study"
    command = tune_command(tmp_path, data_env, study_dir)
    tuner = subprocess.Popen(command, cwd=PROJECT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    history = study_dir / "trials" / "0001" / "history.csv"
    deadline = time.monotonic() + 300
    while not (history.is_file() and len(history.read_text().splitlines()) >= 3) and time.monotonic() < deadline:
        time.sleep(0.1)  # two epochs logged: the first one's backup is written
    tuner.send_signal(signal.SIGKILL)
    tuner.wait()
    assert study_lib.counts(load(study_dir)).get("RUNNING") == 1
    subprocess.run(command, cwd=PROJECT, check=True, timeout=600, stdout=subprocess.DEVNULL)
    study = load(study_dir)
    assert study_lib.counts(study) == {"COMPLETE": 4, "FAIL": 1}
    resumed = next(trial for trial in study.trials if trial.user_attrs.get("resumes") == 1)
    assert resumed.user_attrs["run_dir"] == "trials/0001" and resumed.state.name == "COMPLETE"
    log = (study_dir / "trials" / "0001.log").read_text()
    assert "resuming after epoch" in log
    rows = list(csv.DictReader(open(study_dir / "trials" / "0001" / "history.csv")))
    assert [row["epoch"] for row in rows] == ["0", "1", "2"]
    assert os.environ.get("DATA_MIRROR")


def test_a_run_killed_around_its_first_epoch_resumes_without_a_repeated_history_row(tmp_path, data_env):
    """A trial is pruned or killed at any moment: killed after epoch 1's CSV row but possibly before its backup
    (the race the kill -9 test above once hit), `train` must resume with one row per epoch."""
    run_dir = tmp_path / "run"
    sets = [item for override in (*data_env, *LEAN_RUN, "train.epochs=3") for item in ("--set", override)]
    command = [sys.executable, "-m", "pipeline", "train", "tiny", "--run-dir", str(run_dir), *sets]
    process = subprocess.Popen(command, cwd=PROJECT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    history = run_dir / "history.csv"
    deadline = time.monotonic() + 300
    while not (history.is_file() and len(history.read_text().splitlines()) >= 2) and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    subprocess.run(command, cwd=PROJECT, check=True, timeout=300, stdout=subprocess.DEVNULL)
    with open(history) as handle:
        assert [row["epoch"] for row in csv.DictReader(handle)] == ["0", "1", "2"]
