"""Several machines share one study through PostgreSQL: two tuner processes, each with its own run root,
one database, no duplicate and no lost trial. Starts a private PostgreSQL cluster (Debian's package) on
127.0.0.1 in a temporary directory and stops it after; skipped when the binaries are absent."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest

from pipeline.tune import study as study_lib

pytestmark = pytest.mark.slow
HERE = Path(__file__).resolve().parent
PROJECT = HERE.parents[1]
STUB = [sys.executable, str(HERE / "stub_train.py")]


def postgres_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(versions[-1]).parent if versions else None


@contextlib.contextmanager
def postgres_server():
    """A throw-away cluster: trust authentication, 127.0.0.1 and a free port; yields its URL."""
    binaries = postgres_bin()
    if binaries is None:
        pytest.skip("PostgreSQL binaries not found (apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="tune-pg-"))
    as_user = []
    if os.geteuid() == 0:  # initdb refuses root: run the cluster as the package's `postgres` user
        shutil.chown(root, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data = root / "data"
    subprocess.run(
        [*as_user, binaries / "initdb", "-D", data, "-A", "trust", "-U", "tune"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    options = f"-h 127.0.0.1 -p {port} -k {root}"
    subprocess.run(
        [*as_user, binaries / "pg_ctl", "-D", data, "-o", options, "-l", root / "log", "-w", "start"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    try:
        yield f"postgresql://tune@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_user, binaries / "pg_ctl", "-D", data, "-m", "immediate", "stop"], capture_output=True, timeout=60
        )
        shutil.rmtree(root, ignore_errors=True)


def test_two_tuners_on_two_run_roots_share_one_postgres_study(tmp_path):
    pytest.importorskip("psycopg2")
    experiment = tmp_path / "search.yaml"
    experiment.write_text(
        f"base: {PROJECT / 'experiments' / 'tiny.yaml'}\ntrain: {{epochs: 3}}\ntune:\n  trials: 8\n"
        "  pruner: {name: none}\n  space:\n"
        "    train.optimizer.learning_rate: {type: categorical, choices: [0.001, 0.003, 0.01, 0.03, 0.1]}\n"
        "    train.batch_size: {type: categorical, choices: [128, 256]}\n"
    )
    with postgres_server() as url:

        def tuner(root: str) -> subprocess.Popen:
            code = (
                "import sys\nfrom pipeline.tune import trial\n"
                f"trial.TRAIN_COMMAND = {STUB!r}\nfrom pipeline import cli\n"
                f"sys.exit(cli.main(['tune', {str(experiment)!r}, '--study', {str(tmp_path / root)!r}, "
                f"'--storage', {url!r}]))\n"
            )
            env = dict(os.environ, STUB_EPOCH_SECONDS="0.2")
            return subprocess.Popen(
                [sys.executable, "-c", code],
                cwd=PROJECT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )

        first = tuner("machine_a")
        time.sleep(1.0)
        second = tuner("machine_b")
        outputs = [process.communicate(timeout=300)[0] for process in (first, second)]
        assert [first.returncode, second.returncode] == [0, 0], outputs
        study = optuna.load_study(study_name="search", storage=study_lib.open_storage(url, tmp_path))
        counted = [trial for trial in study.trials if trial.state.name in ("COMPLETE", "PRUNED")]
        assert len(counted) == 8 and "RUNNING" not in study_lib.counts(study)
        assert len({tuple(sorted(trial.params.items())) for trial in counted}) == 8  # no duplicate
        owners = {trial.user_attrs["owner"]["pid"] for trial in counted}
        assert len(owners) == 2, "both tuners ran trials"
        for root in ("machine_a", "machine_b"):  # each machine keeps the run directories of its own trials
            mine = [
                t
                for t in counted
                if t.user_attrs["owner"]["pid"] in owners
                and (tmp_path / root / t.user_attrs["run_dir"] / "metrics.json").is_file()
            ]
            assert mine
        assert sum((tmp_path / root / "trials").is_dir() for root in ("machine_a", "machine_b")) == 2
