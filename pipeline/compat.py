"""Every use of Keras or TensorFlow internals, and every workaround for an upstream bug, in one place.

Each function here names what it reaches into and why; `tests/test_compat.py` has one test per access
that fails loudly, naming the installed Keras version, when an upgrade changes the internal.
"""

from __future__ import annotations

import keras

KERAS_VERSION = keras.__version__


# --------------------------------------------------------------------------------------------------
# Layer graphs
# --------------------------------------------------------------------------------------------------
#
# Walking nested models, and reading the functional graph's nodes. Keras 3 has no public API for either:
# `Model.layers` lists one level and misses the sublayers a custom layer tracks, and a functional model's
# nodes (which call of a layer belongs to which graph) are only in private attributes. Used by
# pipeline/phases.py, features.py, model_stats.py and models/weights.py; tests/test_compat_layers.py has
# one test per access below.


def sublayers(layer) -> list:
    """The layers `layer` tracks directly, in tracking order (graph order for a functional model).

    Reads Keras' private `Layer._layers`, the list Keras itself walks to set `trainable` and to collect
    weights: for a model it is `model.layers` (plus a Sequential's InputLayer), and unlike `layers` it
    also exists on plain layers that hold other layers.
    """
    return list(layer._layers)


def _graph_children(layer) -> list:
    """A nested model's graph operations in graph order (layers, and operations such as a
    `keras.ops.flip` node that are not layers); [] for anything that is not a model."""
    if not isinstance(layer, keras.Model):
        return []
    operations = getattr(layer, "operations", None)  # functional models; a subclassed one has layers only
    return list(operations) if operations is not None else list(layer.layers)


def walk_layers(layer, *, include_self: bool = False, graph: bool = False):
    """Yields (ancestors, layer) for every layer nested in `layer`, depth first: each layer right before
    the layers inside it.

    Args:
        layer: a keras.Layer or keras.Model.
        include_self: also yield `layer` itself first (with ancestors ()).
        graph: False: the tracked layers (`sublayers`): everything whose weights and `trainable` flag
            belong to `layer`, also inside custom layers, each layer once (a layer held in two places:
            where first met). True: the functional graphs instead: each nested model's `operations` in
            graph order (operations that are not layers included), descending into nested models only,
            i.e. what runs, where: a layer called in two graphs is yielded once in each.
    Yields:
        (ancestors, layer): ancestors is the tuple of containers from `layer` (first) down to the one
        that holds the yielded layer directly.
    """
    children = _graph_children if graph else sublayers
    seen = {id(layer)}
    if include_self:
        yield (), layer

    def visit(container, ancestors):
        for child in children(container):
            if not graph:
                if id(child) in seen:
                    continue
                seen.add(id(child))
            yield ancestors, child
            yield from visit(child, (*ancestors, child))

    yield from visit(layer, (layer,))


def iter_layers(layer, *, include_self: bool = False):
    """Yields every layer tracked inside `layer` (nested models and their layers included), depth first,
    each once: the layers `walk_layers(layer)` yields, without their ancestors."""
    for _, found in walk_layers(layer, include_self=include_self):
        yield found


def find_layer_path(model, name: str) -> list | None:
    """[model, nested model, ..., the layer called `name`]: the chain of functional graphs that leads to
    the first layer of that name (depth first, see `walk_layers(graph=True)`), or None when none has it."""
    for ancestors, found in walk_layers(model, graph=True):
        if found.name == name:
            return [*ancestors, found]
    return None


def find_layer(model, name: str):
    """The layer called `name` anywhere in `model` (nested models included), or None."""
    path = find_layer_path(model, name)
    return None if path is None else path[-1]


def force_trainable(layer, value: bool) -> None:
    """Sets `trainable` on `layer` and every layer inside it, also where a flag already has that value.

    Under the TensorFlow backend `layer.trainable = value` does nothing when `layer.trainable` already
    is `value`: Keras' `KerasAutoTrackable.__setattr__` (keras/src/backend/tensorflow/trackable.py)
    returns early for `self.x = self.x` when the old value `is` the new one, as True and False always are,
    so sublayers frozen earlier would stay frozen under a container that is already trainable. The
    property's setter is called directly instead, on each layer.
    """
    setter = keras.layers.Layer.trainable.fset
    for found in list(iter_layers(layer, include_self=True)):
        setter(found, bool(value))


def inbound_nodes(operation) -> list:
    """The graph nodes of every symbolic call of `operation` (a layer or op), oldest first; each node has
    `input_tensors` and `output_tensors`. Reads Keras' private `Operation._inbound_nodes`."""
    return list(getattr(operation, "_inbound_nodes", None) or [])


def nodes_in(model, operation) -> list:
    """The nodes of `operation`'s calls that belong to the functional `model`'s own graph.

    A layer reused in several graphs (e.g. a network inside train.py's outer model, and the network's own
    graph) has one node per call; Keras' private `Functional._nodes` holds the keys of the graph's nodes,
    "<id of the operation>_ib-<index in its inbound nodes>" (`make_node_key` in
    keras/src/ops/function.py).
    """
    keys = model._nodes
    return [node for index, node in enumerate(inbound_nodes(operation))
            if f"{id(operation)}_ib-{index}" in keys]


def node_tensor(operation, attribute: str):
    """`operation.output` or `.input` ("output" / "input"); None when the operation was never called
    symbolically. Where the public attribute raises otherwise (Keras 2 refused it for an operation called
    several times), the first call's tensor from `inbound_nodes` (a list when that call has several)."""
    try:
        return getattr(operation, attribute)
    except Exception:  # noqa: BLE001 - "never been called", or "has multiple inbound nodes"
        nodes = inbound_nodes(operation)
        if not nodes:
            return None
        tensors = nodes[0].output_tensors if attribute == "output" else nodes[0].input_tensors
        return tensors[0] if len(tensors) == 1 else tensors


# --------------------------------------------------------------------------------------------------
# Callbacks and fit state
# --------------------------------------------------------------------------------------------------
#
# Keras' BackupAndRestore (keras/src/callbacks/backup_and_restore.py) saves through the private hook
# `_save_model` and counts epochs in `_current_epoch`; a fit learns where to start from the model's
# private `_initial_epoch` (keras/src/backend/tensorflow/trainer.py: `initial_epoch = self._initial_epoch
# or initial_epoch`), which is how BackupAndRestore itself skips finished epochs. Our crash-safe backup
# (pipeline/callbacks.py) keeps that mechanism and reaches it only through this class.


class BackupAndRestoreHooks(keras.callbacks.BackupAndRestore):
    """keras.callbacks.BackupAndRestore with its private hooks under public names.

    Subclasses implement `save_backup()` (called where Keras would write its own backup) and read
    `current_epoch` (epochs completed, counted by Keras); `skip_to_epoch(epoch)` makes the fit in progress
    start after `epoch` completed epochs.
    """

    def _save_model(self):  # the private hook Keras calls at each save point
        self.save_backup()

    def save_backup(self) -> None:
        raise NotImplementedError

    @property
    def current_epoch(self) -> int:
        return self._current_epoch

    def skip_to_epoch(self, epoch: int) -> None:
        self.model._initial_epoch = epoch  # read by the fit in progress


# --------------------------------------------------------------------------------------------------
# tf.distribute (see pipeline/distribute.py)
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
# synchronised metric value). tests/test_compat_distribute.py fails when an upgrade fixes either bug.

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
        if iterator is None or self._distribute_strategy is None or not in_multi_worker_mode(
                self.distribute_strategy):
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
    `pipeline.distribute.resolve_strategy("multi_worker")` does.
    """
    _patch_symbolic_build()
    _patch_reduce_per_replica()


# --------------------------------------------------------------------------------------------------
# Augmentation layers' randomness, and the optimizer's EMA slots (see pipeline/augment.py, pipeline/ema.py)
# --------------------------------------------------------------------------------------------------
#
# Keras' image augmentation layers draw their random numbers from a `SeedGenerator` whose state is a
# variable that every draw reads and increments. Inside a parallel `tf.data` map, batches read and bump
# it in whatever order the threads run, so a seed does not repeat a run, and two batches can read the
# same state and draw the same numbers. `route_seeds` makes every draw of a layer (and of the layers it
# holds: RandAugment's eleven, RandomColorJitter's four) come from `StatelessSeedStream`: seeds folded
# from one stateless seed per batch, so the augmentation is a pure function of (batch, seed). It
# replaces the private `Layer._get_seed_generator` (keras/src/layers/preprocessing/data_layer.py),
# through which all those layers fetch their generator, and walks nested layers with the private
# `Layer._flatten_layers`.
#
# RandAugment draws its `num_ops` operation indices once per call, so a whole batch gets the same
# operations (only their magnitudes vary per image); the paper and its reference code pick the operations
# per image. `per_image_rand_augment` replaces the indices (the "layer_idxes" entry of the dict that
# `RandAugment.get_random_transformation` returns, shape [num_ops]) with per-image ones, shape
# [num_ops, batch, 1, 1, 1]: `RandAugment.transform_images` computes every candidate operation on the
# whole batch anyway and selects with `where(layer_idxes[i] == index, ...)`, which then broadcasts per
# image. Same cost. (Before Keras 3.11 the indices were drawn once per trace: keras-team/keras#21169.)
#
# CutMix labels an example with the continuous box area (1 - (x1 - x0) (y1 - y0) / (H W)) but pastes
# the whole pixels whose coordinates fall in the box, so label and pixels disagree by up to a row and a
# column (3% of a 32 x 32 image). `exact_area_cut_mix` recomputes the "mix_weight" entry of the dict that
# `CutMix.get_random_transformation` returns from its "batch_masks" entry (the pasted pixels, [B, H, W, C]
# bool, channels last), as the CutMix authors' code does ("adjust lambda to exactly match pixel ratio").
#
# The weight EMA of Keras optimizers (`use_ema=True`) lives in the private `_model_variables_moving_average`
# list, aligned with the private `_trainable_variables` (keras/src/optimizers/base_optimizer.py), and a
# `LossScaleOptimizer` (mixed_float16) holds the EMA in its `inner_optimizer`. `ema_variable_pairs` reads
# them; tests/test_compat_augment.py fails, naming the Keras version, when any of these internals change.

RAND_AUGMENT_ISSUE = "keras-team/keras#21169"


class StatelessSeedStream(keras.random.SeedGenerator):
    """A `SeedGenerator` without state: inside `with stream.using(seed):` (seed: int32/int64 [2], one
    per batch), its n-th draw is `tf.random.experimental.stateless_fold_in(seed, n)`.

    Keras' random functions accept a `SeedGenerator` and call its `next()`; this one is never a variable,
    so it is safe to trace once into a parallel tf.data map. Drawing outside `using` raises RuntimeError.
    """

    def __init__(self):  # no super().__init__(): the base class would create the state variable
        self.name = "stateless_seed_stream"
        self._seed = None
        self._draws = 0

    def next(self, ordered=True):
        import tensorflow as tf

        if self._seed is None:
            raise RuntimeError("StatelessSeedStream: a random draw outside `with stream.using(seed):`")
        self._draws += 1
        return tf.random.experimental.stateless_fold_in(self._seed, self._draws)

    def using(self, seed):
        """Context manager: draws inside it are folded from `seed` (a tensor [2]), counted from 1."""
        import contextlib

        @contextlib.contextmanager
        def scope():
            previous = (self._seed, self._draws)
            self._seed, self._draws = seed, 0
            try:
                yield self
            finally:
                self._seed, self._draws = previous

        return scope()

    def get_config(self):
        return {}


def route_seeds(layer: keras.layers.Layer, stream: StatelessSeedStream) -> keras.layers.Layer:
    """Makes `layer` and every layer nested in it draw from `stream` instead of their own generators
    (see the comment above). Returns `layer`."""
    for inner in iter_layers(layer, include_self=True):
        object.__setattr__(inner, "_get_seed_generator", lambda backend=None: stream)
    return layer


def per_image_rand_augment(layer: keras.layers.Layer, stream: StatelessSeedStream) -> keras.layers.Layer:
    """Makes a `keras.layers.RandAugment` choose its operations per image rather than per batch (see the
    comment above), with indices drawn from `stream`. Returns `layer`."""
    import tensorflow as tf

    upstream = layer.get_random_transformation

    def get_random_transformation(data, training=True, seed=None):
        transformation = upstream(data, training=training, seed=seed)
        if transformation is None:
            return None
        images = data["images"] if isinstance(data, dict) else data
        if images.shape.rank != 4:
            return transformation
        candidates = len(transformation["transforms"])
        transformation["layer_idxes"] = tf.random.stateless_uniform(
            [layer.num_ops, tf.shape(images)[0], 1, 1, 1], stream.next(), minval=0, maxval=candidates,
            dtype=tf.int32)
        return transformation

    object.__setattr__(layer, "get_random_transformation", get_random_transformation)
    return layer


def exact_area_cut_mix(layer: keras.layers.Layer) -> keras.layers.Layer:
    """Makes a channels-last `keras.layers.CutMix` label each example with the fraction of pixels it
    really keeps (see the comment above). Returns `layer`."""
    import tensorflow as tf

    upstream = layer.get_random_transformation

    def get_random_transformation(data, training=True, seed=None):
        transformation = upstream(data, training=training, seed=seed)
        if transformation is None:
            return None
        pasted = tf.cast(transformation["batch_masks"][..., 0], tf.float32)
        transformation["mix_weight"] = 1.0 - tf.reduce_mean(pasted, axis=[1, 2])
        return transformation

    object.__setattr__(layer, "get_random_transformation", get_random_transformation)
    return layer


def ema_variable_pairs(optimizer) -> list:
    """[(model variable, its moving average)] of an optimizer built with `use_ema=True` (unwrapping a
    `LossScaleOptimizer`). Raises ValueError when the optimizer keeps no EMA, RuntimeError before the
    optimizer is built (it creates its slots on the first step or on `optimizer.build(variables)`)."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    if not getattr(inner, "use_ema", False):
        raise ValueError(f"The optimizer keeps no weight EMA: build it with use_ema=True. "
                         f"Received: {type(inner).__name__} with use_ema={getattr(inner, 'use_ema', None)}")
    if not inner.built:
        raise RuntimeError("The optimizer is not built yet: its EMA slots exist after the first training "
                           "step or `optimizer.build(model.trainable_variables)`.")
    averages = inner._model_variables_moving_average
    variables = inner._trainable_variables
    if len(averages) != len(variables):
        raise RuntimeError(f"Keras {KERAS_VERSION}: {len(variables)} variables but {len(averages)} EMA slots")
    return [(variable, average) for variable, average in zip(variables, averages) if average is not None]


# --------------------------------------------------------------------------------------------------
# Benchmarks' baseline
# --------------------------------------------------------------------------------------------------

def legacy_image_data_generator():
    """`ImageDataGenerator`, the Keras book's augmentation, which Keras 3 keeps only in its private
    `keras.src.legacy` package (no public alias in 3.15); the baseline of benchmarks/train_throughput.py."""
    from keras.src.legacy.preprocessing.image import ImageDataGenerator

    return ImageDataGenerator


# --------------------------------------------------------------------------------------------------
# Bytes from Python inside tf.data (pipeline/tfrecords.py's record reader)
# --------------------------------------------------------------------------------------------------
#
# TensorFlow 2.21 keeps alive the element of a 0-d object ndarray that a `tf.numpy_function` returns:
# each call's bytes object is never freed (measured: +1 MiB of RSS per 1 MiB record, every epoch, so
# training from TFRecords by id grew by the dataset's size each epoch). A 1-element 1-d object array
# is released. tests/test_compat_data_scale.py checks both, and fails when an upgrade fixes the leak.


def numpy_function_bytes(function, inputs, *, stateful: bool = False):
    """`tf.numpy_function` for a Python function returning one `bytes` value -> tf.string scalar.

    The bytes travel in a 1-element object array (reshaped to a scalar in the graph): NUL bytes are
    kept (a fixed-width np.bytes_ would drop trailing ones), and nothing leaks (see above).
    """
    import numpy as np
    import tensorflow as tf

    def wrapped(*arguments):
        return np.array([function(*arguments)], dtype=object)

    values = tf.numpy_function(wrapped, inputs, tf.string, stateful=stateful)
    return tf.reshape(tf.ensure_shape(values, [1]), [])
