"""Benchmarks' baseline: the Keras book's ImageDataGenerator, private in Keras 3.

Part of `pipeline.compat` (see its docstring); tested in tests/test_compat_*.py.
"""

from __future__ import annotations

# --------------------------------------------------------------------------------------------------
# Benchmarks' baseline
# --------------------------------------------------------------------------------------------------


def legacy_image_data_generator():
    """`ImageDataGenerator`, the Keras book's augmentation, which Keras 3 keeps only in its private
    `keras.src.legacy` package (no public alias in 3.15); the baseline of benchmarks/train_throughput.py."""
    from keras.src.legacy.preprocessing.image import ImageDataGenerator

    return ImageDataGenerator
