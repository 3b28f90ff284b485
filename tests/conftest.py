"""Shared fixtures: synthetic datasets written as a dataset mirror, so the real loading code runs on them.

Tests marked `mirror` use the real dataset mirror (../shared/datasets or $DATA_MIRROR); they are skipped
when it is absent, except under CI=true, where a missing mirror is a failure.
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

# `--set` overrides for end-to-end runs whose subject is not monitoring or export: no SavedModel (~5 s),
# no evaluation figures, no TensorBoard image grids, confusion matrices or op graph (~1 s per Matplotlib figure on
# 2 cores). The scalars stay on. tests/test_tensorboard_logging.py, test_evaluation_report.py, test_export.py
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


def make_mirror(root: Path, *, train_count=300, test_count=100) -> Path:
    """A mirror directory with small synthetic mnist, fashion_mnist (IDX) and cifar10 (JPEG tar)."""
    from PIL import Image

    for name, seed in (("mnist", 1), ("fashion_mnist", 2)):
        for split, count in (("train", train_count), ("t10k", test_count)):
            images, labels = synthetic_images(count, 28, 1, 10, seed + len(split))
            write_idx(root / name / f"{split}-images-idx3-ubyte.gz", images[..., 0])
            write_idx(root / name / f"{split}-labels-idx1-ubyte.gz", labels)
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with tarfile.open(root / "cifar10-jpg.tar.gz", "w:gz") as archive:
        for split, count, seed in (("train", train_count, 3), ("test", test_count, 4)):
            images, labels = synthetic_images(count, 32, 3, 10, seed)
            for index, (image, label) in enumerate(zip(images, labels)):
                buffer = io.BytesIO()
                Image.fromarray(image).save(buffer, format="JPEG", quality=95)
                info = tarfile.TarInfo(f"cifar10/{split}/{classes[label]}/{index:04d}.jpg")
                info.size = buffer.tell()
                buffer.seek(0)
                archive.addfile(info, buffer)
    return root


@pytest.fixture(scope="session")
def synthetic_mirror(tmp_path_factory) -> Path:
    return make_mirror(tmp_path_factory.mktemp("mirror"))


@pytest.fixture
def data_env(synthetic_mirror, tmp_path, monkeypatch):
    """Points the pipeline at the synthetic mirror and a fresh data dir; returns --set overrides."""
    monkeypatch.setenv("DATA_MIRROR", str(synthetic_mirror))
    data_dir = tmp_path / "data"
    return [f"dataset.data_dir={data_dir}"]


def real_mirror() -> Path | None:
    from pipeline.data import datasets

    mirror = datasets.resolve_mirror(None)
    return mirror if mirror and (mirror / "mnist").is_dir() else None


@pytest.fixture
def mirror_dir() -> Path:
    """The real dataset mirror. Skips without it, but fails under CI=true: CI must run these tests."""
    mirror = real_mirror()
    if mirror is None:
        if os.environ.get("CI") == "true":
            pytest.fail("the dataset mirror (../shared/datasets or $DATA_MIRROR) is required under CI=true")
        pytest.skip("dataset mirror not available")
    return mirror


class Interrupt:
    """A Keras callback that raises KeyboardInterrupt (what Ctrl-C does) at the start of an epoch."""

    def __new__(cls, at_epoch: int):
        import keras

        class _Interrupt(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                if epoch == at_epoch:
                    raise KeyboardInterrupt

        return _Interrupt()


def with_transform(options: dict) -> dict:
    """Keyword arguments of the old loose eval-transform form (image_size, channels, resize_method, crop,
    margin) folded into the one `transform=EvalTransform(...)` argument the input pipelines take."""
    from pipeline.data.transform import EvalTransform

    options = dict(options)
    keys = ("image_size", "channels", "resize_method", "crop", "margin")
    values = {key: options.pop(key) for key in keys if key in options}
    if values:
        options["transform"] = EvalTransform(**values)
    return options
