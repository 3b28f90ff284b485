"""Shared fixtures: synthetic datasets written as a dataset mirror, so the real loading code runs on them.

Tests marked `mirror` use the real dataset mirror (../shared/datasets or $DATA_MIRROR); they are skipped
when it is absent, except under CI=true, where a missing mirror is a failure.
"""

from __future__ import annotations

import io
import os
import sys
import tarfile
from pathlib import Path

import pytest
from helpers import synthetic_images, write_idx

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from pipeline.core import cpu_kernels  # noqa: E402

cpu_kernels.choose("onednn")  # train.cpu_kernels' default (before anything imports TensorFlow)


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


@pytest.fixture
def interrupt_training(monkeypatch):
    """`interrupt_training(epoch)`: the next `train` in this test raises KeyboardInterrupt (what Ctrl-C
    does) at the start of that epoch; `interrupt_training(None)` trains normally again."""
    from helpers import Interrupt

    from pipeline.training import callbacks

    original = callbacks.build_callbacks

    def arm(at_epoch):
        if at_epoch is None:
            monkeypatch.setattr(callbacks, "build_callbacks", original)
            return

        def build(*args, **kwargs):
            built = original(*args, **kwargs)
            built.all.insert(0, Interrupt(at_epoch))
            return built

        monkeypatch.setattr(callbacks, "build_callbacks", build)

    return arm


# The files with the most work (trained-run fixtures, many trainings) are handed out first. `--dist loadfile`
# gives each xdist worker whole files in collection order, so a heavy file collected late (tests/test_train.py
# sorts after the folders) kept one worker busy alone at the end while the other core idled.
HEAVY_FIRST = (
    "test_train.py",
    "data/test_datasets.py",  # in a fresh clone: the real CIFAR-10 decoded into data/ (35 s on 2 cores)
    "data/test_folder_data.py",
    "serving/test_server.py",
    "data/test_data_scale.py",
    "models/test_applications.py",
    "audit/test_label_audit.py",
    "training/test_features.py",
    "training/test_phases.py",
    "tune/test_search.py",
    "serving/test_export.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: position for position, name in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0].removeprefix("tests/"), len(HEAVY_FIRST)))
