"""Datasets, registered by name. Each loader returns in-memory uint8 arrays and class names.

Where data comes from, in order: the local mirror (`mirror_dir`, `$DATA_MIRROR`, or `../shared/datasets`
when it exists), the project's `data/` store, then the official download (saved into `data/`). A dataset
that cannot be found anywhere fails with `DatasetError` saying where it looked and how to provide it.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import shutil
import struct
import sys
import tarfile
import urllib.request
from pathlib import Path

import numpy as np

from pipeline.config import PROJECT_ROOT
from pipeline.core.fileio import atomic_write
from pipeline.core.registry import Registry
from pipeline.data import cifar_sources, folders
from pipeline.data.cifar_sources import CIFAR10_CLASSES
from pipeline.data.folders import (  # noqa: F401
    DatasetError,
    FileDataset,
    read_folder_tree,
    resolve_data_dir,
    resolve_root,
    root_folder,
    single_top_folder,
)

DATASETS = Registry("dataset")
register_dataset = DATASETS.register


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


def download(url: str, destination: Path, timeout: float = 60.0) -> Path:
    """Downloads `url` to `destination` atomically (a partial file never takes the final name)."""

    def write(temporary):
        with open(temporary, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            shutil.copyfileobj(response, out)

    atomic_write(destination, write, suffix=destination.suffix)
    return destination


def _find_or_download(filename: str, *, candidates: list[Path], store: Path, urls: list[str], dataset: str) -> Path:
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
        f"directory holding {dataset}/{filename}."
    )


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
    if len(data) < 4 + 4 * ndim:
        raise DatasetError(f"{path}: truncated IDX header ({len(data)} bytes for {ndim} dimensions)")
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    expected = int(np.prod(dims))
    payload = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if payload.size != expected:
        raise DatasetError(f"{path}: truncated IDX file: {payload.size} bytes of data for shape {dims}")
    return payload.reshape(dims)


def _load_idx_dataset(
    name: str, urls: list[str], class_names: list[str], *, data_dir: str, mirror_dir: str | None
) -> ArrayDataset:
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
            raise DatasetError(
                f"dataset {name!r}: {split} images and labels differ in count "
                f"({len(arrays[split, 'images'])} vs {len(arrays[split, 'labels'])})"
            )
    return ArrayDataset(
        arrays["train", "images"][..., None],
        arrays["train", "labels"].astype(np.int64),
        arrays["t10k", "images"][..., None],
        arrays["t10k", "labels"].astype(np.int64),
        class_names,
    )


MNIST_CLASSES = [str(digit) for digit in range(10)]
FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


@register_dataset()
def mnist(*, data_dir: str = "data", mirror_dir: str | None = None) -> ArrayDataset:
    """MNIST handwritten digits: 60,000 train + 10,000 test, 28x28 grey."""
    return _load_idx_dataset(
        "mnist",
        ["https://storage.googleapis.com/cvdf-datasets/mnist/", "https://ossci-datasets.s3.amazonaws.com/mnist/"],
        MNIST_CLASSES,
        data_dir=data_dir,
        mirror_dir=mirror_dir,
    )


# Registry flags (`native_shape`, `known_class_count`): what `summary` needs without loading the data.
mnist.image_shape = (28, 28, 1)
mnist.num_classes = len(MNIST_CLASSES)


@register_dataset()
def fashion_mnist(*, data_dir: str = "data", mirror_dir: str | None = None) -> ArrayDataset:
    """Zalando's Fashion-MNIST: 60,000 train + 10,000 test, 28x28 grey, 10 clothing classes."""
    return _load_idx_dataset(
        "fashion_mnist",
        [
            "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        ],
        FASHION_MNIST_CLASSES,
        data_dir=data_dir,
        mirror_dir=mirror_dir,
    )


fashion_mnist.image_shape = (28, 28, 1)
fashion_mnist.num_classes = len(FASHION_MNIST_CLASSES)


# --------------------------------------------------------------------------------------------------
# CIFAR-10: the official pickle archive, or JPEG class folders (the mirror's form)
# --------------------------------------------------------------------------------------------------

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
# Stored in data/cifar10/cifar10.npz; a cache without it (or another) is rebuilt when a source is at hand.
# "2": JPEGs decoded with the accurate IDCT (decode.JPEG_DCT_METHOD); before, TensorFlow's fast default.
CIFAR10_CACHE_VERSION = "2"


@register_dataset()
def cifar10(*, data_dir: str = "data", mirror_dir: str | None = None) -> ArrayDataset:
    """CIFAR-10: 50,000 train + 10,000 test, 32x32 RGB, 10 classes.

    Sources, in order: a decoded cache in data/cifar10/, the mirror's `cifar10-jpg.tar.gz` or `cifar10/`
    JPEG folders, the official pickles in data/cifar10/cifar-10-batches-py/, the official download.
    Decoded arrays are cached as data/cifar10/cifar10.npz, so JPEGs are decoded once.
    """
    store = resolve_data_dir(data_dir) / "cifar10"
    cache = store / "cifar10.npz"
    stale = None
    if cache.is_file():
        try:
            with np.load(cache) as saved:
                cached = ArrayDataset(
                    saved["train_images"],
                    saved["train_labels"],
                    saved["test_images"],
                    saved["test_labels"],
                    list(CIFAR10_CLASSES),
                )
                version = str(saved["cache_version"]) if "cache_version" in saved.files else None
        except (OSError, ValueError, KeyError) as error:
            raise DatasetError(f"{cache}: corrupt cache ({error}); delete it to rebuild it") from None
        if version == CIFAR10_CACHE_VERSION:
            return cached
        stale = cached
    try:
        splits = _cifar_splits(store, mirror_dir, data_dir, download_allowed=stale is None)
    except DatasetError as error:
        if stale is None:
            raise
        print(
            f"{cache}: decoded by an older version (another JPEG IDCT) and not rebuilt ({error}); using it as it is",
            file=sys.stderr,
        )
        return stale
    arrays = dict(
        train_images=splits["train"][0],
        train_labels=splits["train"][1],
        test_images=splits["test"][0],
        test_labels=splits["test"][1],
    )
    atomic_write(cache, lambda p: np.savez(p, cache_version=np.array(CIFAR10_CACHE_VERSION), **arrays), suffix=".npz")
    return ArrayDataset(*splits["train"], *splits["test"], list(CIFAR10_CLASSES))


cifar10.image_shape = (32, 32, 3)
cifar10.num_classes = len(CIFAR10_CLASSES)


def _cifar_splits(store: Path, mirror_dir: str | None, data_dir: str, *, download_allowed: bool = True) -> dict:
    """{"train": (images, labels), "test": ...} from the first source `cifar10` finds (see there); with
    `download_allowed` False, only local sources (an old cache is better than waiting on the network)."""
    mirror = resolve_mirror(mirror_dir)
    if mirror and (mirror / "cifar10-jpg.tar.gz").is_file():
        splits = cifar_sources.from_archive(mirror / "cifar10-jpg.tar.gz")
    elif mirror and (mirror / "cifar10" / "train").is_dir():
        splits = cifar_sources.from_folders(read_folder_tree(mirror / "cifar10"))
    elif (store / "cifar-10-batches-py").is_dir():
        splits = cifar_sources.from_pickles(store / "cifar-10-batches-py")
    else:
        archive = store / "cifar-10-python.tar.gz"
        if not archive.is_file() and not download_allowed:
            raise DatasetError("no local source to rebuild it from")
        if not archive.is_file():
            try:
                download(CIFAR10_URL, archive, timeout=120)
            except OSError as error:
                places = [
                    str(mirror / "cifar10-jpg.tar.gz") if mirror else "(no mirror configured)",
                    str(store / "cifar-10-batches-py"),
                ]
                raise DatasetError(
                    "dataset 'cifar10' not found. Looked in:\n  "
                    + "\n  ".join(places)
                    + f"\nand the download of {CIFAR10_URL} failed: {getattr(error, 'reason', error)}\n"
                    f"Place cifar-10-python.tar.gz in {store}/ by hand, or set DATA_MIRROR to a directory "
                    f"holding cifar10-jpg.tar.gz."
                ) from None
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(store, filter="data")
        splits = cifar_sources.from_pickles(store / "cifar-10-batches-py")
    return splits


@register_dataset()
def folder(*, data_dir: str = "data", mirror_dir: str | None = None, root: str | None = None) -> FileDataset:
    """Images in class folders: `root/<class>/` or `root/{train,val,test}/<class>/`, found recursively.

    `root` may also be a .tar.gz/.zip archive of such a tree; it is extracted once into `data_dir`.
    """
    return read_folder_tree(root_folder(resolve_root(root, dataset="folder"), data_dir))


@register_dataset()
def file_list(
    *,
    data_dir: str = "data",
    mirror_dir: str | None = None,
    root: str | None = None,
    lists: dict | None = None,
    classes: str | None = None,
) -> FileDataset:
    """Images named by list files; see `pipeline.data.folders.read_file_lists`."""
    return folders.read_file_lists(data_dir=data_dir, root=root, lists=lists, classes=classes)


@dataclasses.dataclass
class RecordDataset(FileDataset):
    """TFRecord shards written by `python -m pipeline data shard`: `splits` maps each split to
    (record ids int64 [N], labels int64 [N]) in the source folder's order, where a folder has paths, so
    the same seed carves the same validation split; `index` reads records by id or streams the shards."""

    index: object = None


@register_dataset()
def tfrecord(*, data_dir: str = "data", mirror_dir: str | None = None, root: str | None = None) -> RecordDataset:
    """Shards of `python -m pipeline data shard ROOT --out DIR` (dataset.root: DIR)."""
    from pipeline.data import records as tfrecords

    index = tfrecords.load_tfrecord_split_index(resolve_root(root, dataset="tfrecord"))
    return RecordDataset(dict(index.splits), index.class_names, index.root, index=index)


HYMENOPTERA_URL = "https://download.pytorch.org/tutorial/hymenoptera_data.zip"


@register_dataset()
def hymenoptera(*, data_dir: str = "data", mirror_dir: str | None = None) -> FileDataset:
    """Ants vs bees photos (245 train, 153 val; many sizes), read through the `folder` path.

    Sources: the mirror's hymenoptera.tar.gz, data/hymenoptera*/, or the official zip download.
    """
    mirror = resolve_mirror(mirror_dir)
    store = resolve_data_dir(data_dir)
    if mirror and (mirror / "hymenoptera.tar.gz").is_file():
        return read_folder_tree(root_folder(mirror / "hymenoptera.tar.gz", data_dir))
    for name in ("hymenoptera", "hymenoptera_data"):
        if (store / name).is_dir():
            return read_folder_tree(single_top_folder(store / name))
    archive = store / "hymenoptera_data.zip"
    if not archive.is_file():
        try:
            download(HYMENOPTERA_URL, archive, timeout=120)
        except OSError as error:
            raise DatasetError(
                f"dataset 'hymenoptera' not found. Looked in: "
                f"{mirror / 'hymenoptera.tar.gz' if mirror else '(no mirror configured)'}, {store}/hymenoptera/; "
                f"the download of {HYMENOPTERA_URL} failed: {getattr(error, 'reason', error)}. "
                f"Place hymenoptera_data.zip in {store}/ or set DATA_MIRROR."
            ) from None
    return read_folder_tree(root_folder(archive, data_dir))


hymenoptera.num_classes = 2  # ants, bees (the archive's class folders); many image sizes: no image_shape


def native_shape(name: str) -> tuple[int, int, int] | None:
    """(height, width, channels) that every image of registered dataset `name` has, or None (images of
    many sizes, or an unknown name: the registry reports that where the data is loaded)."""
    return DATASETS.flag(name, "image_shape") if name in DATASETS else None


def known_class_count(name: str) -> int | None:
    """The class count of a registered dataset whose classes are fixed, or None (read from the data)."""
    return DATASETS.flag(name, "num_classes") if name in DATASETS else None


def load_dataset(
    name: str, *, data_dir: str = "data", mirror_dir: str | None = None, **options
) -> ArrayDataset | FileDataset:
    """Loads a registered dataset by name. `options` not taken by that dataset are ignored when None."""
    accepted = set(DATASETS.options(name)) - {"data_dir", "mirror_dir"}
    extra = {key: value for key, value in options.items() if key in accepted}
    ignored = sorted(key for key, value in options.items() if key not in accepted and value)
    if ignored:
        raise DatasetError(
            f"dataset {name!r} does not take dataset.{ignored[0]}; it takes: "
            f"{', '.join(sorted(accepted)) or 'no options'}"
        )
    return DATASETS.get(name)(data_dir=data_dir, mirror_dir=mirror_dir, **extra)
