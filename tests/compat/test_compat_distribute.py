"""pipeline.compat's multi-worker workarounds: the Keras internals they replace, and proof they are needed.

Every test here fails, naming the installed Keras version, when an upgrade changes an internal the
workarounds rely on, or fixes a bug they work around (then delete the workaround and its test).
"""

from __future__ import annotations

import inspect
import io
import json
import re
import sys
import textwrap

import keras
import pytest
import tensorflow as tf

from pipeline import compat
from pipeline.distribute import launch

trainer = compat._keras_tf_trainer()
UPGRADE = (
    f"Keras {keras.__version__} (the workarounds were written for 3.15.1): see the tf.distribute section "
    f"of pipeline/compat/ and {', '.join(compat.MULTI_WORKER_ISSUES)}"
)


def upstream(function):
    """The Keras function itself, whether or not the patch is applied in this process."""
    return getattr(function, "__wrapped__", function)


def flat_source(function) -> str:
    return re.sub(r"\s+", "", inspect.getsource(function))


def test_the_patched_internals_still_exist_with_the_same_signatures():
    build = upstream(trainer.TensorFlowTrainer._maybe_symbolic_build)
    reduce = upstream(trainer.reduce_per_replica)
    assert str(inspect.signature(build)) == "(self, iterator=None, data_batch=None)", UPGRADE
    assert str(inspect.signature(reduce)) == "(values, strategy, reduction)", UPGRADE
    assert str(inspect.signature(trainer._collective_all_reduce_multi_worker)) == "(strategy)", UPGRADE
    # The replacement build walks the epoch iterator the way upstream does ...
    assert "for_,_,itiniterator:maybe_distributed_data_batch=next(it)" in flat_source(build), UPGRADE
    # ... and the step functions look reduce_per_replica up in the module at call time.
    assert "outputs=reduce_per_replica(" in flat_source(trainer.TensorFlowTrainer._make_function), UPGRADE


def test_upstream_still_has_both_bugs():
    build = flat_source(upstream(trainer.TensorFlowTrainer._maybe_symbolic_build))
    assert 'self.distribute_strategy.reduce("MEAN",maybe_distributed_data_batch,axis=None,)' in build, (
        f"{UPGRADE}: the symbolic build no longer reduces the first batch across workers; if "
        "test_two_workers_need_both_workarounds fails too, drop workaround 1 (_patch_symbolic_build)"
    )
    reduce = flat_source(upstream(trainer.reduce_per_replica))
    assert 'elifreduction=="mean":returnstrategy.reduce("MEAN",v,axis=0)' in reduce, (
        f"{UPGRADE}: multi-worker scalars are no longer reduced with axis=0; if "
        "test_two_workers_need_both_workarounds fails too, drop workaround 2 (_patch_reduce_per_replica)"
    )


def test_patch_is_idempotent_and_leaves_single_worker_runs_alone(monkeypatch):
    # monkeypatch restores Keras' own functions after the test.
    monkeypatch.setattr(trainer, "reduce_per_replica", trainer.reduce_per_replica)
    monkeypatch.setattr(
        trainer.TensorFlowTrainer, "_maybe_symbolic_build", trainer.TensorFlowTrainer._maybe_symbolic_build
    )
    compat.patch_keras_for_multi_worker()
    patched = trainer.reduce_per_replica, trainer.TensorFlowTrainer._maybe_symbolic_build
    compat.patch_keras_for_multi_worker()
    assert (trainer.reduce_per_replica, trainer.TensorFlowTrainer._maybe_symbolic_build) == patched
    assert not hasattr(trainer.reduce_per_replica.__wrapped__, "__wrapped__"), "patched twice"

    strategy = tf.distribute.get_strategy()
    assert not compat.in_multi_worker_mode(strategy)
    scalar = tf.constant(2.0)
    assert trainer.reduce_per_replica({"loss": scalar}, strategy, "auto")["loss"] is scalar
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    history = model.fit(tf.zeros((4, 3)), tf.zeros((4, 2)), epochs=1, verbose=0).history
    assert history["loss"] == [0.0]


# Three stages on two localhost workers: fit without any workaround, with the first only, with both.
# Each failure happens while Keras builds or traces, before any collective op runs, so the workers stay
# in step and the next stage can run in the same processes.
STAGES = textwrap.dedent("""
    import json, os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np
    import tensorflow as tf
    import keras
    from pipeline import compat

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = (x.sum(axis=1) > 0).astype("int32")
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)

    def fit():
        with strategy.scope():
            keras.utils.set_random_seed(1)
            model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
            model.compile(optimizer=keras.optimizers.SGD(0.1), metrics=["accuracy"],
                          loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        try:
            history = model.fit(dataset, epochs=2, verbose=0).history
        except Exception as error:
            return {"error": f"{type(error).__name__}: {error}"[-400:]}
        return {"history": history, "weights": [w.tolist() for w in model.get_weights()]}

    result = {"none": fit()}
    compat._patch_symbolic_build()
    result["build_only"] = fit()
    compat._patch_reduce_per_replica()
    result["both"] = fit()
    print("RESULT " + json.dumps(result))
""")


@pytest.mark.slow  # two TensorFlow processes, ~20 s; test_upstream_still_has_both_bugs checks the same in source
def test_two_workers_need_both_workarounds(tmp_path):
    script = tmp_path / "stages.py"
    script.write_text(STAGES)
    out, err = io.StringIO(), io.StringIO()
    status = launch.launch(2, [], command=[sys.executable, str(script)], out=out, err=err, timeout=120)
    lines = out.getvalue().splitlines()
    assert status == 0, err.getvalue() + "\n".join(lines[-30:])
    results = [json.loads(line.partition("RESULT ")[2]) for line in lines if "RESULT " in line]
    assert len(results) == 2
    for result in results:
        none, build_only = result["none"].get("error", ""), result["build_only"].get("error", "")
        assert "unsupported type" in none and "PerReplica" in none, (
            f"{UPGRADE}: fit under MultiWorkerMirroredStrategy no longer fails in the symbolic build "
            f"without workaround 1 (got {result['none']}); remove _patch_symbolic_build"
        )
        assert "Invalid reduction dimension 0 for input with 0 dimensions" in build_only, (
            f"{UPGRADE}: scalar reduction no longer fails without workaround 2 (got {result['build_only']}); "
            "remove _patch_reduce_per_replica"
        )
        assert "error" not in result["both"], result["both"]
    chief, worker = (result["both"] for result in results)
    assert chief == worker, "both workers must end with the same losses and weights"
    assert chief["history"]["loss"][1] < chief["history"]["loss"][0]
