"""Training runs under tf.distribute (pipeline/distribute/workers.py wired into pipeline/run.py).

In this process (default strategy): what each worker reads (its share of the files, records or shard
files; arrays whole), no empty batch for any replica (and the TensorFlow bug that makes it matter), the
learning-rate scaling, the history trim on resume, stale scratch directories, the run directory of a
chief and of another worker, that one device changes nothing, and the Kubernetes manifest. In
subprocesses (two localhost workers through `launch`): the chief prepares the data first and the workers
check that they agree; `python -m pipeline launch --workers 2` trains a folder dataset end to end into
one run directory; a worker killed mid-run and relaunched resumes without repeating or losing epochs.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from pipeline import config as config_lib
from pipeline.cli import main
from pipeline.data import sharding
from pipeline.data import splits as splits_lib
from pipeline.distribute import launch, workers
from pipeline.distribute import strategy as distribute
from pipeline.training import callbacks, phases

PROJECT_ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.filterwarnings("ignore:Your input ran out of data")


def write_folder(root: Path, *, classes=("ants", "bees", "cats"), per_class: int = 8, size: int = 12) -> Path:
    """root/<class>/NN.png: noise images, each one different (PNG: decoded bytes are exact)."""
    rng = np.random.default_rng(0)
    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for number in range(per_class):
            image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            image[: size // 2, label * 3 : (label + 1) * 3] = 255  # something to learn
            Image.fromarray(image).save(root / name / f"{number:02d}.png")
    return root


def folder_config(photos: dict, source: str, **input_options) -> config_lib.Config:
    """A `tiny` config on the photos (source "root": the folder, "shards": its TFRecords), batches of 4."""
    return config_lib.from_dict(
        {
            "name": "distributed_test",
            "seed": 5,
            "dataset": {
                "name": "folder" if source == "root" else "tfrecord",
                "root": str(photos[source]),
                "data_dir": str(photos["data_dir"]),
                "test_split": 0.2,
                "validation_split": 0.2,
            },
            "input": {"image_size": [12, 12], "channels": 3, **input_options},
            "model": {"name": "tiny"},
            "train": {"epochs": 1, "batch_size": 4, "verbose": 0},
        }
    )


def image_keys(dataset) -> list[bytes]:
    """One key per image of a batched (images, labels[, weights]) dataset: its pixel bytes."""
    return [image.tobytes() for batch in dataset.as_numpy_iterator() for image in batch[0]]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("distributed")
    root = write_folder(base / "photos")
    shards = base / "shards"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["data", "shard", str(root), "--out", str(shards), "--shards", "2", "--workers", "2"]) == 0
    return {"root": root, "shards": shards, "data_dir": base / "data"}


@pytest.mark.parametrize("source", ["root", pytest.param("shards", marks=pytest.mark.slow)])
def test_each_worker_reads_its_share_of_the_files(photos, source):
    config = folder_config(photos, source)
    splits = splits_lib.Splits.from_config(config, log=lambda *_: None)
    everything = image_keys(splits.dataset("train"))
    shares = [image_keys(splits.dataset("train", shard=(2, index))) for index in (0, 1)]
    assert sorted(shares[0] + shares[1]) == sorted(everything), "the shares make up the split"
    assert not set(shares[0]) & set(shares[1]), "no image is read by both workers"
    assert [len(share) for share in shares] == [(len(everything) + 1) // 2, len(everything) // 2]
    # tf.distribute must not cut a share again; one worker keeps tf.data's defaults.
    policy = tf.data.experimental.AutoShardPolicy
    sharded = splits.dataset("train", training=True, shard=(2, 1))
    assert sharded.options().experimental_distribute.auto_shard_policy == policy.OFF
    assert splits.dataset("train").options().experimental_distribute.auto_shard_policy == policy.AUTO


@pytest.mark.slow  # 3-4 s on a 2-core AVX2 VM: make test must stay under 4 min there
def test_streamed_records_are_shared_by_file(photos):
    from pipeline.data import records as tfrecords

    config = folder_config(photos, "shards", shuffle_buffer=4)
    splits = splits_lib.Splits.from_config(config, log=lambda *_: None)
    shard_of = splits.reader.records.arrays["shard"][splits.train[0]]
    for index in (0, 1):  # worker i streams shard file i only: the training records that file holds
        count = sum(len(batch[0]) for batch in splits.dataset("train", training=True, shard=(2, index)))
        assert count == int(np.sum(shard_of == index)) > 0
    assert len(tfrecords.shard_files(photos["shards"], "train")) == 2
    with pytest.raises(
        sharding.ShardError,
        match=r"2 train shard file\(s\) for 3 workers, and each worker "
        r"streams whole files; write at least 3 \(`python -m pipeline data shard --shards N`\)",
    ):
        splits.dataset("train", training=True, shard=(3, 0))


def test_arrays_stay_whole_for_tf_distribute_to_split_by_batch(data_env):
    config = config_lib.from_dict(
        {
            "dataset": {"name": "mnist", "data_dir": data_env[0].partition("=")[2]},
            "model": {"name": "tiny"},
            "train": {"batch_size": 64},
        }
    )
    splits = splits_lib.Splits.from_config(config, log=lambda *_: None)
    dataset = splits.dataset("train", training=True, shard=(2, 1))
    assert dataset.options().experimental_distribute.auto_shard_policy == tf.data.experimental.AutoShardPolicy.DATA
    assert sum(len(batch[0]) for batch in dataset) == len(splits.train[1])


def test_learning_rate_scaling_and_what_multi_worker_refuses(monkeypatch):
    config = config_lib.from_dict(
        {
            "model": {"name": "tiny"},
            "train": {
                "epochs": 3,
                "batch_size": 1024,
                "phases": [
                    {"epochs": 1, "trainable": "none", "cache_features": True, "optimizer": {"learning_rate": 0.01}},
                    {
                        "epochs": 2,
                        "optimizer": {"learning_rate": 0.001},
                        "schedule": {"name": "polynomial", "end_learning_rate": 0.0001},
                    },
                ],
            },
        }
    )
    plan, lines = phases.plan(config.train), []
    strategy = tf.distribute.get_strategy()
    scaled = workers.prepare_phases(
        plan, strategy, scale_learning_rate=True, global_batch=1024, base_batch=256, log=lines.append
    )
    assert [phase.optimizer.learning_rate for phase in scaled] == pytest.approx([0.04, 0.004])
    assert scaled[1].schedule.end_learning_rate == pytest.approx(0.0004)
    assert [phase.epochs for phase in scaled] == [1, 2] and scaled[0].optimizer.name == plan[0].optimizer.name
    assert lines[0] == "distribute.scale_learning_rate: train.phases[0].optimizer.learning_rate 0.01 x 1024/256 = 0.04"
    assert phases.plan(config.train)[0].optimizer.learning_rate == 0.01, "the config keeps the configured rates"
    assert workers.prepare_phases(plan, strategy, scale_learning_rate=False, global_batch=1024, base_batch=256) == plan
    monkeypatch.setattr(workers, "is_multi_worker", lambda strategy: True)
    with pytest.raises(
        distribute.DistributeError,
        match=r"train.phases\[0\].cache_features is not supported under "
        r"distribute.strategy multi_worker; set train.phases\[0\].cache_features=false",
    ):
        workers.prepare_phases(plan, strategy, scale_learning_rate=False, global_batch=1024, base_batch=256)


def test_one_device_changes_nothing(monkeypatch, tmp_path):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    lines = []
    strategy = workers.start("default", global_batch=64, log=lines.append)
    assert strategy is tf.distribute.get_strategy()
    assert lines == [
        "distribute: default strategy, 1 worker(s), 1 replica(s) in sync; global batch 64 = 64 per replica"
    ]
    assert isinstance(workers.scope(strategy), contextlib.nullcontext)
    assert workers.shard(strategy) == (1, 0) and workers.is_chief(strategy)
    assert workers.summary(strategy) == {"strategy": "default", "num_workers": 1, "num_replicas_in_sync": 1}
    with workers.chief_first(strategy):
        pass
    workers.check_workers_agree(strategy, splits=[], resume_epoch=0, completed_phases=0)
    workers.end_together(strategy)
    callback_list = [tf.keras.callbacks.Callback(), type("ValidationConfusion", (tf.keras.callbacks.Callback,), {})()]
    assert workers.fit_callbacks(callback_list, strategy) == callback_list
    monkeypatch.setattr(workers, "is_multi_worker", lambda strategy: True)
    assert workers.fit_callbacks(callback_list, strategy, log=lines.append) == callback_list[:1]
    assert "no per-epoch validation confusion matrix" in lines[-1]
    with workers.writer_dir(tmp_path / "run", strategy="default") as where:
        assert where == tmp_path / "run" and where.is_dir()


def test_no_replica_gets_an_empty_batch():
    dataset = tf.data.Dataset.range(9).batch(4).map(lambda batch: (batch, batch))
    two_replicas = type("Strategy", (), {"num_replicas_in_sync": 2})()
    kept, none = workers.without_short_batches(two_replicas, dataset, None)
    assert [list(images) for images, _ in kept.as_numpy_iterator()] == [[0, 1, 2, 3], [4, 5, 6, 7]] and none is None
    one_replica = type("Strategy", (), {"num_replicas_in_sync": 1})()
    assert workers.without_short_batches(one_replica, dataset)[0] is dataset


@pytest.mark.skipif(
    platform.machine() not in ("x86_64", "AMD64") or os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "0",
    reason="TensorFlow uses oneDNN on x86 CPUs by default only",
)
def test_onednn_convolutions_still_return_an_empty_batch_unchanged():
    """Why `workers.without_short_batches` exists. When this fails, TensorFlow fixed it: drop that
    paragraph of its docstring (dropping short batches still keeps every worker at the same step count)."""
    with tf.device("/cpu:0"):
        output = tf.nn.conv2d(tf.zeros((0, 12, 12, 3)), tf.zeros((3, 3, 3, 8)), strides=2, padding="SAME")
    from pipeline.core.cpu_kernels import cpu_flags

    if tuple(output.shape) == (0, 6, 6, 8) and "avx512f" not in cpu_flags() and cpu_flags():
        # Seen on AVX-512 CPUs (Sapphire Rapids); an AVX2 EPYC takes another oneDNN path and gets it right.
        pytest.skip("this CPU has no AVX-512: its oneDNN convolution does not show the empty-batch bug")
    assert tuple(output.shape) == (0, 12, 12, 3), (
        f"TensorFlow {tf.__version__}: a oneDNN Conv2D on an empty batch now gives {tuple(output.shape)}; the "
        f"bug documented in pipeline/compat/distribute.py without_short_batches is fixed"
    )


def test_the_confusion_callback_left_out_is_the_real_one():
    from pipeline.evaluation import tensorboard_logging

    assert tensorboard_logging.ValidationConfusion.__name__ in workers.PREDICTING_CALLBACKS


def test_a_non_chief_writes_into_a_scratch_copy_and_never_into_the_run(monkeypatch, tmp_path):
    monkeypatch.setenv(
        "TF_CONFIG",
        json.dumps({"cluster": {"worker": ["localhost:1", "localhost:2"]}, "task": {"type": "worker", "index": 1}}),
    )
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    monkeypatch.setattr(tempfile, "tempdir", None)  # gettempdir() reads TMPDIR again
    (tmp_path / "tmp").mkdir()
    run_dir = tmp_path / "run"
    with workers.writer_dir(run_dir, strategy="auto") as where:  # a new run: nothing to copy
        assert where.parent == tmp_path / "tmp" and not any(where.iterdir())
        (where / "checkpoints").mkdir()
    assert not run_dir.exists(), "a worker never creates the run directory"
    (run_dir / "backup").mkdir(parents=True)
    for name in ("config.yaml", "classes.txt", "backup/training_metadata.json"):
        (run_dir / name).write_text(name)
    with workers.writer_dir(run_dir, strategy="auto") as where:  # resuming: the chief's resume state
        assert sorted(path.relative_to(where).as_posix() for path in where.rglob("*")) == [
            "backup",
            "backup/training_metadata.json",
            "config.yaml",
        ]
    assert list((tmp_path / "tmp").iterdir()) == []


def test_scratch_dirs_of_dead_workers_are_removed(tmp_path):
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    dead = tmp_path / f"{distribute.SCRATCH_PREFIX}1-pid{finished.pid}-abc"
    alive = tmp_path / f"{distribute.SCRATCH_PREFIX}1-pid{os.getpid()}-def"
    other = tmp_path / "pipeline-worker-notes"
    for path in (dead, alive, other):
        (path / "backup").mkdir(parents=True)
    assert distribute.remove_stale_scratch_dirs(tmp_path) == [dead]
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([alive.name, other.name])


def test_history_rows_after_the_resume_point_are_dropped(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("epoch,accuracy,loss\r\n0,0.1,2\r\n1,0.2,1.5\r\n2,0.3,1.2\r\n")
    callbacks.trim_history(path, epochs=2)
    with open(path, newline="") as handle:
        assert handle.read() == "epoch,accuracy,loss\r\n0,0.1,2\r\n1,0.2,1.5\r\n"
    before = path.stat().st_mtime_ns
    callbacks.trim_history(path, epochs=5)
    assert path.stat().st_mtime_ns == before, "nothing to drop: the file is left untouched"
    callbacks.trim_history(tmp_path / "missing.csv", epochs=1)


# -- two localhost workers ---------------------------------------------------------------------------

COORDINATION = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import numpy as np
    from pipeline.distribute import strategy as distribute
    from pipeline.distribute import workers

    strategy = workers.start("auto", global_batch=4)
    marker = Path(sys.argv[1]) / "prepared"
    with workers.chief_first(strategy):
        if distribute.is_chief():
            time.sleep(2)
            marker.write_text("by the chief")
        else:
            print("PREPARED", marker.exists())
    splits = [(np.array(["a.jpg", "b.jpg"], object), np.array([0, 1]))]
    workers.check_workers_agree(strategy, splits=splits, resume_epoch=3, completed_phases=0)
    print("AGREE")
    try:
        workers.check_workers_agree(strategy, splits=splits, resume_epoch=3 + distribute.worker_index(),
                                    completed_phases=0)
    except distribute.DistributeError as error:
        print("DISAGREE", error)
    workers.end_together(strategy)
""")


@pytest.mark.slow  # two TensorFlow processes; the launch end-to-end test below covers the agreeing case
def test_the_chief_prepares_first_and_workers_that_disagree_all_stop(tmp_path):
    script = tmp_path / "coordination.py"
    script.write_text(COORDINATION)
    out, err = io.StringIO(), io.StringIO()
    status = launch.launch(2, [str(tmp_path)], command=[sys.executable, str(script)], out=out, err=err, timeout=120)
    lines = out.getvalue().splitlines()
    assert status == 0, err.getvalue() + "\n".join(lines[-30:])
    assert "[worker 1] PREPARED True" in lines, "worker 1 waited for the chief's data preparation"
    assert sum(line.endswith("] AGREE") for line in lines) == 2
    disagree = [line for line in lines if "DISAGREE" in line]
    assert len(disagree) == 2 and all(
        "disagree on resume_epoch: worker 0 3, worker 1 4. Every worker must read the same data" in line
        for line in disagree
    )


def run_launch(experiment: Path, run_dir: Path, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "launch", "--workers", "2", str(experiment), "--run-dir", str(run_dir)],
        check=False,
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def history_epochs(run_dir: Path) -> list[int]:
    with open(run_dir / "history.csv") as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


def scratch_dirs(tmp_path: Path) -> list[str]:
    return [path.name for path in (tmp_path / "tmp").glob(f"{distribute.SCRATCH_PREFIX}*")]


def quiet_env(tmp_path: Path) -> dict:
    """The workers' environment: their scratch directories under tmp_path/tmp, so the test sees them."""
    (tmp_path / "tmp").mkdir(exist_ok=True)
    environ = {**os.environ, "TMPDIR": str(tmp_path / "tmp")}
    environ.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the CLI keeps TensorFlow's start-up log out then
    return environ


# Several TensorFlow processes (launch and two workers, then a resume): `slow`, as pytest.ini says; the
# lockstep test in test_distribute.py keeps two real workers in `make test`.
@pytest.mark.slow
def test_two_workers_train_a_folder_dataset_into_one_run_directory(tmp_path):
    root = write_folder(tmp_path / "photos", per_class=10)
    experiment = tmp_path / "two.yaml"
    experiment.write_text(
        f"dataset: {{name: folder, root: {root}, data_dir: {tmp_path / 'data'}, validation_split: 0.2, "
        f"test_split: 0.2}}\n"
        "input: {image_size: [12, 12]}\nmodel: {name: tiny}\n"
        "train: {epochs: 2, batch_size: 8, callbacks: {tensorboard: {enabled: false}}}\n"
        "evaluation: {report: false}\nexport: {enabled: false}\n"
    )
    run_dir = tmp_path / "run"
    done = run_launch(experiment, run_dir, quiet_env(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    lines = done.stdout.splitlines()
    # One image scan: the chief's; worker 1 finds every image in the scan cache.
    assert any(line.startswith("[worker 0] checking 30 images") for line in lines), lines[:20]
    assert not any(line.startswith("[worker 1] checking") for line in lines)
    assert any(
        "global batch 8 = 4 per replica; this is worker 1 (it writes into a scratch directory" in line for line in lines
    )
    for relative in (
        "config.yaml",
        "classes.txt",
        "checkpoints/best.keras",
        "checkpoints/last.keras",
        "backup/training_metadata.json",
        "history.csv",
        "metrics.json",
    ):
        assert (run_dir / relative).exists(), relative
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["distribution"] == {"strategy": "multi_worker", "num_workers": 2, "num_replicas_in_sync": 2}
    assert metrics["epochs_completed"] == 2 and metrics["train_images"] == 18
    assert history_epochs(run_dir) == [0, 1]
    assert scratch_dirs(tmp_path) == [], "worker 1 left its scratch directory behind"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["data", "photos", "run", "tmp", "two.yaml"]


def child_processes(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rpartition(")")[2].split()
            if int(fields[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def worker_pid(launcher: subprocess.Popen, index: int) -> int | None:
    for pid in child_processes(launcher.pid):
        with contextlib.suppress(OSError):
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            config = next((item[len(b"TF_CONFIG=") :] for item in environ if item.startswith(b"TF_CONFIG=")), None)
            if config and json.loads(config)["task"]["index"] == index:
                return pid
    return None


@pytest.mark.slow
@pytest.mark.parametrize("victim", [1, 0])
def test_a_killed_worker_relaunched_resumes_without_repeating_or_losing_epochs(data_env, tmp_path, victim):
    epochs = 6
    experiment = tmp_path / "resume.yaml"
    experiment.write_text(
        f"dataset: {{name: mnist, validation_split: 0.1, data_dir: {data_env[0].partition('=')[2]}}}\n"
        f"model: {{name: tiny}}\n"
        f"train: {{epochs: {epochs}, batch_size: 32, callbacks: {{tensorboard: {{enabled: false}}}}}}\n"
        "evaluation: {report: false}\n"
    )
    run_dir, env = tmp_path / "run", quiet_env(tmp_path)
    metadata = run_dir / "backup" / "training_metadata.json"
    launcher = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "launch", "--workers", "2", str(experiment), "--run-dir", str(run_dir)],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline, killed = time.time() + 240, None
        while time.time() < deadline and launcher.poll() is None and killed is None:
            with contextlib.suppress(OSError, ValueError):
                if json.loads(metadata.read_text())["epoch"] >= 2:
                    killed = worker_pid(launcher, victim)
                    os.kill(killed, signal.SIGKILL)
            time.sleep(0.02)
        output = launcher.communicate(timeout=120)[0]
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert killed, output[-3000:]
    assert launcher.returncode == 128 + signal.SIGKILL, output[-3000:]
    assert f"launch: worker {victim} was killed by SIGKILL; stopped worker(s) {1 - victim}" in output
    assert not (run_dir / "metrics.json").exists()
    resumed_from = json.loads(metadata.read_text())["epoch"]
    assert 2 <= resumed_from < epochs

    done = run_launch(experiment, run_dir, env)  # the same command again
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    for index in (0, 1):  # every worker restores the chief's last completed epoch
        assert f"[worker {index}] resuming after epoch {resumed_from} of {epochs}" in done.stdout
    assert history_epochs(run_dir) == list(range(epochs)), "each epoch logged once, none lost"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs_completed"] == epochs and metrics["distribution"]["num_workers"] == 2
    assert (run_dir / "export" / "resume" / "1" / "saved_model.pb").is_file(), "the chief exports alone"
    assert scratch_dirs(tmp_path) == [], "the killed worker's scratch directory and the finished one's"


def test_the_kubernetes_manifest_runs_a_valid_experiment_on_shared_storage():
    import yaml

    job = yaml.safe_load((PROJECT_ROOT / "deploy" / "tfjob.yaml").read_text())
    assert job["kind"] == "TFJob" and job["apiVersion"] == "kubeflow.org/v1"
    worker = job["spec"]["tfReplicaSpecs"]["Worker"]
    container = worker["template"]["spec"]["containers"][0]
    assert container["name"] == "tensorflow", "the operator finds the training container by this name"
    command = container["command"] + container["args"]
    assert command[:4] == [".venv/bin/python", "-m", "pipeline", "train"]
    arguments = command[5:]
    overrides = [arguments[i + 1] for i, item in enumerate(arguments) if item == "--set"]
    config = config_lib.load_config(command[4], overrides)  # raises on an unknown experiment or key
    assert config.distribute.strategy == "auto"
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    run_dir = arguments[arguments.index("--run-dir") + 1]
    assert run_dir.startswith(mounts["runs"] + "/") and config.dataset.data_dir.startswith(mounts["runs"] + "/")
