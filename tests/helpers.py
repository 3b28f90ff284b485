"""Plain helpers shared by the tests (fixtures live in conftest.py): the lean-run overrides, synthetic
images and IDX files, and a callback that interrupts training like Ctrl-C."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

# `--set` overrides for end-to-end runs whose subject is not monitoring or export: no SavedModel (~5 s),
# no evaluation figures, no TensorBoard image grids, confusion matrices or op graph (~1 s per Matplotlib figure on
# 2 cores). The scalars stay on. tests/evaluation/test_tensorboard_logging.py, test_evaluation_report.py, test_export.py
# and test_train.py's tiny_run cover what this leaves out.
LEAN_RUN = (
    "export.enabled=false",
    "evaluation.report=false",
    "train.callbacks.tensorboard.images=false",
    "train.callbacks.tensorboard.confusion_matrix_freq=0",
    "train.callbacks.tensorboard.graph=false",
)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Writes a gzipped IDX uint8 file, the official MNIST format."""
    header = b"\x00\x00\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as handle:
        handle.write(header + np.ascontiguousarray(array, np.uint8).tobytes())


def synthetic_images(count: int, size: int, channels: int, num_classes: int, seed: int):
    """Learnable images: each class is a bright square at its own position, plus noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % num_classes
    rng.shuffle(labels)
    images = rng.integers(0, 60, size=(count, size, size, channels), dtype=np.uint8)
    cell = size // 4
    for index, label in enumerate(labels):
        row, col = divmod(int(label) % 16, 4)
        images[index, row * cell : (row + 1) * cell, col * cell : (col + 1) * cell] = 200
    return images, labels.astype(np.uint8)


class Interrupt:
    """A Keras callback that raises KeyboardInterrupt (what Ctrl-C does) at the start of an epoch."""

    def __new__(cls, at_epoch: int):
        import keras

        class _Interrupt(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                if epoch == at_epoch:
                    raise KeyboardInterrupt

        return _Interrupt()


def build_network(config, **kwargs):
    """The run's model for an experiment config, as the driver builds it (`model_setup.build_model`)."""
    from pipeline.training import model_setup

    return model_setup.build_model(
        name=config.name, model=config.model, normalization=config.input.normalization, **kwargs
    )
