"""The allowed values of the config's choice fields, each list once: the schema validates with them and the
code that implements them reads them (no TensorFlow here, so the config layer stays light).

The implementing modules (optimizers, schedules, test-time augmentation, strategies, the eval transform,
the augmenter, the normalization layer) sit in higher layers that import TensorFlow at load time or may not
be imported by the config layer; they read these tuples for their dispatch and messages, and
tests/test_one_fact.py checks that every name here is one the implementation builds.
"""

from __future__ import annotations

# optimizer.name: keras.optimizers classes (pipeline.training.optimizers.OPTIMIZER_CLASSES).
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
# optimizer.schedule.name: pipeline.training.optimizers.build_schedule.
SCHEDULES = ("constant", "step", "polynomial", "cosine")
# Schedules with a linear warm-up (optimizer.schedule.warmup_epochs).
WARMUP_SCHEDULES = ("cosine", "polynomial")
# evaluation.tta and export.tta: pipeline.evaluation.tta.with_tta.
TTA_MODES = ("none", "flip", "flip_translate")
# distribute.strategy: pipeline.distribute.strategy.choose_strategy_name / resolve_strategy.
STRATEGIES = ("auto", "default", "mirrored", "multi_worker")
# input.crop.mode: pipeline.data.transform.EvalTransform (and its training counterpart, train_crop).
CROP_MODES = ("none", "square", "shorter_side", "random_resized")
# input.resize_method: tf.image.resize methods the eval transform is tested with.
RESIZE_METHODS = ("bilinear", "area", "nearest", "bicubic")
# input.normalization: pipeline.data.image_ops.normalization_layer.
NORMALIZATIONS = ("unit", "standardize")
# input.augment.fill_mode: pipeline.data.image_ops.shift_and_flip (and Keras' RandomRotation/RandomZoom).
FILL_MODES = ("nearest", "reflect", "constant", "wrap")
