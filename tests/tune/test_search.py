"""The search loop on a stub trainer (tests/tune/stub_train.py: the files and resume of a run, no TensorFlow):
exact trial counts, the baseline first, best.yaml, pruning, failures, two workers, kill -9 and resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from pipeline import cli
from pipeline.tune import study as study_lib
from pipeline.tune import trial as trial_lib

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parents[1]
STUB = [sys.executable, str(HERE / "stub_train.py")]


def experiment(tmp_path, space: str, **tune) -> str:
    lines = "".join(f"  {key}: {value}\n" for key, value in tune.items())
    path = tmp_path / "search.yaml"
    path.write_text(
        f"base: {PROJECT / 'experiments' / 'tiny.yaml'}\ntrain: {{epochs: 4, optimizer: {{learning_rate: 0.001}}}}\n"
        f"tune:\n{lines}  space:\n{space}"
    )
    return str(path)


DISCRETE = (
    "    train.optimizer.learning_rate: {type: categorical, choices: [0.001, 0.01, 0.9]}\n"
    "    train.batch_size: {type: categorical, choices: [128, 256]}\n"
)


def load(study_dir: Path) -> optuna.Study:
    return optuna.load_study(study_name="search", storage=study_lib.open_storage(None, study_dir))


def states(study: optuna.Study) -> dict:
    return study_lib.counts(study)


def alive(pid: int) -> bool:
    """Whether a process runs (a zombie waiting for its reaper does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def stub(monkeypatch):
    monkeypatch.setattr(trial_lib, "TRAIN_COMMAND", STUB)
    monkeypatch.setenv("STUB_EPOCH_SECONDS", "0.01")


def test_four_trials_baseline_first_best_yaml_and_report(tmp_path, stub, capsys):
    study_dir = tmp_path / "study"
    args = ["tune", experiment(tmp_path, DISCRETE, trials=4, pruner="{name: none}"), "--study", str(study_dir)]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    study = load(study_dir)
    assert states(study) == {"COMPLETE": 4}
    baseline = study.trials[0]
    assert baseline.user_attrs["baseline"] and baseline.params == {
        "train.optimizer.learning_rate": 0.001,
        "train.batch_size": 256,
    }
    assert baseline.value == pytest.approx(1.0)  # the stub's best point: epoch 4 of 4 reaches quality 1
    best = yaml.safe_load((study_dir / "best.yaml").read_text())
    assert best["train"]["optimizer"]["learning_rate"] == 0.001 and best["train"]["batch_size"] == 256
    assert "tune" in best and best["tune"]["space"] == {}  # a plain training config: no search in it
    assert "gain +0.0000" in out and "| trial | val_accuracy | epochs |" in out
    assert out.count(" COMPLETE ") == 4
    for trial in study.trials:  # every trial is a normal run directory
        run_dir = study_dir / trial.user_attrs["run_dir"]
        assert (run_dir / "config.yaml").is_file() and (run_dir / "metrics.json").is_file()
    assert sorted(path.name for path in (study_dir / "tensorboard").iterdir())[:4] == ["0000", "0001", "0002", "0003"]
    # The same command again: the study is complete, nothing runs; --status reports it.
    assert cli.main(args) == 0 and cli.main(["tune", "--status", str(study_dir)]) == 0
    assert states(load(study_dir)) == {"COMPLETE": 4}
    assert "4/4 trials done (4 COMPLETE)" in capsys.readouterr().out
    # `report` takes the study directory: one row per trial.
    assert cli.main(["report", str(study_dir)]) == 0
    assert capsys.readouterr().out.count("| search |") == 4


def test_a_hopeless_trial_is_pruned_with_its_epoch_and_reason(tmp_path, stub, monkeypatch):
    monkeypatch.setenv("STUB_EPOCH_SECONDS", "0.25")  # epochs long enough to be watched one by one
    monkeypatch.setattr(trial_lib, "POLL_SECONDS", 0.02)
    study_dir = tmp_path / "study"
    space = "    train.optimizer.learning_rate: {type: categorical, choices: [0.001, 0.9, 0.5]}\n"
    path = experiment(
        tmp_path, space, trials=3, sampler="{name: grid}", pruner="{name: median, warmup_epochs: 1, startup_trials: 1}"
    )
    assert cli.main(["tune", path, "--study", str(study_dir)]) == 0
    study = load(study_dir)
    finished = [trial for trial in study.trials if trial.state.is_finished() and trial.state.name != "FAIL"]
    assert len(finished) == 3
    for trial in finished:  # the baseline (1e-3) runs first and sets the median; 0.9 and 0.5 are hopeless
        hopeless = trial.params["train.optimizer.learning_rate"] != 0.001
        assert trial.state.name == ("PRUNED" if hopeless else "COMPLETE"), trial
        if hopeless:  # pruned at the first epoch past the warm-up, the run stopped there
            assert trial.user_attrs["pruned_at_epoch"] == 2
            assert trial.user_attrs["prune_reason"] == "median pruner after epoch 2: val_accuracy 0.0250"
            history = (study_dir / trial.user_attrs["run_dir"] / "history.csv").read_text().splitlines()
            assert len(history) - 1 <= 3


def test_consecutive_failures_stop_the_search_with_the_reason(tmp_path, stub, monkeypatch, capsys):
    monkeypatch.setenv("STUB_FAIL", "1")
    space = "    train.optimizer.learning_rate: {type: float, low: 0.0001, high: 0.01, log: true}\n"
    study_dir = tmp_path / "study"
    assert cli.main(["tune", experiment(tmp_path, space, trials=3, max_failures=2), "--study", str(study_dir)]) == 2
    error = capsys.readouterr().err
    assert (
        "error: 2 trials failed in a row (tune.max_failures); the last, trial 1: exit code 2: training diverged"
        in error
    )
    assert states(load(study_dir)) == {"FAIL": 2}


def test_two_workers_share_the_study_without_duplicate_params(tmp_path, stub):
    study_dir = tmp_path / "study"
    path = experiment(tmp_path, DISCRETE, trials=5, pruner="{name: none}")
    assert cli.main(["tune", path, "--study", str(study_dir), "--workers", "2"]) == 0
    study = load(study_dir)
    counted = [trial for trial in study.trials if trial.state.name in ("COMPLETE", "PRUNED")]
    assert len(counted) == 5 and "RUNNING" not in states(study)
    keys = [tuple(sorted(trial.params.items())) for trial in counted]
    assert len(set(keys)) == 5, keys
    owners = {trial.user_attrs["owner"]["pid"] for trial in counted}
    assert owners == {os.getpid()}


@pytest.mark.parametrize("how", ["kill -9 of the tuner", pytest.param("Ctrl-C", marks=pytest.mark.slow)])
def test_an_interrupted_tuner_then_the_same_command_gives_the_exact_count(tmp_path, how):
    study_dir = tmp_path / "study"
    path = experiment(tmp_path, DISCRETE, trials=3, pruner="{name: none}")
    code = (
        "import sys\nfrom pipeline.tune import trial\n"
        f"trial.TRAIN_COMMAND = {STUB!r}\n"
        "from pipeline import cli\n"
        f"code = cli.main(['tune', {path!r}, '--study', {str(study_dir)!r}])\n"
        "assert 'tensorflow' not in sys.modules, 'the tuner imported TensorFlow'\n"
        "sys.exit(code)\n"
    )
    env = dict(os.environ, STUB_EPOCH_SECONDS="0.05", STUB_HOLD="0001:2")  # trial 1 waits after 2 epochs
    output = open(tmp_path / "tuner.log", "w")  # noqa: SIM115 (the process writes it; closed below)
    tuner = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=PROJECT,
        env=env,
        stdout=output,
        stderr=output,
        start_new_session=True,
        # A shell's background job starts with SIGINT ignored, and Python keeps it so: give the tuner the default.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    history = study_dir / "trials" / "0001" / "history.csv"
    deadline = time.monotonic() + 60
    while not (history.is_file() and len(history.read_text().splitlines()) >= 3) and time.monotonic() < deadline:
        time.sleep(0.05)
    if how == "Ctrl-C":  # the terminal signals the whole process group: the tuner and its trial
        os.killpg(tuner.pid, signal.SIGINT)
    else:
        tuner.send_signal(signal.SIGKILL)
    tuner.wait()
    rows = len(history.read_text().splitlines())
    trial_pid = int((study_dir / "trials" / "0001" / "stub.pid").read_text())
    deadline = time.monotonic() + 10
    while alive(trial_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(trial_pid), "the trial process outlived its tuner"  # the kernel's PR_SET_PDEATHSIG
    output.close()
    assert states(load(study_dir)).get("RUNNING") == 1, (tmp_path / "tuner.log").read_text()

    subprocess.run([sys.executable, "-c", code], cwd=PROJECT, env=env, check=True, stdout=subprocess.DEVNULL)
    study = load(study_dir)
    assert states(study) == {"COMPLETE": 3, "FAIL": 1}
    interrupted = next(trial for trial in study.trials if trial.state.name == "FAIL")
    assert interrupted.number == 1 and interrupted.user_attrs["fail_reason"].startswith("interrupted: its tuner")
    assert "epochs" not in interrupted.user_attrs  # never told: it was left RUNNING, then found interrupted
    resumed = next(trial for trial in study.trials if trial.user_attrs.get("resumes") == 1)
    assert resumed.state.name == "COMPLETE" and resumed.params == interrupted.params
    assert resumed.user_attrs["run_dir"] == "trials/0001"
    run_dir = study_dir / "trials" / "0001"
    starts = [int(line) for line in (run_dir / "starts.txt").read_text().split()]
    assert starts[0] == 0 and starts[1] == rows - 1  # resumed after its last completed epoch
    assert [line.split(",")[0] for line in (run_dir / "history.csv").read_text().splitlines()[1:]] == list("0123")
