"""Datasets, registered by name. Each loader returns in-memory uint8 arrays and class names.

Where data comes from, in order: the local mirror (`mirror_dir`, `$DATA_MIRROR`, or `../shared/datasets`
when it exists), the project's `data/` store, then the official download (saved into `data/`). A dataset
that cannot be found anywhere fails with `DatasetError` saying where it looked and how to provide it.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import os
import pickle
import shutil
import struct
import tarfile
import tempfile
import urllib.request
from pathlib import Path

import numpy as np

from pipeline.config import PROJECT_ROOT
from pipeline.registry import Registry

DATASETS = Registry("dataset")
register_dataset = DATASETS.register


class DatasetError(RuntimeError):
    """A dataset is missing, unreadable or corrupt. The message names the file and what to do."""


@dataclasses.dataclass
class ArrayDataset:
    """Images as uint8 [N, H, W, C] and integer labels [N], for the train and test splits."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: list[str]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_images.shape[1:])


# --------------------------------------------------------------------------------------------------
# Locations
# --------------------------------------------------------------------------------------------------

def resolve_mirror(mirror_dir: str | None = None) -> Path | None:
    """The mirror directory to look in first: explicit, $DATA_MIRROR, or ../shared/datasets if present."""
    if mirror_dir:
        return Path(mirror_dir).expanduser()
    if os.environ.get("DATA_MIRROR"):
        return Path(os.environ["DATA_MIRROR"]).expanduser()
    default = PROJECT_ROOT.parent / "shared" / "datasets"
    return default if default.is_dir() else None


def resolve_data_dir(data_dir: str) -> Path:
    path = Path(data_dir).expanduser()
    return path if path.is_absolute() else PROJECT_ROOT / path


def download(url: str, destination: Path, timeout: float = 60.0) -> Path:
    """Downloads `url` to `destination` atomically (a partial file never takes the final name)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.")
    try:
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            shutil.copyfileobj(response, out)
        os.replace(temporary, destination)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return destination


def _find_or_download(filename: str, *, candidates: list[Path], store: Path, urls: list[str],
                      dataset: str) -> Path:
    """First existing `dir/filename` among candidates, else a download into `store`."""
    for directory in candidates:
        if (directory / filename).is_file():
            return directory / filename
    errors = []
    for base_url in urls:
        try:
            return download(base_url + filename, store / filename)
        except OSError as error:  # URLError and HTTPError are OSErrors
            errors.append(f"{base_url}{filename}: {getattr(error, 'reason', error)}")
    looked = "\n  ".join(str(d / filename) for d in candidates)
    raise DatasetError(
        f"dataset {dataset!r}: {filename} not found. Looked in:\n  {looked}\n"
        f"and the download failed:\n  " + "\n  ".join(errors) + "\n"
        f"Place the file in {store}/ by hand, or point DATA_MIRROR (or dataset.mirror_dir) at a mirror "
        f"directory holding {dataset}/{filename}.")


# --------------------------------------------------------------------------------------------------
# IDX (MNIST, Fashion-MNIST)
# --------------------------------------------------------------------------------------------------

def read_idx(path: Path) -> np.ndarray:
    """Reads a (gzipped) IDX file: magic 0x0000 0x08 ndim, big-endian dims, uint8 data."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as error:
        raise DatasetError(f"{path}: cannot read IDX file ({error}); delete it to download it again") from None
    if len(data) < 4 or data[0:2] != b"\x00\x00" or data[2] != 0x08:
        raise DatasetError(f"{path}: not an IDX uint8 file (bad magic number)")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    expected = int(np.prod(dims))
    payload = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if payload.size != expected:
        raise DatasetError(f"{path}: truncated IDX file: {payload.size} bytes of data for shape {dims}")
    return payload.reshape(dims)


def _load_idx_dataset(name: str, urls: list[str], class_names: list[str], *, data_dir: str,
                      mirror_dir: str | None) -> ArrayDataset:
    store = resolve_data_dir(data_dir) / name
    mirror = resolve_mirror(mirror_dir)
    candidates = ([mirror / name] if mirror else []) + [store]
    arrays = {}
    for split in ("train", "t10k"):
        for part, kind in (("images", "idx3"), ("labels", "idx1")):
            filename = f"{split}-{part}-{kind}-ubyte.gz"
            path = _find_or_download(filename, candidates=candidates, store=store, urls=urls, dataset=name)
            arrays[split, part] = read_idx(path)
    for split in ("train", "t10k"):
        if len(arrays[split, "images"]) != len(arrays[split, "labels"]):
            raise DatasetError(f"dataset {name!r}: {split} images and labels differ in count "
                               f"({len(arrays[split, 'images'])} vs {len(arrays[split, 'labels'])})")
    return ArrayDataset(arrays["train", "images"][..., None], arrays["train", "labels"].astype(np.int64),
                        arrays["t10k", "images"][..., None], arrays["t10k", "labels"].astype(np.int64),
                        class_names)


@register_dataset()
def mnist(*, data_dir: str = "data", mirror_dir: str | None = None) -> ArrayDataset:
    """MNIST handwritten digits: 60,000 train + 10,000 test, 28x28 grey."""
    return _load_idx_dataset(
        "mnist", ["https://storage.googleapis.com/cvdf-datasets/mnist/",
                  "https://ossci-datasets.s3.amazonaws.com/mnist/"],
        [str(digit) for digit in range(10)], data_dir=data_dir, mirror_dir=mirror_dir)


@register_dataset()
def fashion_mnist(*, data_dir: str = "data", mirror_dir: str | None = None) -> ArrayDataset:
    """Zalando's Fashion-MNIST: 60,000 train + 10,000 test, 28x28 grey, 10 clothing classes."""
    return _load_idx_dataset(
        "fashion_mnist", ["https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
                          "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
        ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
         "Ankle boot"], data_dir=data_dir, mirror_dir=mirror_dir)


# --------------------------------------------------------------------------------------------------
# CIFAR-10: the official pickle archive, or JPEG class folders (the mirror's form)
# --------------------------------------------------------------------------------------------------

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"


def _decode_jpeg_bytes(blobs: list[bytes], source: str) -> np.ndarray:
    """Decodes with TensorFlow, the decoder the exported serving graph uses, so pixels match serving."""
    import tensorflow as tf

    images = []
    for blob, name in blobs:
        try:
            images.append(tf.io.decode_image(blob, channels=3, expand_animations=False).numpy())
        except tf.errors.InvalidArgumentError:
            raise DatasetError(f"{source}: {name} is not a readable image") from None
    return np.stack(images)


def _read_cifar_jpeg_tree(files, source: str) -> dict:
    """files: iterable of (relative path 'cifar10/<split>/<class>/<file>', bytes-reader)."""
    blobs = {"train": [], "test": []}
    labels = {"train": [], "test": []}
    for relative, read in sorted(files, key=lambda item: item[0]):
        parts = Path(relative).parts
        if len(parts) < 3 or parts[-3] not in blobs or parts[-2] not in CIFAR10_CLASSES:
            continue
        blobs[parts[-3]].append((read(), relative))
        labels[parts[-3]].append(CIFAR10_CLASSES.index(parts[-2]))
    if not blobs["train"] or not blobs["test"]:
        raise DatasetError(f"{source}: expected a tree cifar10/{{train,test}}/<class>/*.jpg with classes "
                           f"{', '.join(CIFAR10_CLASSES)}; found {len(blobs['train'])} train and "
                           f"{len(blobs['test'])} test images")
    return {split: (_decode_jpeg_bytes(blobs[split], source), np.asarray(labels[split], np.int64))
            for split in blobs}


def _cifar_from_jpeg_tar(path: Path) -> dict:
    with tarfile.open(path, "r:*") as archive:
        members = [m for m in archive.getmembers() if m.isfile() and m.name.lower().endswith((".jpg", ".jpeg", ".png"))]
        return _read_cifar_jpeg_tree(
            [(m.name, lambda m=m: archive.extractfile(m).read()) for m in members], str(path))


def _cifar_from_jpeg_dir(root: Path) -> dict:
    files = [p for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png") and p.is_file()]
    return _read_cifar_jpeg_tree([(str(p.relative_to(root.parent)), p.read_bytes) for p in files], str(root))


def _cifar_from_pickles(directory: Path) -> dict:
    def load(name):
        try:
            with open(directory / name, "rb") as handle:
                batch = pickle.load(handle, encoding="bytes")
        except (OSError, pickle.UnpicklingError, EOFError) as error:
            raise DatasetError(f"{directory / name}: unreadable CIFAR-10 batch ({error})") from None
        images = np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return images, np.asarray(batch[b"labels"], np.int64)

    train = [load(f"data_batch_{index}") for index in range(1, 6)]
    return {"train": (np.concatenate([t[0] for t in train]), np.concatenate([t[1] for t in train])),
            "test": load("test_batch")}


def _save_npz_atomically(path: Path, **arrays) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".npz")
    os.close(handle)
    try:
        np.savez(temporary, **arrays)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@register_dataset()
def cifar10(*, data_dir: str = "data", mirror_dir: str | None = None) -> ArrayDataset:
    """CIFAR-10: 50,000 train + 10,000 test, 32x32 RGB, 10 classes.

    Sources, in order: a decoded cache in data/cifar10/, the mirror's `cifar10-jpg.tar.gz` or `cifar10/`
    JPEG folders, the official pickles in data/cifar10/cifar-10-batches-py/, the official download.
    Decoded arrays are cached as data/cifar10/cifar10.npz, so JPEGs are decoded once.
    """
    store = resolve_data_dir(data_dir) / "cifar10"
    cache = store / "cifar10.npz"
    if cache.is_file():
        try:
            with np.load(cache) as saved:
                return ArrayDataset(saved["train_images"], saved["train_labels"], saved["test_images"],
                                    saved["test_labels"], list(CIFAR10_CLASSES))
        except (OSError, ValueError, KeyError) as error:
            raise DatasetError(f"{cache}: corrupt cache ({error}); delete it to rebuild it") from None
    mirror = resolve_mirror(mirror_dir)
    splits = None
    if mirror and (mirror / "cifar10-jpg.tar.gz").is_file():
        splits = _cifar_from_jpeg_tar(mirror / "cifar10-jpg.tar.gz")
    elif mirror and (mirror / "cifar10" / "train").is_dir():
        splits = _cifar_from_jpeg_dir(mirror / "cifar10")
    elif (store / "cifar-10-batches-py").is_dir():
        splits = _cifar_from_pickles(store / "cifar-10-batches-py")
    else:
        archive = store / "cifar-10-python.tar.gz"
        if not archive.is_file():
            try:
                download(CIFAR10_URL, archive, timeout=120)
            except OSError as error:
                places = [str(mirror / "cifar10-jpg.tar.gz") if mirror else "(no mirror configured)",
                          str(store / "cifar-10-batches-py")]
                raise DatasetError(
                    f"dataset 'cifar10' not found. Looked in:\n  " + "\n  ".join(places) +
                    f"\nand the download of {CIFAR10_URL} failed: {getattr(error, 'reason', error)}\n"
                    f"Place cifar-10-python.tar.gz in {store}/ by hand, or set DATA_MIRROR to a directory "
                    f"holding cifar10-jpg.tar.gz.") from None
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(store, filter="data")
        splits = _cifar_from_pickles(store / "cifar-10-batches-py")
    _save_npz_atomically(cache, train_images=splits["train"][0], train_labels=splits["train"][1],
                         test_images=splits["test"][0], test_labels=splits["test"][1])
    return ArrayDataset(*splits["train"], *splits["test"], list(CIFAR10_CLASSES))


# --------------------------------------------------------------------------------------------------
# Splitting
# --------------------------------------------------------------------------------------------------

def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held_out): `fraction` of each class held out, chosen with `seed`.

    Per class, so sorted sources (CIFAR-10 folders are sorted by class) still give a validation split
    with every class in its true proportion. Both index arrays are shuffled.
    """
    rng = np.random.default_rng(seed)
    kept, held_out = [], []
    for label in np.unique(labels):
        indices = rng.permutation(np.flatnonzero(labels == label))
        count = int(round(len(indices) * fraction))
        held_out.append(indices[:count])
        kept.append(indices[count:])
    kept, held_out = np.concatenate(kept), np.concatenate(held_out)
    return rng.permutation(kept), rng.permutation(held_out)


def load_dataset(name: str, *, data_dir: str = "data", mirror_dir: str | None = None) -> ArrayDataset:
    """Loads a registered dataset by name."""
    return DATASETS.get(name)(data_dir=data_dir, mirror_dir=mirror_dir)
