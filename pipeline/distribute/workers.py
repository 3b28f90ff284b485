"""What one training run does on each process of a tf.distribute cluster (used by pipeline/run.py).

`pipeline.distribute.strategy` holds the rules (strategy choice, TF_CONFIG, batch split, sharding); this module
applies them to a run:
    writer_dir         the chief locks and writes the run directory; every other worker writes into a
                       private scratch copy of the chief's resume state, removed at the end
    start              the strategy, resolved before any other TensorFlow op, with replicas and
                       per-replica batch logged
    scope              where variables (model, optimizer) are created: strategy.scope()
    chief_first        the chief prepares the data (archive extraction, image scan) while the other
                       workers wait; they then read its extraction and scan cache
    check_workers_agree  every worker has the same splits and resumes from the same epoch, or all stop
    without_short_batches  no replica gets an empty batch (a TensorFlow 2.21 workaround: pipeline.compat)
    fit_callbacks      callbacks that cannot run under multi_worker are left out (with a log line)
    prepare_phases     the linear learning-rate scaling rule applied to every phase; what
                       multi_worker cannot run refused before anything is written
    end_together       the workers wait at the end until the chief has evaluated, exported and written
                       metrics.json

With the default strategy (one device, no TF_CONFIG) every function here is a no-op or returns its
input: the run is exactly what it was without distribution.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from pathlib import Path

import numpy as np

from pipeline.compat import without_short_batches  # noqa: F401  (re-exported: the spine calls workers.*)
from pipeline.config import rundir
from pipeline.distribute import strategy as distribute

# What a non-chief worker copies from the run directory into its scratch directory: the files that
# decide new / resume / finished (config.yaml, metrics.json) and the resume state itself (backup/), so
# that it takes the same path through the run as the chief and restores the same epoch.
RESUME_FILES = (rundir.RunLayout.CONFIG, rundir.RunLayout.METRICS, rundir.RunLayout.BACKUP)

# Callbacks that call the model's predict function inside `fit`. Under multi_worker Keras all-gathers
# predictions across the workers (keras/src/backend/tensorflow/trainer.py, reduce_per_replica with
# "concat"), so every worker would have to predict the same number of batches in step, and the
# gathered rows would no longer match this worker's labels. They only draw TensorBoard figures (the
# test evaluation after training still writes RUN/evaluation/ with its confusion matrix).
PREDICTING_CALLBACKS = ("ValidationConfusion",)


def is_multi_worker(strategy) -> bool:
    """True for MultiWorkerMirroredStrategy with more than one worker in TF_CONFIG."""
    return distribute.strategy_name(strategy) == "multi_worker" and distribute.num_workers() > 1


@contextlib.contextmanager
def writer_dir(run_dir: Path, *, strategy: str):
    """The directory this process writes the run into, for the duration of the run.

    The chief (and any process outside a multi-worker cluster) holds the run directory's lock
    (`rundir.exclusive`) and writes there. Another worker neither creates nor locks the run directory:
    it writes into a scratch directory that starts as a copy of the chief's `RESUME_FILES` and is
    deleted when the block ends, even on error (`distribute.worker_scratch_dir`). Its checkpoints, logs
    and backups go there: every worker runs the same saves (Keras may need all of them to read
    distributed variables), only the chief's reach the user.

    Args:
        run_dir: the run directory (the same path on every worker: shared storage).
        strategy: `distribute.strategy` of the config (auto, default, mirrored, multi_worker).

    Yields:
        Path: run_dir on the chief, the scratch directory on other workers.

    Raises:
        rundir.RunError: the chief finds the run directory locked by another process.
        distribute.DistributeError: an unknown strategy or a bad TF_CONFIG.
    """
    if distribute.choose_strategy_name(strategy) != "multi_worker" or distribute.is_chief():
        with rundir.exclusive(run_dir):
            yield Path(run_dir)
        return
    with distribute.worker_scratch_dir(run_dir, chief=False, copy_from_run_dir=RESUME_FILES) as scratch:
        yield scratch


def start(name: str, *, global_batch: int, log=print):
    """Resolves `distribute.strategy` and logs the replicas and the per-replica batch.

    Call it before any other TensorFlow op of the run (thread settings may come first): creating a
    MultiWorkerMirroredStrategy configures collective ops, and waits until every worker has started.

    Args:
        name: auto | default | mirrored | multi_worker.
        global_batch: `train.batch_size`, the examples of one step over all replicas.

    Returns:
        The tf.distribute.Strategy.

    Raises:
        distribute.DistributeError: a bad TF_CONFIG, or a global batch that does not divide evenly
            among the replicas (the message names the nearest sizes that do).
    """
    strategy = distribute.resolve_strategy(name)
    info = distribute.describe(strategy)
    per_replica = distribute.per_replica_batch(global_batch, strategy)
    where = ""
    if info["num_workers"] > 1:
        where = f"; this is worker {info['worker_index']}" + (
            " (the chief: it writes the run directory)"
            if info["is_chief"]
            else " (it writes into a scratch directory, removed at the end)"
        )
    log(
        f"distribute: {info['strategy']} strategy, {info['num_workers']} worker(s), "
        f"{info['num_replicas_in_sync']} replica(s) in sync; global batch {global_batch} = {per_replica} "
        f"per replica{where}"
    )
    return strategy


def summary(strategy) -> dict:
    """{strategy, num_workers, num_replicas_in_sync}: what metrics.json records as `distribution`."""
    info = distribute.describe(strategy)
    return {key: info[key] for key in ("strategy", "num_workers", "num_replicas_in_sync")}


def scope(strategy):
    """`strategy.scope()`, or a null context for the default strategy (one device: nothing changes).

    Create the model and every optimizer inside it: Keras takes the strategy a model and an optimizer
    are created under as the one they train with.
    """
    if distribute.strategy_name(strategy) == "default":
        return contextlib.nullcontext()
    return strategy.scope()


def barrier(strategy) -> None:
    """Returns when every worker has called it (an all-reduce of one number); a no-op on one worker.

    Raises:
        tf.errors.UnavailableError: a worker died (TensorFlow's health check aborts the wait).
    """
    if not is_multi_worker(strategy):
        return
    import tensorflow as tf

    # Inside a tf.function: eager MultiWorkerMirroredStrategy.run logs an overhead warning every call.
    tf.function(lambda: strategy.reduce("SUM", strategy.run(lambda: tf.constant(1.0)), axis=None), autograph=False)()


@contextlib.contextmanager
def chief_first(strategy):
    """Runs the block on the chief first; the other workers start it when the chief has finished it.

    For data preparation that writes shared files: archive extraction into `dataset.data_dir` and the
    image scan (`data_dir/.scan-cache`). The chief does the work once; the others then find the files
    extracted and every image in the scan cache (a `stat` per file, no decoding). If the chief fails
    inside the block it never reaches the barrier: the others wait until `launch` (or the cluster)
    stops them, or TensorFlow's health check reports the chief gone.
    """
    if not is_multi_worker(strategy):
        yield
        return
    if distribute.is_chief():
        yield
        barrier(strategy)
    else:
        barrier(strategy)
        yield


def end_together(strategy) -> None:
    """The last call of a distributed run: the workers wait here for the chief, which calls it after
    writing metrics.json. Otherwise a worker that has finished training exits while the chief still
    evaluates, and TensorFlow's heartbeat check logs it on the chief as a crashed task."""
    barrier(strategy)


def fingerprint(parts) -> int:
    """A 48-bit digest of (inputs, labels) pairs: image arrays, or paths / record ids, and labels.

    Exact in a float64 or int64; equal on two workers exactly when their splits hold the same items
    in the same order (up to a 2^-48 chance).
    """
    digest = hashlib.sha256()
    for part in parts:
        for array in part:
            array = np.asarray(array)
            if array.dtype == object or array.dtype.kind in "US":
                digest.update("\n".join(map(str, array.ravel().tolist())).encode())
            else:
                digest.update(str(array.shape).encode() + np.ascontiguousarray(array).tobytes())
            digest.update(b"\x00")
    return int.from_bytes(digest.digest()[:6], "big")


def check_workers_agree(strategy, *, splits, resume_epoch: int, completed_phases: int) -> None:
    """Raises on every worker when the workers would not train the same run.

    Every worker must carve the same train/validation/test splits (each then reads its share) and
    restore the same resume state; a worker that reads another copy of the data (a file that failed
    to decode on one host only) or another run directory (not on shared storage) would otherwise train
    out of step or hang in a collective op. One all-gather of three numbers; a no-op on one worker.

    Args:
        splits: the (inputs, labels) pairs of train, validation and test.
        resume_epoch: the epoch this worker's resume state restores (0 for a new run).
        completed_phases: the training phases its resume state marks complete.

    Raises:
        distribute.DistributeError: naming what differs and each worker's value.
    """
    if not is_multi_worker(strategy):
        return
    import tensorflow as tf

    names = ("splits", "resume_epoch", "completed_phases")
    local = tf.constant([fingerprint(splits), int(resume_epoch), int(completed_phases)], tf.int64)
    gathered = tf.function(lambda: strategy.gather(strategy.run(lambda: local), axis=0), autograph=False)()
    rows = gathered.numpy().reshape(-1, len(names))
    per_worker = rows[:: max(1, len(rows) // distribute.num_workers())]  # one row per worker
    differing = [
        f"{name}: " + ", ".join(f"worker {index} {int(value)}" for index, value in enumerate(per_worker[:, column]))
        for column, name in enumerate(names)
        if len(set(rows[:, column].tolist())) > 1
    ]
    if differing:
        raise distribute.DistributeError(
            "the workers of this run disagree on " + "; ".join(differing) + ". Every worker must read the same "
            "data (dataset.root / dataset.data_dir identical on every host) and the same run directory "
            "(--run-dir on storage every host mounts); fix that and start every worker again."
        )


def fit_callbacks(callbacks: list, strategy, *, log=print) -> list:
    """`callbacks` without those that cannot run inside `fit` under multi_worker (PREDICTING_CALLBACKS:
    per-epoch validation confusion matrices); unchanged under other strategies."""
    if not is_multi_worker(strategy):
        return list(callbacks)
    kept = [callback for callback in callbacks if type(callback).__name__ not in PREDICTING_CALLBACKS]
    if len(kept) < len(callbacks):
        log(
            "distribute: no per-epoch validation confusion matrix in TensorBoard under multi_worker (Keras "
            "all-gathers predictions across workers); the test evaluation still writes RUN/evaluation/"
        )
    return kept


def prepare_phases(
    plan: list, strategy, *, scale_learning_rate: bool, global_batch: int, base_batch: int, log=print
) -> list:
    """The training phases as this strategy runs them: with the linear learning-rate scaling rule
    applied when `scale_learning_rate`, and refused where multi_worker cannot run them.

    Scaling multiplies each phase's peak rate (`optimizer.learning_rate`) and the polynomial schedule's
    end rate by global_batch / base_batch (`distribute.scale_learning_rate`: Goyal et al. 2017,
    arXiv:1706.02677); fractions of the peak (cosine `alpha`, step `factor`) and warm-up stay as they
    are. It applies whatever the strategy: it follows the global batch, not the replica count. The
    config, and so config.yaml, keeps the unscaled values; each scaled rate is logged.

    Args:
        plan: `phases.plan(config.train)` (frozen dataclasses with `key`, `optimizer`, `schedule`,
            `cache_features`).
        scale_learning_rate: `distribute.scale_learning_rate`.
        global_batch: `train.batch_size`; base_batch: `distribute.base_batch_size`.

    Raises:
        distribute.DistributeError: a `cache_features` phase under multi_worker (its features are
            computed outside `fit`, from every image, on each worker; not supported).
    """
    if is_multi_worker(strategy):
        for phase in plan:
            if phase.cache_features:
                raise distribute.DistributeError(
                    f"{phase.key}.cache_features is not supported under distribute.strategy multi_worker; set "
                    f"{phase.key}.cache_features=false (the phase then trains on images, on every worker), or "
                    f"train on one host. Received: {phase.key}.cache_features=true"
                )
    if not scale_learning_rate:
        return list(plan)
    scaled = []
    for phase in plan:
        rate = distribute.scale_learning_rate(
            phase.optimizer.learning_rate, global_batch=global_batch, base_batch=base_batch
        )
        end = distribute.scale_learning_rate(
            phase.schedule.end_learning_rate, global_batch=global_batch, base_batch=base_batch
        )
        log(
            f"distribute.scale_learning_rate: {phase.key}.optimizer.learning_rate {phase.optimizer.learning_rate:g} "
            f"x {global_batch}/{base_batch} = {rate:g}"
        )
        scaled.append(
            dataclasses.replace(
                phase,
                optimizer=dataclasses.replace(phase.optimizer, learning_rate=rate),
                schedule=dataclasses.replace(phase.schedule, end_learning_rate=end),
            )
        )
    return scaled


def is_chief(strategy) -> bool:
    """Whether this process writes what the user sees: always outside a multi-worker cluster."""
    return distribute.describe(strategy)["is_chief"]


def shard(strategy) -> tuple[int, int]:
    """(workers, this worker's index) for `Splits.dataset(shard=...)`: (1, 0) outside multi_worker."""
    info = distribute.describe(strategy)
    return info["num_workers"], info["worker_index"]


class Cluster:
    """The run's tf.distribute strategy and this process's place in it, behind one object.

    The driver asks it what to do (where to build the model, who prepares the data first, which share of
    the data to read, who writes) and never branches on the strategy: on one device every method is the
    plain single-process behaviour.
    """

    def __init__(self, strategy):
        self.strategy = strategy

    @classmethod
    def start(cls, name: str, *, global_batch: int, log=print) -> Cluster:
        """`start` (resolves `distribute.strategy`, logs replicas and batch split) as a Cluster."""
        return cls(start(name, global_batch=global_batch, log=log))

    @property
    def is_chief(self) -> bool:
        """Whether this process writes the run directory, evaluates and exports."""
        return is_chief(self.strategy)

    def scope(self):
        """Where the model and every optimizer are created (`scope`)."""
        return scope(self.strategy)

    def chief_first(self):
        """Data preparation that writes shared files, on the chief first (`chief_first`)."""
        return chief_first(self.strategy)

    def prepare_phases(self, plan: list, **options) -> list:
        """The phases as this strategy runs them (`prepare_phases`)."""
        return prepare_phases(plan, self.strategy, **options)

    def datasets(self, splits) -> tuple:
        """(train, validation or None): this worker's share of the training and validation pipelines,
        without last batches smaller than the replica count."""
        share = shard(self.strategy)
        train = splits.dataset("train", training=True, shard=share)
        validation = splits.dataset("validation", shard=share) if len(splits.validation[1]) else None
        return without_short_batches(self.strategy, train, validation)

    def fit_callbacks(self, callbacks: list, *, log=print) -> list:
        """`callbacks` less those that cannot run inside `fit` here (`fit_callbacks`)."""
        return fit_callbacks(callbacks, self.strategy, log=log)

    def check_agree(self, splits, resume) -> None:
        """Every worker carved the same splits and restores the same resume point (`check_workers_agree`)."""
        check_workers_agree(
            self.strategy,
            splits=(splits.train, splits.validation, splits.test),
            resume_epoch=resume.epoch,
            completed_phases=resume.completed_phases,
        )

    def summary(self) -> dict:
        """{strategy, num_workers, num_replicas_in_sync} (`summary`)."""
        return summary(self.strategy)

    def end_together(self) -> None:
        """The workers wait here for the chief (`end_together`)."""
        end_together(self.strategy)
