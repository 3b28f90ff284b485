"""Choosing a tf.distribute strategy, and the rules that follow from it (batch split, chief, sharding).

`distribute.strategy` picks one of:
    default       TensorFlow's default strategy: one device, exactly today's behaviour.
    mirrored      MirroredStrategy: one replica per local GPU (or the given devices), one process.
    multi_worker  MultiWorkerMirroredStrategy: one process per host (or per `launch` worker), each
                  told its place by the TF_CONFIG environment variable; Keras' fit needs the workarounds
                  in `pipeline.compat.patch_keras_for_multi_worker`, applied here.
    auto          multi_worker when TF_CONFIG names more than one worker, mirrored when more than one
                  GPU is visible, otherwise default.

`train.batch_size` is the global batch: each of the `num_replicas_in_sync` replicas gets
`per_replica_batch(...)` examples a step, and the gradients are averaged across them.

TF_CONFIG is JSON: {"cluster": {"chief": ["host:port"], "worker": ["host:port", ...]},
"task": {"type": "worker", "index": 0}}. Without TF_CONFIG this process is a single worker and the chief.
TensorFlow is imported inside the functions that need it, so the TF_CONFIG helpers stay TF-free.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from pipeline.config.choices import STRATEGIES
from pipeline.core.errors import UserError, did_you_mean

# tf.distribute's own task types that take part in training (a parameter server or an evaluator does not).
TRAINING_TASK_TYPES = ("chief", "worker")


class DistributeError(UserError):
    """A bad distribute setting, TF_CONFIG or global batch size (exit code 2)."""


def read_tf_config(environ=None) -> dict:
    """The parsed TF_CONFIG environment variable, or {} when it is unset or empty.

    Raises:
        DistributeError: TF_CONFIG is not a JSON object, or its task names a type or index that the
            cluster does not have.
    """
    text = (os.environ if environ is None else environ).get("TF_CONFIG", "").strip()
    if not text:
        return {}
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise DistributeError(f"TF_CONFIG is not valid JSON ({error}). Received: TF_CONFIG={text!r}") from None
    if not isinstance(config, dict):
        raise DistributeError(f"TF_CONFIG must be a JSON object with 'cluster' and 'task'. Received: {text!r}")
    task = config.get("task") or {}
    cluster = config.get("cluster") or {}
    if task:
        task_type, index = task.get("type"), task.get("index", 0)
        if task_type not in cluster:
            raise DistributeError(
                f"TF_CONFIG task.type {task_type!r} is not in its cluster; allowed: "
                f"{sorted(cluster)}{did_you_mean(task_type, cluster)}. Received: {text!r}"
            )
        if not isinstance(index, int) or not 0 <= index < len(cluster[task_type]):
            raise DistributeError(
                f"TF_CONFIG task.index must be in 0..{len(cluster[task_type]) - 1} for "
                f"{task_type!r}. Received: task.index={index!r}"
            )
    return config


def num_workers(tf_config: dict | None = None) -> int:
    """Training processes in the cluster (chief plus workers); 1 without TF_CONFIG."""
    cluster = (read_tf_config() if tf_config is None else tf_config).get("cluster") or {}
    return max(1, sum(len(cluster.get(task_type, [])) for task_type in TRAINING_TASK_TYPES))


def worker_index(tf_config: dict | None = None) -> int:
    """This process's position among the training processes: the chief first, then worker 0, 1, ...

    The same numbering as MultiWorkerMirroredStrategy's input pipelines (tf.distribute's id_in_cluster).
    """
    config = read_tf_config() if tf_config is None else tf_config
    task, cluster = config.get("task") or {}, config.get("cluster") or {}
    if task.get("type") == "worker":
        return len(cluster.get("chief", [])) + int(task.get("index", 0))
    return 0


def is_chief(tf_config: dict | None = None) -> bool:
    """Whether this process writes what the user sees (checkpoints, logs, metrics, exports).

    The chief is the task of type "chief", or worker 0 when the cluster has no chief; a process
    without TF_CONFIG is its own chief. Other task types (evaluator, ps) are not.
    """
    config = read_tf_config() if tf_config is None else tf_config
    task, cluster = config.get("task") or {}, config.get("cluster") or {}
    if not task:
        return True
    if task.get("type") == "chief":
        return True
    return task.get("type") == "worker" and int(task.get("index", 0)) == 0 and "chief" not in cluster


def _visible_gpus() -> int:
    import tensorflow as tf

    return len(tf.config.list_physical_devices("GPU"))


def choose_strategy_name(name: str, *, tf_config: dict | None = None, gpus: int | None = None) -> str:
    """The concrete strategy name that `name` stands for (resolves "auto"; validates the rest).

    Args:
        name: one of STRATEGIES.
        tf_config: parsed TF_CONFIG (default: read from the environment).
        gpus: visible GPU count (default: asked from TensorFlow, only when needed).

    Raises:
        DistributeError: an unknown name (with a "did you mean").
    """
    if name not in STRATEGIES:
        raise DistributeError(
            f"distribute.strategy must be one of {', '.join(STRATEGIES)}"
            f"{did_you_mean(name, STRATEGIES)}. Received: distribute.strategy={name!r}"
        )
    if name != "auto":
        return name
    if num_workers(tf_config) > 1:
        return "multi_worker"
    return "mirrored" if (_visible_gpus() if gpus is None else gpus) > 1 else "default"


def resolve_strategy(name: str, *, devices: list[str] | None = None):
    """The tf.distribute.Strategy for `distribute.strategy`.

    Call it first, before any dataset, model or other TensorFlow op: MultiWorkerMirroredStrategy must
    configure collective ops at program start-up. Build the model and optimizer under
    `strategy.scope()`.

    Args:
        name: auto | default | mirrored | multi_worker (see the module docstring).
        devices: mirrored only: the devices to replicate over (default: every visible GPU, or the CPU),
            e.g. ["/cpu:0", "/cpu:1"] for logical CPU devices in tests.

    Returns:
        A tf.distribute.Strategy; the default strategy for "default".

    Raises:
        DistributeError: an unknown name, a bad TF_CONFIG, or `devices` given for another strategy.
    """
    import tensorflow as tf

    concrete = choose_strategy_name(name)
    if devices is not None and concrete != "mirrored":
        raise DistributeError(
            f"devices apply to the mirrored strategy only. Received: distribute.strategy="
            f"{name!r} (resolved to {concrete!r}), devices={devices!r}"
        )
    if concrete == "default":
        return tf.distribute.get_strategy()
    if concrete == "mirrored":
        return tf.distribute.MirroredStrategy(devices)
    from pipeline import compat

    compat.patch_keras_for_multi_worker()
    return tf.distribute.MultiWorkerMirroredStrategy()


def strategy_name(strategy) -> str:
    """ "default", "mirrored" or "multi_worker" for a strategy object (its class name otherwise)."""
    import tensorflow as tf

    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "multi_worker"
    if isinstance(strategy, tf.distribute.MirroredStrategy):
        return "mirrored"
    # The default strategy's class is private (_DefaultDistributionStrategy); its name is enough here.
    if type(strategy).__name__ == "_DefaultDistributionStrategy":
        return "default"
    return type(strategy).__name__


def describe(strategy) -> dict:
    """{strategy, num_workers, num_replicas_in_sync, worker_index, is_chief} for logs and metrics.json.

    Worker count, index and chief come from TF_CONFIG for multi_worker and are 1, 0, True otherwise.
    """
    name = strategy_name(strategy)
    config = read_tf_config() if name == "multi_worker" else {}
    return {
        "strategy": name,
        "num_workers": num_workers(config),
        "num_replicas_in_sync": int(strategy.num_replicas_in_sync),
        "worker_index": worker_index(config),
        "is_chief": is_chief(config),
    }


def per_replica_batch(global_batch: int, strategy) -> int:
    """Examples each replica gets per step: global_batch / num_replicas_in_sync.

    Args:
        global_batch: `train.batch_size`, the examples of one optimizer step across all replicas.
        strategy: a tf.distribute.Strategy, or the replica count as an int.

    Raises:
        DistributeError: the global batch does not divide evenly among the replicas (uneven replicas
            would weigh examples differently); the message names the nearest batch sizes that do.
    """
    replicas = strategy if isinstance(strategy, int) else int(strategy.num_replicas_in_sync)
    if global_batch < replicas or global_batch % replicas:
        lower = max(replicas, global_batch // replicas * replicas)
        raise DistributeError(
            f"train.batch_size is the global batch and must divide evenly among the {replicas} replicas in "
            f"sync; use {lower} or {lower + replicas}. Received: train.batch_size={global_batch}"
        )
    return global_batch // replicas


def scale_learning_rate(learning_rate: float, *, global_batch: int, base_batch: int) -> float:
    """The linear scaling rule: learning_rate * global_batch / base_batch.

    Goyal et al. 2017, "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour" (arXiv:1706.02677),
    section 2.1: when the minibatch is multiplied by k, multiply the learning rate by k. It held for SGD
    with momentum up to a batch of 8k images, with a gradual warm-up over the first epochs (their 5);
    for adaptive optimizers (Adam, RMSprop) it is a starting point, not a guarantee.

    Args:
        learning_rate: the rate tuned at `base_batch`.
        global_batch: the batch actually used, across all replicas.
        base_batch: the batch `learning_rate` was tuned for.

    Raises:
        DistributeError: a batch size that is not a positive integer.
    """
    for key, value in (("global_batch", global_batch), ("base_batch", base_batch)):
        if not isinstance(value, int) or value < 1:
            raise DistributeError(f"{key} must be a positive integer. Received: {key}={value!r}")
    return learning_rate * global_batch / base_batch


SCRATCH_PREFIX = "pipeline-worker"


def remove_stale_scratch_dirs(directory=None) -> list[Path]:
    """Deletes the scratch directories of worker processes that no longer exist; returns them.

    A worker killed with SIGKILL, or with SIGTERM while blocked in a collective op (how `launch` stops
    the others when one dies), never reaches the cleanup of `worker_scratch_dir`. Its directory names
    its process id; the next worker started on this host removes it once that process is gone.

    Args:
        directory: where the scratch directories are (default: tempfile.gettempdir(), i.e. $TMPDIR).
    """
    removed = []
    for path in Path(directory or tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*-pid*-*"):
        pid = path.name.partition("-pid")[2].partition("-")[0]
        if not pid.isdigit() or not path.is_dir():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # that process still runs (or belongs to another user): not ours to remove
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


@contextlib.contextmanager
def worker_scratch_dir(run_dir, *, chief: bool | None = None, copy_from_run_dir=()):
    """Where this worker writes: `run_dir` on the chief, a private temporary directory elsewhere.

    Under MultiWorkerMirroredStrategy every worker must run the same saves (reading some variables is a
    collective op), but only the chief's files should reach the user. Non-chief workers write into a
    temporary directory that is deleted when the block ends, even on error (or, for a process killed
    before it could, by the next worker started on the host: `remove_stale_scratch_dirs`).

    Args:
        run_dir: the run directory (str or Path).
        chief: whether this process is the chief (default: `is_chief()` from TF_CONFIG).
        copy_from_run_dir: paths relative to run_dir copied into a non-chief's scratch directory on
            entry, e.g. ("backup",) so that every worker restores the chief's resume state.

    Yields:
        Path: run_dir for the chief, the scratch directory otherwise.
    """
    chief = is_chief() if chief is None else chief
    if chief:
        yield Path(run_dir)
        return
    remove_stale_scratch_dirs()
    scratch = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{worker_index()}-pid{os.getpid()}-"))
    try:
        for relative in copy_from_run_dir:
            source = Path(run_dir) / relative
            if source.is_dir():
                shutil.copytree(source, scratch / relative)
            elif source.is_file():
                (scratch / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, scratch / relative)
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
