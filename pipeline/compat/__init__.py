"""Every use of Keras or TensorFlow internals, and every workaround for an upstream bug, in one place.

Each function names what it reaches into and why, and the tests in tests/test_compat_*.py have one test
per access that fails loudly, naming the installed Keras version, when an upgrade changes the internal.
One package of small modules, by subject; callers use `pipeline.compat.<name>` only:

    layers      walking nested models, functional graphs' nodes, the trainable short-circuit
    fit         BackupAndRestore's private hooks and the fit's initial epoch
    distribute  Keras' TensorFlow trainer under MultiWorkerMirroredStrategy; empty per-replica batches
    augment     the augmentation layers' randomness, RandAugment per image, CutMix labels, EMA slots
    data        bytes from Python inside tf.data without TensorFlow 2.21's leak
    baselines   the Keras book's ImageDataGenerator (benchmarks)
    optimizers  per-variable learning-rate factors (normalization biases)
"""

from __future__ import annotations

import keras

from pipeline.compat.augment import (  # noqa: F401
    StatelessSeedStream,
    ema_variable_pairs,
    exact_area_cut_mix,
    per_image_rand_augment,
    route_seeds,
)
from pipeline.compat.baselines import legacy_image_data_generator  # noqa: F401
from pipeline.compat.data import numpy_function_bytes  # noqa: F401
from pipeline.compat.distribute import (  # noqa: F401
    MULTI_WORKER_ISSUES,
    _first_local_value,
    _keras_tf_trainer,
    _patch_reduce_per_replica,
    _patch_symbolic_build,
    in_multi_worker_mode,
    patch_keras_for_multi_worker,
    without_short_batches,
)
from pipeline.compat.fit import BackupAndRestoreHooks  # noqa: F401
from pipeline.compat.layers import (  # noqa: F401
    find_layer,
    find_layer_path,
    force_trainable,
    inbound_nodes,
    iter_layers,
    node_tensor,
    nodes_in,
    sublayers,
    walk_layers,
)
from pipeline.compat.optimizers import NORM_BIAS_SCALED, is_norm_bias, with_norm_bias_lr_factor  # noqa: F401

KERAS_VERSION = keras.__version__
