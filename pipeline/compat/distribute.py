"""tf.distribute: Keras 3.15.1's trainer under MultiWorkerMirroredStrategy (keras#20585, tensorflow#72388).

Part of `pipeline.compat` (see its docstring); tested in tests/test_compat_*.py.
"""

from __future__ import annotations

import keras

# --------------------------------------------------------------------------------------------------
# tf.distribute (see pipeline/distribute/strategy.py)
# --------------------------------------------------------------------------------------------------
#
# Keras 3.15.1's TensorFlow trainer breaks `model.fit` under MultiWorkerMirroredStrategy (several worker
# processes, TF_CONFIG) in two places; both are in keras/src/backend/tensorflow/trainer.py:
#   1. `TensorFlowTrainer._maybe_symbolic_build` reduces the first distributed batch with
#      `strategy.reduce("MEAN", batch, axis=None)` only to learn its shapes. In multi-worker mode that
#      raises "Attempt to convert a value (PerReplica...) with an unsupported type".
#   2. `reduce_per_replica` reduces every step output with `strategy.reduce("MEAN", v, axis=0)` in
#      multi-worker mode; loss and metric results are scalars, so TF raises "Invalid reduction dimension
#      0 for input with 0 dimensions" (keras-team/keras#20585, tensorflow/tensorflow#72388).
# `patch_keras_for_multi_worker` replaces both with versions that differ from upstream only in
# multi-worker mode: the symbolic build takes this worker's first local replica (shapes are all it needs),
# and scalars are reduced with axis=None (the mean across replicas; every replica already holds the same
# synchronised metric value). tests/compat/test_compat_distribute.py fails when an upgrade fixes either bug.

MULTI_WORKER_ISSUES = ("keras-team/keras#20585", "tensorflow/tensorflow#72388")


def _keras_tf_trainer():
    """Keras' private TensorFlow trainer module (keras.src.backend.tensorflow.trainer)."""
    from keras.src.backend.tensorflow import trainer

    return trainer


def in_multi_worker_mode(strategy) -> bool:
    """True for a MultiWorkerMirroredStrategy whose cluster has more than one worker.

    Uses Keras' private `_collective_all_reduce_multi_worker`, the test Keras itself applies before its
    multi-worker reductions, so the patches below switch on exactly where the upstream bugs do.
    """
    return bool(_keras_tf_trainer()._collective_all_reduce_multi_worker(strategy))


def _first_local_value(value):
    """One replica's local tensor of a distributed value (the value itself when it is not distributed)."""
    import tensorflow as tf

    if isinstance(value, tf.distribute.DistributedValues):
        return value.values[0]
    return value


def _patch_symbolic_build() -> None:
    """Workaround 1: the symbolic build reads one local replica instead of a cross-worker reduce."""
    trainer = _keras_tf_trainer()
    original_build = trainer.TensorFlowTrainer._maybe_symbolic_build
    if getattr(original_build, "_pipeline_multi_worker_patch", False):
        return

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if iterator is None or self._distribute_strategy is None or not in_multi_worker_mode(self.distribute_strategy):
            return original_build(self, iterator=iterator, data_batch=data_batch)
        # Same batch consumption as upstream (one `next` on the first epoch's iterator); only the
        # cross-worker reduce is replaced by a local read, since the build needs shapes and dtypes only.
        for _, _, epoch_iterator in iterator:
            data_batch = keras.tree.map_structure(_first_local_value, next(epoch_iterator))
            break
        return original_build(self, iterator=None, data_batch=data_batch)

    _maybe_symbolic_build._pipeline_multi_worker_patch = True
    _maybe_symbolic_build.__wrapped__ = original_build
    trainer.TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build


def _patch_reduce_per_replica() -> None:
    """Workaround 2: multi-worker step outputs that are scalars are reduced with axis=None."""
    trainer = _keras_tf_trainer()
    original_reduce = trainer.reduce_per_replica
    if getattr(original_reduce, "_pipeline_multi_worker_patch", False):
        return

    def reduce_per_replica(values, strategy, reduction):
        if reduction not in ("auto", "mean") or not in_multi_worker_mode(strategy):
            return original_reduce(values, strategy, reduction)

        def _reduce(value):
            if _first_local_value(value).shape.rank == 0:
                return strategy.reduce("MEAN", value, axis=None)
            return original_reduce(value, strategy, reduction)

        return keras.tree.map_structure(_reduce, values)

    reduce_per_replica._pipeline_multi_worker_patch = True
    reduce_per_replica.__wrapped__ = original_reduce
    # The step functions look `reduce_per_replica` up in the module's globals at call time
    # (TensorFlowTrainer._make_function), so replacing the module attribute reaches them.
    trainer.reduce_per_replica = reduce_per_replica


def patch_keras_for_multi_worker() -> None:
    """Makes `model.fit`/`evaluate` work under MultiWorkerMirroredStrategy with Keras 3.15.1 (idempotent).

    Replaces `TensorFlowTrainer._maybe_symbolic_build` and the module function `reduce_per_replica` in
    keras.src.backend.tensorflow.trainer (see the comment above for the two bugs). Outside multi-worker
    mode both delegate to the upstream code unchanged, so single-device and `mirrored` runs are untouched.
    The upstream functions stay reachable as `__wrapped__`. Apply it before `model.fit`;
    `pipeline.distribute.strategy.resolve_strategy("multi_worker")` does.
    """
    _patch_symbolic_build()
    _patch_reduce_per_replica()


# --------------------------------------------------------------------------------------------------
# TensorFlow 2.21's oneDNN Conv2D on an empty per-replica batch
# --------------------------------------------------------------------------------------------------


def without_short_batches(strategy, *datasets):
    """The datasets `fit` gets, without batches of fewer examples than replicas in sync (None stays None).

    tf.distribute splits a batch among the replicas, and the last batch of an epoch (or of a worker's
    share) can hold fewer examples than there are replicas; some replica then gets an empty batch, and
    under multi_worker a worker whose share is one example longer runs one step more while its peers get
    empty batches. Empty batches are valid tf.distribute input, but on an x86 CPU TensorFlow 2.21's
    oneDNN Conv2D returns an empty input unchanged ([0, H, W, C_in], not [0, H', W', C_out]), so the
    step fails with "input depth must be evenly divisible by filter depth" (found here, no upstream
    issue; tests/distribute/test_distributed_runs.py::test_onednn_convolutions_still_return_an_empty_batch_unchanged
    fails when a TensorFlow upgrade fixes it). Dropping the batches shorter than the replica count leaves
    every replica a non-empty batch in every step; at most replicas - 1 examples per worker and epoch are
    left out (other ones each epoch in training, whose order is reshuffled; the same ones in validation).
    One replica: the datasets as they are.

    Args:
        strategy: the run's tf.distribute.Strategy.
        datasets: batched datasets whose elements are tuples (images first), or None.

    Returns:
        A tuple of the datasets, in order.
    """
    replicas = int(strategy.num_replicas_in_sync)
    if replicas == 1:
        return datasets
    import tensorflow as tf

    return tuple(
        None if dataset is None else dataset.filter(lambda *batch: tf.shape(batch[0])[0] >= replicas)
        for dataset in datasets
    )
