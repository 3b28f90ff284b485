"""pipeline.distribute.strategy: strategy choice, TF_CONFIG rules, batch split, scratch dirs, sharding; and two
end-to-end checks in subprocesses (TensorFlow's devices and collectives are fixed when it starts):
mirrored over two logical CPUs trains like one device, and two localhost workers (launch +
MultiWorkerMirroredStrategy + pipeline.compat's workarounds) train like one device, in lockstep.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from pipeline.data import sharding
from pipeline.distribute import launch
from pipeline.distribute import strategy as distribute

TWO_WORKERS = {"cluster": {"worker": ["localhost:1", "localhost:2"]}, "task": {"type": "worker", "index": 1}}
WITH_CHIEF = {"cluster": {"chief": ["a:1"], "worker": ["b:1", "c:1"]}, "task": {"type": "worker", "index": 0}}


def test_tf_config_rules():
    assert distribute.read_tf_config({}) == {}
    assert (distribute.num_workers({}), distribute.worker_index({}), distribute.is_chief({})) == (1, 0, True)
    assert distribute.num_workers(TWO_WORKERS) == 2 and distribute.worker_index(TWO_WORKERS) == 1
    assert not distribute.is_chief(TWO_WORKERS)
    assert distribute.is_chief({**TWO_WORKERS, "task": {"type": "worker", "index": 0}})
    # With a chief task, worker 0 is not the chief and counts from 1.
    assert distribute.num_workers(WITH_CHIEF) == 3 and distribute.worker_index(WITH_CHIEF) == 1
    assert not distribute.is_chief(WITH_CHIEF)
    assert distribute.is_chief({**WITH_CHIEF, "task": {"type": "chief", "index": 0}})
    assert not distribute.is_chief(
        {
            **WITH_CHIEF,
            "task": {"type": "evaluator", "index": 0},
            "cluster": {**WITH_CHIEF["cluster"], "evaluator": ["d:1"]},
        }
    )
    assert distribute.read_tf_config({"TF_CONFIG": json.dumps(TWO_WORKERS)}) == TWO_WORKERS


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", r"TF_CONFIG is not valid JSON"),
        ("[1]", r"TF_CONFIG must be a JSON object"),
        (
            json.dumps({**TWO_WORKERS, "task": {"type": "workers", "index": 0}}),
            r"task.type 'workers' is not in its cluster; allowed: \['worker'\] \(did you mean 'worker'\?\)",
        ),
        (
            json.dumps({**TWO_WORKERS, "task": {"type": "worker", "index": 2}}),
            r"task.index must be in 0..1 for 'worker'. Received: task.index=2",
        ),
    ],
)
def test_bad_tf_config_is_a_user_error(text, message):
    with pytest.raises(distribute.DistributeError, match=message):
        distribute.read_tf_config({"TF_CONFIG": text})


def test_strategy_names():
    assert distribute.choose_strategy_name("auto", tf_config=TWO_WORKERS, gpus=0) == "multi_worker"
    assert distribute.choose_strategy_name("auto", tf_config={}, gpus=2) == "mirrored"
    assert distribute.choose_strategy_name("auto", tf_config={}, gpus=1) == "default"
    assert distribute.choose_strategy_name("mirrored", tf_config=TWO_WORKERS) == "mirrored"
    with pytest.raises(
        distribute.DistributeError,
        match=r"one of auto, default, mirrored, multi_worker "
        r"\(did you mean 'mirrored'\?\). Received: distribute.strategy='mirored'",
    ):
        distribute.choose_strategy_name("mirored")


def test_default_strategy_changes_nothing(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    strategy = distribute.resolve_strategy("default")
    assert strategy is tf.distribute.get_strategy()
    assert distribute.describe(strategy) == {
        "strategy": "default",
        "num_workers": 1,
        "num_replicas_in_sync": 1,
        "worker_index": 0,
        "is_chief": True,
    }
    assert distribute.per_replica_batch(250, strategy) == 250
    with pytest.raises(distribute.DistributeError, match="devices apply to the mirrored strategy only"):
        distribute.resolve_strategy("default", devices=["/cpu:0"])


def test_per_replica_batch_must_divide_evenly():
    assert distribute.per_replica_batch(256, 4) == 64
    with pytest.raises(
        distribute.DistributeError,
        match=r"divide evenly among the 4 replicas in sync; use 248 "
        r"or 252. Received: train.batch_size=250",
    ):
        distribute.per_replica_batch(250, 4)
    with pytest.raises(distribute.DistributeError, match=r"use 4 or 8. Received: train.batch_size=2"):
        distribute.per_replica_batch(2, 4)


def test_linear_learning_rate_scaling():
    assert distribute.scale_learning_rate(0.1, global_batch=1024, base_batch=256) == pytest.approx(0.4)
    assert distribute.scale_learning_rate(0.1, global_batch=256, base_batch=256) == 0.1
    with pytest.raises(
        distribute.DistributeError, match="base_batch must be a positive integer. Received: base_batch=0"
    ):
        distribute.scale_learning_rate(0.1, global_batch=256, base_batch=0)


def test_worker_scratch_dir(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "backup").mkdir(parents=True)
    (run_dir / "backup" / "state.json").write_text("{}")
    with distribute.worker_scratch_dir(run_dir, chief=True) as where:
        assert where == run_dir
    with distribute.worker_scratch_dir(run_dir, chief=False, copy_from_run_dir=("backup", "missing")) as where:
        assert where != run_dir and not where.is_relative_to(run_dir)
        assert (where / "backup" / "state.json").read_text() == "{}", "non-chiefs restore the chief's state"
        (where / "checkpoints").mkdir()
        (where / "checkpoints" / "last.keras").write_text("x")
    assert not where.exists(), "a non-chief worker leaves nothing behind"
    with pytest.raises(RuntimeError), distribute.worker_scratch_dir(run_dir, chief=False) as where:
        raise RuntimeError
    assert not where.exists()
    assert sorted(p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*")) == ["backup", "backup/state.json"]


def test_shard_options_and_worker_share():
    policy = tf.data.experimental.AutoShardPolicy
    for kind, expected in (("array", policy.DATA), ("tfrecord", policy.FILE), ("files", policy.OFF)):
        assert sharding.shard_options(kind).experimental_distribute.auto_shard_policy == expected
    with pytest.raises(sharding.ShardError, match=r"\(did you mean 'files'\?\). Received: kind='file'"):
        sharding.shard_options("file")
    items = list(range(7))
    assert sharding.worker_share(items, (2, 1)) == [1, 3, 5]
    assert sharding.worker_share(items, (1, 0)) is items


# A tiny convolutional model without BatchNormalization: BN uses per-replica batch statistics under a
# strategy (unless synchronized=True), so it would not match one device exactly, by design.
COMMON = textwrap.dedent("""
    import json, os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np
    import tensorflow as tf
    import keras
    from pipeline.distribute import strategy as distribute
    from pipeline.data import sharding

    def data(count):
        rng = np.random.default_rng(0)
        x = rng.normal(size=(count, 8, 8, 1)).astype("float32")
        y = rng.integers(0, 3, count)
        return x, y

    def build():
        keras.utils.set_random_seed(1)
        inputs = keras.Input((8, 8, 1))
        hidden = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
        hidden = keras.layers.GlobalAveragePooling2D()(hidden)
        model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(hidden))
        model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
        return model

    def weights(model):
        return [w.tolist() for w in model.get_weights()]
""")

MIRRORED = COMMON + textwrap.dedent("""
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    x, y = data(64)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    reference = build()
    initial = reference.get_weights()
    one = reference.fit(dataset, epochs=3, verbose=0).history
    strategy = distribute.resolve_strategy("mirrored", devices=["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = build()
    model.set_weights(initial)
    two = model.fit(dataset, epochs=3, verbose=0).history
    print("RESULT " + json.dumps({"one": one, "two": two, "weights_one": weights(reference),
                                  "weights_two": weights(model), "describe": distribute.describe(strategy),
                                  "per_replica": distribute.per_replica_batch(16, strategy)}))
""")

MULTI_WORKER = COMMON + textwrap.dedent("""
    run_dir = sys.argv[1]
    strategy = distribute.resolve_strategy("auto")  # TF_CONFIG names two workers: multi_worker
    x, y = data(128)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    validation = tf.data.Dataset.from_tensor_slices((x[:32], y[:32])).batch(16)
    options = sharding.shard_options("array")
    with strategy.scope():
        model = build()
    initial = model.get_weights()
    with distribute.worker_scratch_dir(run_dir) as out_dir:
        history = model.fit(dataset.with_options(options), validation_data=validation.with_options(options),
                            epochs=2, verbose=0).history
        model.save(out_dir / "model.keras")  # every worker saves; only the chief's file is kept
        written = str(out_dir)
    reference = build()  # the same steps on this worker alone, under the default strategy
    reference.set_weights(initial)
    reference.fit(dataset, epochs=2, verbose=0)
    print("RESULT " + json.dumps({"history": history, "weights": weights(model),
                                  "reference": weights(reference), "written": written,
                                  "describe": distribute.describe(strategy)}))
""")


def results(lines):
    found = {}
    for line in lines:
        prefix, _, rest = line.partition("RESULT ")
        if rest:
            found[prefix.strip()] = json.loads(rest)
    return found


def assert_same_weights(first, second, atol):
    assert len(first) == len(second)
    for a, b in zip(first, second):
        np.testing.assert_allclose(np.array(a), np.array(b), atol=atol, rtol=0)


@pytest.mark.slow  # 7-30 s on a 2-core AVX2 VM: make test must stay under 4 min there
def test_mirrored_over_two_cpu_devices_matches_one_device(tmp_path):
    script = tmp_path / "mirrored.py"
    script.write_text(MIRRORED)
    done = subprocess.run(
        [sys.executable, str(script)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(launch.PROJECT_ROOT)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = results(done.stdout.splitlines())[""]
    assert result["describe"]["num_replicas_in_sync"] == 2 and result["describe"]["strategy"] == "mirrored"
    assert result["per_replica"] == 8
    np.testing.assert_allclose(result["one"]["loss"], result["two"]["loss"], rtol=1e-5)
    assert result["one"]["loss"][-1] < result["one"]["loss"][0]
    assert_same_weights(result["weights_one"], result["weights_two"], atol=1e-5)


@pytest.mark.slow  # a fresh process or two: kept out of `make test`'s 4 minutes (run with `make test-slow`)
def test_two_local_workers_train_in_lockstep_like_one_device(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(MULTI_WORKER)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    out, err = io.StringIO(), io.StringIO()
    status = launch.launch(2, [str(run_dir)], command=[sys.executable, str(script)], out=out, err=err, timeout=120)
    lines = out.getvalue().splitlines()
    assert status == 0, err.getvalue() + "\n".join(lines[-40:])
    found = results(lines)
    chief, worker = found["[worker 0]"], found["[worker 1]"]
    assert chief["describe"] == {
        "strategy": "multi_worker",
        "num_workers": 2,
        "num_replicas_in_sync": 2,
        "worker_index": 0,
        "is_chief": True,
    }
    assert worker["describe"]["is_chief"] is False and worker["describe"]["worker_index"] == 1
    assert chief["history"] == worker["history"]
    assert set(chief["history"]) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert_same_weights(chief["weights"], worker["weights"], atol=0)
    # Each worker computes half of every global batch (DATA sharding); the averaged gradient is the
    # single-device one, so two workers end where one device does.
    assert_same_weights(chief["weights"], chief["reference"], atol=1e-5)
    assert chief["written"] == str(run_dir) and worker["written"] != str(run_dir)
    assert sorted(p.name for p in run_dir.iterdir()) == ["model.keras"]
    assert not Path(worker["written"]).exists()
