"""`python -m pipeline launch`: N local workers with TF_CONFIG, prefixed output, failure handling.

Stand-in worker programs (python -c) replace `python -m pipeline train`, so these tests need no
TensorFlow and take a few seconds; tests/distribute/test_distribute.py runs real TensorFlow workers through launch.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time

import pytest

from pipeline import config as config_lib
from pipeline.distribute import launch

PRINT_TF_CONFIG = """
import json, os, sys
config = json.loads(os.environ["TF_CONFIG"])
print("task", config["task"]["index"], json.dumps(config["cluster"]["worker"]), "args", *sys.argv[1:])
print("second line", file=sys.stderr)
"""

# Worker 1 fails at once with status 3; worker 0 would run for a minute.
ONE_FAILS = """
import json, os, sys, time
index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
if index == 1:
    print("worker one gives up")
    sys.exit(3)
time.sleep(60)
"""


def run_launch(workers, program, argv=(), **kwargs):
    out, err = io.StringIO(), io.StringIO()
    status = launch.launch(workers, list(argv), command=[sys.executable, "-c", program], out=out, err=err, **kwargs)
    return status, out.getvalue().splitlines(), err.getvalue()


def test_each_worker_gets_its_tf_config_and_prefixed_output():
    status, lines, err = run_launch(3, PRINT_TF_CONFIG, ["tiny", "--run-dir", "runs/x"])
    assert status == 0 and err == ""
    tasks = sorted(line for line in lines if " task " in line)
    assert len(tasks) == 3 and len(lines) == 6
    clusters = set()
    for index, line in enumerate(tasks):
        prefix, _, rest = line.partition("] ")
        assert prefix == f"[worker {index}"
        words = rest.split(" ", 2)
        assert words[:2] == ["task", str(index)]
        cluster, _, args = words[2].partition(" args ")
        clusters.add(cluster)
        assert args == "tiny --run-dir runs/x"
    workers = json.loads(clusters.pop())
    assert not clusters, "every worker must see the same cluster"
    assert len(set(workers)) == 3 and all(address.startswith("localhost:") for address in workers)
    assert sum(line.endswith("] second line") for line in lines) == 3  # stderr is prefixed too


def test_a_failing_worker_stops_the_others_and_is_named():
    start = time.monotonic()
    status, lines, err = run_launch(2, ONE_FAILS, stop_grace=5)
    assert status == 3
    assert "[worker 1] worker one gives up" in lines
    assert err.strip() == "launch: worker 1 exited with status 3; stopped worker(s) 0"
    assert time.monotonic() - start < 20, "worker 0 (a 60 s sleep) should have been stopped"


def test_a_worker_killed_by_a_signal_reports_128_plus_n():
    program = (
        "import os, signal, time, json\n"
        "if json.loads(os.environ['TF_CONFIG'])['task']['index'] == 0: os.kill(os.getpid(), signal.SIGKILL)\n"
        "time.sleep(60)"
    )
    status, _, err = run_launch(2, program, stop_grace=5)
    assert status == 128 + 9
    assert err.strip() == "launch: worker 0 was killed by SIGKILL; stopped worker(s) 1"


def test_a_worker_ignoring_sigterm_is_killed_after_the_grace_period():
    program = (
        "import json, os, signal, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "if json.loads(os.environ['TF_CONFIG'])['task']['index'] == 1: sys.exit(5)\n"
        "time.sleep(60)"
    )
    start = time.monotonic()
    status, _, err = run_launch(2, program, stop_grace=0.5)
    assert status == 5 and "worker 1 exited with status 5" in err
    assert time.monotonic() - start < 15


def test_timeout_stops_every_worker():
    status, _, err = run_launch(2, "import time; time.sleep(60)", timeout=1, stop_grace=2)
    assert status == 124
    assert err.strip() == "launch: timed out after 1 s; stopped all workers"


def test_workers_must_be_positive():
    with pytest.raises(ValueError, match=r"workers must be at least 1\. Received: workers=0"):
        launch.launch(0, [])


def test_run_validates_the_config_once_and_shares_one_run_dir(monkeypatch, capsys):
    from pipeline import cli

    calls = []
    monkeypatch.setattr(launch, "launch", lambda workers, argv: calls.append((workers, argv)) or 0)
    assert cli.main(["launch", "--workers", "2", "tiny", "--set", "train.epochs=1"]) == 0
    ((workers, argv),) = calls
    assert workers == 2 and argv[:3] == ["tiny", "--set", "train.epochs=1"] and argv[3] == "--run-dir"
    run_dir = argv[4]
    assert "/runs/tiny/" in run_dir, "the default run directory is chosen once, by the launcher"

    calls.clear()
    cli.main(["launch", "--workers", "2", "tiny", "--run-dir", "runs/mine"])
    assert calls[0][1] == ["tiny", "--run-dir", "runs/mine"]

    capsys.readouterr()
    assert cli.main(["launch", "--workers", "2", "tiny", "--set", "train.epoch=1"]) == 2
    assert "train.epoch" in capsys.readouterr().err
    assert cli.main(["launch", "--workers", "0", "tiny"]) == 2
    assert "--workers must be at least 1. Received: --workers 0" in capsys.readouterr().err
    # Validated exactly as `train` validates (the registries too): a misspelt model starts no process.
    assert cli.main(["launch", "--workers", "2", "tiny", "--set", "model.name=tiny_cnnn"]) == 2
    assert "model.name: unknown model 'tiny_cnnn'" in capsys.readouterr().err
    assert len(calls) == 1, "a bad config must not start any worker"


def test_launch_imports_no_tensorflow():
    code = (
        "import sys; import pipeline.distribute.launch; assert 'tensorflow' not in sys.modules, 'tensorflow imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=launch.PROJECT_ROOT)


def test_run_refuses_a_strategy_that_would_train_each_worker_alone(monkeypatch):
    import types

    args = types.SimpleNamespace(workers=2, experiment="tiny", overrides=[], run_dir=None)
    monkeypatch.setattr(launch, "launch", lambda workers, argv: pytest.fail("no worker may start"))
    with pytest.raises(
        config_lib.ConfigError,
        match=r"needs distribute.strategy auto or multi_worker .* "
        r"Received: distribute.strategy='mirrored'",
    ):
        launch.run(args, name="tiny", strategy="mirrored")


def test_a_progress_bar_redrawn_with_carriage_returns_becomes_prefixed_lines():
    program = "import sys; sys.stderr.write('\\rscan 0%\\rscan 100%\\n'); print('done')"
    status, lines, _ = run_launch(1, program)
    assert status == 0 and lines == ["[worker 0] scan 0%", "[worker 0] scan 100%", "[worker 0] done"]
