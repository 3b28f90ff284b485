"""Training runs end to end on synthetic data: run-directory files, resume after SIGKILL, determinism."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import LEAN_RUN

from pipeline import cli
from pipeline import config as config_lib
from pipeline import experiment as experiment_lib
from pipeline import run as train
from pipeline.core import fileio
from pipeline.training import callbacks as run_callbacks

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args) -> int:
    return cli.main([str(a) for a in args])


def sets(*pairs) -> list[str]:
    return [item for pair in pairs for item in ("--set", pair)]


def history_rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "history.csv") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def finished_tiny(synthetic_mirror, tmp_path_factory):
    """A finished 2-epoch tiny run on the synthetic CIFAR-10, with everything on (report, TensorBoard,
    export), trained once for the module: (run directory, the --set overrides it was trained with).
    Tests that write into a run take `tiny_run_copy`."""
    root = tmp_path_factory.mktemp("tiny")
    overrides = [f"dataset.data_dir={root / 'data'}"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DATA_MIRROR", str(synthetic_mirror))
        assert run_cli("train", "tiny", "--run-dir", root / "run", *sets(*overrides)) == 0
    return root / "run", overrides


@pytest.fixture
def tiny_run(finished_tiny, monkeypatch, synthetic_mirror):
    monkeypatch.setenv("DATA_MIRROR", str(synthetic_mirror))
    return finished_tiny[0]


@pytest.fixture
def tiny_overrides(finished_tiny):
    return finished_tiny[1]


@pytest.fixture
def tiny_run_copy(tiny_run, tmp_path):
    return Path(shutil.copytree(tiny_run, tmp_path / "run"))


def test_tiny_run_writes_every_run_directory_file(tiny_run, tiny_overrides):
    for relative in (
        "config.yaml",
        "classes.txt",
        "checkpoints/best.keras",
        "checkpoints/last.keras",
        "backup/training_metadata.json",
        "history.csv",
        "metrics.json",
    ):
        assert (tiny_run / relative).is_file(), relative
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert 0.0 <= metrics["test"]["accuracy"] <= 1.0
    assert np.isfinite(metrics["test"]["loss"])
    assert metrics["epochs_completed"] == 2
    assert metrics["train_seconds"] > 0 and metrics["images_per_second"] > 0
    # The resolved config is complete and reloads to the same config.
    saved = config_lib.from_dict(config_lib.yaml.safe_load((tiny_run / "config.yaml").read_text()))
    assert saved == experiment_lib.load_experiment("tiny", tiny_overrides)
    assert (tiny_run / "classes.txt").read_text().split("\n")[:2] == ["airplane", "automobile"]
    rows = history_rows(tiny_run)
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"} <= set(rows[0])
    # TensorBoard: train and validation scalars, the learning rate among them.
    from tensorboard.backend.event_processing import event_accumulator

    tags = {}
    for split in ("train", "validation"):
        accumulator = event_accumulator.EventAccumulator(str(tiny_run / "tensorboard" / split))
        accumulator.Reload()
        tags[split] = set(accumulator.Tags()["tensors"]) | set(accumulator.Tags()["scalars"])
    assert {"epoch_loss", "epoch_accuracy", "epoch_learning_rate"} <= tags["train"]
    assert {"epoch_loss", "epoch_accuracy"} <= tags["validation"]
    # The SavedModel reloads and predicts like the in-process model.
    import tensorflow as tf

    export_dir = Path(metrics["export"])
    assert export_dir.parent.name == "tiny" and export_dir.name == "1"
    served = tf.saved_model.load(str(export_dir)).signatures["serve_images"]
    model = keras.models.load_model(tiny_run / "checkpoints" / "best.keras")
    images = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    expected = model.predict(images.astype(np.float32), verbose=0)
    got = served(images=tf.constant(images))["probabilities"].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_rerunning_a_finished_run_does_nothing(tiny_run, tiny_overrides, capsys):
    before = {p: p.stat().st_mtime_ns for p in tiny_run.rglob("*") if p.is_file()}
    assert run_cli("train", "tiny", "--run-dir", tiny_run, *sets(*tiny_overrides)) == 0
    assert "finished run" in capsys.readouterr().out
    after = {p: p.stat().st_mtime_ns for p in tiny_run.rglob("*") if p.is_file()}
    assert before == after


def test_run_dir_with_another_config_is_refused(tiny_run, tiny_overrides, capsys):
    code = run_cli("train", "tiny", "--run-dir", tiny_run, *sets(*tiny_overrides, "train.epochs=3"))
    assert code == 2
    error = capsys.readouterr().err
    assert "different config" in error and "train.epochs: 2 -> 3" in error


def test_run_dir_that_is_not_a_run_is_refused(data_env, tmp_path, capsys):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert run_cli("train", "tiny", "--run-dir", tmp_path / "other", *sets(*data_env)) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


def test_missing_dataset_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DATA_MIRROR", str(tmp_path / "empty-mirror"))
    monkeypatch.setattr("pipeline.data.datasets.download", _refuse_download)
    run_dir = tmp_path / "run"
    code = run_cli("train", "tiny", "--run-dir", run_dir, *sets(f"dataset.data_dir={tmp_path / 'data'}"))
    assert code == 2
    error = capsys.readouterr().err
    assert "cifar10" in error and "Looked in" in error and "DATA_MIRROR" in error
    assert not run_dir.exists()


def _refuse_download(url, destination, timeout=60.0):
    raise OSError("network unreachable")


@pytest.mark.slow  # 7-30 s on a 2-core AVX2 VM: make test must stay under 4 min there
def test_same_seed_gives_the_same_metrics(data_env, tmp_path):
    overrides = sets(*data_env, "input.augment.width_shift=0.1", "input.augment.horizontal_flip=true", *LEAN_RUN)
    for name in ("a", "b"):
        assert run_cli("train", "tiny", "--run-dir", tmp_path / name, *overrides) == 0
    first, second = (json.loads((tmp_path / n / "metrics.json").read_text()) for n in ("a", "b"))
    assert first["test"] == second["test"]
    strip = lambda rows: [{k: v for k, v in r.items()} for r in rows]  # noqa: E731
    assert strip(history_rows(tmp_path / "a")) == strip(history_rows(tmp_path / "b"))


@pytest.mark.slow  # 7-30 s on a 2-core AVX2 VM: make test must stay under 4 min there
def test_resume_continues_the_learning_rate_schedule(data_env, tmp_path, monkeypatch, interrupt_training):
    overrides = [
        *data_env,
        "train.epochs=4",
        "train.schedule.name=cosine",
        "train.schedule.warmup_epochs=1",
        *LEAN_RUN,
        "train.batch_size=64",
    ]
    config = experiment_lib.load_experiment("tiny", overrides)
    train.train(config, run_dir=tmp_path / "straight", log=lambda *_: None)

    interrupt_training(2)
    with pytest.raises(KeyboardInterrupt):
        train.train(config, run_dir=tmp_path / "resumed", log=lambda *_: None)
    assert not (tmp_path / "resumed" / "metrics.json").exists()
    metadata = run_callbacks.read_backup_metadata(tmp_path / "resumed" / "backup")
    assert metadata["epoch"] == 2 and not metadata["finished"]
    interrupt_training(None)
    metrics = train.train(config, run_dir=tmp_path / "resumed", log=lambda *_: None)
    assert metrics["epochs_completed"] == 4

    straight, resumed = history_rows(tmp_path / "straight"), history_rows(tmp_path / "resumed")
    assert [int(r["epoch"]) for r in resumed] == [0, 1, 2, 3]
    np.testing.assert_allclose(
        [float(r["learning_rate"]) for r in resumed], [float(r["learning_rate"]) for r in straight], rtol=1e-6
    )
    last = keras.models.load_model(tmp_path / "resumed" / "checkpoints" / "last.keras")
    steps = int(np.ceil(metrics["train_images"] / 64))
    assert int(last.optimizer.iterations.numpy()) == 4 * steps


def _write_experiment(path: Path, mirror_dir: Path, data_dir: Path, epochs: int, batch_size: int = 16) -> Path:
    path.write_text(
        f"dataset: {{name: mnist, validation_split: 0.1, data_dir: {data_dir}, mirror_dir: {mirror_dir}}}\n"
        "model: {name: tiny}\n"
        f"train: {{epochs: {epochs}, batch_size: {batch_size}, callbacks: {{tensorboard: {{enabled: false}}}}}}\n"
        "evaluation: {report: false}\nexport: {enabled: false}\n"
    )
    return path


def _train_command(experiment: Path, run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "pipeline", "train", str(experiment), "--run-dir", str(run_dir)]


# Two TensorFlow processes in sequence (killed, then resumed): `slow`; in `make test` the interrupt tests
# (Ctrl-C at an epoch, a killed save's leftovers) and field case 25 (kill -9 with a disk cache) cover resume.
@pytest.mark.slow
def test_sigkill_mid_run_resumes_to_the_full_epoch_count(synthetic_mirror, tmp_path):
    epochs = 4
    experiment = _write_experiment(tmp_path / "kill.yaml", synthetic_mirror, tmp_path / "data", epochs)
    run_dir = tmp_path / "run"
    metadata_path = run_dir / "backup" / "training_metadata.json"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    # Killed right after a backup (each start costs a TensorFlow import: one kill keeps the test short;
    # tests/distribute/test_distributed_runs.py kills workers at other points, under `slow`).
    for kill_after_epoch in (2,):
        process = subprocess.Popen(
            _train_command(experiment, run_dir),
            cwd=PROJECT_ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.time() + 120
        while time.time() < deadline and process.poll() is None:
            try:
                if json.loads(metadata_path.read_text())["epoch"] >= kill_after_epoch:
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.02)
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert not (run_dir / "metrics.json").exists()
    completed = subprocess.run(
        _train_command(experiment, run_dir), cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "resuming" in completed.stdout
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs_completed"] == epochs
    assert sorted({int(r["epoch"]) for r in history_rows(run_dir)}) == list(range(epochs))
    # Exactly one weights file is kept, and no temporary file survives.
    assert [p.name for p in (run_dir / "backup").iterdir() if p.name.endswith(".h5")] == [
        f"epoch-{epochs:04d}.weights.h5"
    ]
    assert not list(run_dir.rglob(".tmp-*"))


@pytest.mark.slow  # 7-30 s on a 2-core AVX2 VM: make test must stay under 4 min there
def test_leftover_temporary_files_from_a_killed_save_do_not_break_resume(data_env, tmp_path, interrupt_training):
    overrides = [*data_env, "train.epochs=3", *LEAN_RUN]
    config = experiment_lib.load_experiment("tiny", overrides)
    run_dir = tmp_path / "run"

    interrupt_training(1)
    with pytest.raises(KeyboardInterrupt):
        train.train(config, run_dir=run_dir, log=lambda *_: None)
    interrupt_training(None)
    # What a kill -9 in the middle of writing leaves behind: half-written temporary files.
    (run_dir / "backup" / ".tmp-epoch-0002-abc.weights.h5").write_bytes(b"\x89HDF\r\n half")
    (run_dir / "checkpoints" / ".tmp-best-xyz.keras").write_bytes(b"PK\x03\x04 half")
    metrics = train.train(config, run_dir=run_dir, log=lambda *_: None)
    assert metrics["epochs_completed"] == 3
    keras.models.load_model(run_dir / "checkpoints" / "best.keras")


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "best.keras"
    target.write_bytes(b"old")

    def broken_write(path):
        Path(path).write_bytes(b"half of the new file")
        raise OSError("disk full")

    with pytest.raises(OSError):
        fileio.atomic_write(target, broken_write, suffix=".keras")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["best.keras"]


def test_unreadable_resume_state_is_reported(tmp_path):
    (tmp_path / "training_metadata.json").write_text("{not json")
    with pytest.raises(fileio.DamagedFileError, match="damaged or truncated .resume state unreadable"):
        run_callbacks.read_backup_metadata(tmp_path)


def test_diverging_run_stops_with_a_clear_message(data_env, tmp_path, capsys):
    overrides = sets(*data_env, "train.optimizer.name=sgd", "train.optimizer.learning_rate=1e12", *LEAN_RUN)
    assert run_cli("train", "tiny", "--run-dir", tmp_path / "run", *overrides) == 2
    error = capsys.readouterr().err
    assert "diverged" in error and "train.optimizer.learning_rate" in error


def test_evaluate_and_export_commands(tiny_run_copy, capsys):
    tiny_run = tiny_run_copy
    metrics_before = json.loads((tiny_run / "metrics.json").read_text())
    assert run_cli("evaluate", tiny_run) == 0
    assert "test accuracy" in capsys.readouterr().out
    metrics_after = json.loads((tiny_run / "metrics.json").read_text())
    assert metrics_after["test"]["accuracy"] == pytest.approx(metrics_before["test"]["accuracy"])
    assert metrics_after["epochs_completed"] == 2
    assert run_cli("export", tiny_run) == 0
    assert (tiny_run / "export" / "tiny" / "2" / "saved_model.pb").is_file()
    assert run_cli("evaluate", tiny_run.parent / "nope") == 2
    assert "not a run directory" in capsys.readouterr().err


@pytest.mark.slow  # 3-8 s on a 2-core AVX2 VM: make test must stay under 4 min there
def test_early_stopping_marks_training_finished(data_env, tmp_path):
    overrides = [
        *data_env,
        "train.epochs=30",
        *LEAN_RUN,
        "train.callbacks.early_stopping.enabled=true",
        "train.callbacks.early_stopping.patience=1",
        "train.callbacks.early_stopping.min_delta=10.0",
    ]  # nothing improves by 10: stops at once
    config = experiment_lib.load_experiment("tiny", overrides)
    metrics = train.train(config, run_dir=tmp_path / "run", log=lambda *_: None)
    assert metrics["epochs_completed"] < 30
    metadata = run_callbacks.read_backup_metadata(tmp_path / "run" / "backup")
    assert metadata["finished"] and metadata["epoch"] == metrics["epochs_completed"]


@pytest.mark.slow  # 5-12 s on a 2-core AVX2 VM: make test must stay under 4 min there
def test_standardize_with_a_data_stats_file(data_env, tmp_path, capsys):
    stats = tmp_path / "stats.json"
    stats.write_text(json.dumps({"mean": [100.0, 110.0, 120.0], "std": [50.0, 60.0, 70.0]}))
    overrides = sets(
        *data_env, "input.normalization=standardize", f"input.statistics={stats}", "train.epochs=1", *LEAN_RUN
    )
    assert run_cli("train", "tiny", "--run-dir", tmp_path / "run", *overrides) == 0
    model = keras.models.load_model(tmp_path / "run" / "checkpoints" / "best.keras")
    out = model.get_layer("normalize")(np.full((1, 2, 2, 3), [100.0, 170.0, 50.0], np.float32)).numpy()
    np.testing.assert_allclose(out[0, 0, 0], [0.0, 1.0, -1.0], atol=1e-5)
    # Computed from the training split when no file is given.
    assert (
        run_cli(
            "train",
            "tiny",
            "--run-dir",
            tmp_path / "run2",
            *sets(*data_env, "input.normalization=standardize", "train.epochs=1", *LEAN_RUN),
        )
        == 0
    )
    assert (
        run_cli(
            "train",
            "tiny",
            *sets(*data_env, f"input.statistics={tmp_path / 'missing.json'}", "input.normalization=standardize"),
        )
        == 2
    )
    assert "input.statistics: file not found" in capsys.readouterr().err


def test_unknown_monitor_is_a_config_error(capsys):
    assert run_cli("train", "tiny", "--set", "train.callbacks.checkpoint.monitor=val_acc") == 2
    assert "did you mean 'val_accuracy'" in capsys.readouterr().err


@pytest.mark.slow  # 7-30 s on a 2-core AVX2 VM: make test must stay under 4 min there
@pytest.mark.parametrize("policy", ["mixed_bfloat16"])
def test_mixed_precision_trains_and_serves_float32(data_env, tmp_path, policy):
    overrides = sets(
        *data_env,
        f"train.mixed_precision={policy}",
        "train.epochs=1",
        *(o for o in LEAN_RUN if not o.startswith("export.")),
    )
    assert run_cli("train", "tiny", "--run-dir", tmp_path / "run", *overrides) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert np.isfinite(metrics["test"]["loss"]) and metrics["test"]["accuracy"] > 0
    model = keras.models.load_model(tmp_path / "run" / "checkpoints" / "best.keras")
    conv = next(layer for layer in model.get_layer("tiny").layers if layer.name == "conv1")
    assert conv.compute_dtype == "bfloat16" and conv.variable_dtype == "float32"
    import tensorflow as tf

    served = tf.saved_model.load(metrics["export"]).signatures["serve_images"]
    out = served(images=tf.zeros((1, 16, 16, 3), tf.uint8))["probabilities"]
    assert out.dtype == tf.float32
    np.testing.assert_allclose(out.numpy().sum(), 1.0, atol=1e-3)


@pytest.mark.slow  # a fresh process or two: kept out of `make test`'s 4 minutes (run with `make test-slow`)
def test_thread_settings_apply_in_a_fresh_process(synthetic_mirror, tmp_path):
    experiment = _write_experiment(tmp_path / "threads.yaml", synthetic_mirror, tmp_path / "data", 1)
    code = (
        "import sys; from pipeline import cli, config, run; from pipeline.training import model_setup as modeling;"
        "import tensorflow as tf;"
        "cfg = config.load_config(sys.argv[1], ['train.intra_op_threads=1', 'train.inter_op_threads=2']);"
        "modeling.configure_threads(intra_op=1, inter_op=2);"
        "print(tf.config.threading.get_intra_op_parallelism_threads(),"
        " tf.config.threading.get_inter_op_parallelism_threads())"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code, str(experiment)], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.split()[-2:] == ["1", "2"]
