"""TFRecord shards of an image dataset: their layout, and the two ways training reads them.

A shard directory (written by `python -m pipeline data shard`, `pipeline/data/record_writer.py`) holds:
    manifest.json                            classes, counts per split and class, shard files with
                                             sha256 and record counts, the source, the settings used
    index.npz                                one row per record, by record id: label, shard, byte offset
                                             and length of the record in its shard, height and width as
                                             stored (older shards lack them), file name
    <split>-00000-of-000NN.tfrecord          `tf.train.Example`s with the FEATURES below

Record ids ("keys"): int64, unique across splits, given split by split (manifest order) in the source's
listing order (class, then path: what `folders.read_folder_tree` returns), bad files left out. So a split's
ids, in order, match the folder source's paths after its bad files are dropped, and the labels array is
the same: carving a validation split from (ids, labels) picks the same images as from (paths, labels).

Records are spread over a split's shards in a seeded random order, so every shard holds every class in
proportion: a worker that reads only its own shards (multi-worker training shards by file), or a bounded
shuffle buffer fed by a few interleaved shards, sees a mixed stream, not one class after another.

Reading:
- streaming, `tfrecord_dataset(files)`: whole shards read sequentially, several interleaved in parallel;
  for data larger than memory, network storage, and per-worker sharding by file.
- by key, `record_reader(root)`: key -> the record's image bytes with one positioned read (`os.pread`) at
  the offset in index.npz. Feeding it the keys a folder pipeline would feed paths gives the same batches
  for the same seed (the image bytes are the file's own unless --max-side re-encoded them).

TensorFlow and numpy are imported inside the functions: the CLI imports this module while parsing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

from pipeline.core import fileio
from pipeline.core.errors import UserError

FORMAT = "pipeline-tfrecord-v1"
MANIFEST, INDEX = "manifest.json", "index.npz"
SPLIT_ORDER = ("train", "validation", "test")
DEFAULT_CYCLE_LENGTH = 16  # fixed, not AUTOTUNE: a deterministic order must not depend on the CPU count
# TFRecord framing (tensorflow/core/lib/io/record_writer.h): uint64 length, masked crc32c of the length,
# the data, masked crc32c of the data.
HEADER_BYTES, FOOTER_BYTES = 12, 4


class TFRecordError(UserError):
    """A shard directory is missing, garbled or does not match its manifest, or cannot be written."""


def shard_name(split: str, index: int, count: int) -> str:
    """`train-00003-of-00008.tfrecord`: the TFDS naming; sorting by name gives shard order."""
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord"


def file_sha256(path: Path, *, fsync: bool = False) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks; `fsync` also flushes it to disk."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
        if fsync:
            os.fsync(handle.fileno())
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------


def read_manifest(root, *, verify: bool = False) -> dict:
    """manifest.json of a shard directory, checked for form (and with `verify`, every file's sha256).

    Raises:
        TFRecordError: missing or unreadable manifest, not JSON, not this format, a listed file missing,
            or (verify) a checksum that differs; the message names the file and how to fix it.
    """
    root = Path(root)
    path = root / MANIFEST
    rewrite = f"write the shards again with `python -m pipeline data shard SOURCE --out {root}`"
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise TFRecordError(f"{path}: not found; {root} is not a shard directory ({rewrite})") from None
    except OSError as error:
        raise TFRecordError(f"{path}: cannot read ({fileio.os_reason(error)})") from None
    except ValueError as error:
        raise TFRecordError(f"{path}: not valid JSON ({error}); {rewrite}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise TFRecordError(f"{path}: format must be {FORMAT!r}; received {found!r}; {rewrite}")
    try:
        files = [(shard["file"], shard["sha256"]) for split in manifest["splits"].values() for shard in split["shards"]]
        files.append((manifest["index"]["file"], manifest["index"]["sha256"]))
        manifest["classes"]
    except (KeyError, TypeError, AttributeError) as error:
        raise TFRecordError(f"{path}: garbled manifest (missing or malformed {error}); {rewrite}") from None
    for name, digest in files:
        if not (root / name).is_file():
            raise TFRecordError(f"{root / name}: listed in {path} but missing; {rewrite}")
        if verify and file_sha256(root / name) != digest:
            raise TFRecordError(
                f"{root / name}: sha256 differs from {path} (expected {digest}); the file "
                f"changed or is damaged; {rewrite}"
            )
    return manifest


def shard_files(root, split: str, *, manifest: dict | None = None) -> list[str]:
    """Paths of one split's shards, in shard order ([] for a split the manifest lists as empty).

    For per-worker sharding by file: `shard_files(root, "train")[worker::num_workers]`.

    Raises:
        TFRecordError: the split is not in the manifest (the message lists those that are).
    """
    manifest = manifest or read_manifest(root)
    if split not in manifest["splits"]:
        raise TFRecordError(f"{Path(root) / MANIFEST}: no split {split!r}; it has {', '.join(manifest['splits'])}")
    return [str(Path(root) / shard["file"]) for shard in manifest["splits"][split]["shards"]]


@dataclasses.dataclass
class ShardIndex:
    """A shard directory as the split code sees a folder source (`folders.FileDataset`): `splits` maps
    each split present to (record ids int64 [N], labels int64 [N]) in the source's order, ids standing
    where a folder source has paths. `arrays` holds index.npz (label, shard, offset, length, height,
    width by id)."""

    splits: dict
    class_names: list[str]
    root: Path
    manifest: dict
    arrays: dict

    def filenames(self, ids) -> list[str]:
        """The source-relative file names of records `ids` (any int iterable)."""
        blob, ends = self.arrays["filename_bytes"], self.arrays["filename_ends"]
        return [bytes(blob[(ends[i - 1] if i else 0) : ends[i]]).decode() for i in (int(i) for i in ids)]


def load_tfrecord_split_index(root, *, verify: bool = False) -> ShardIndex:
    """Reads manifest.json and index.npz (never the shards): the ids and labels of every split.

    Raises:
        TFRecordError: as `read_manifest`, or index.npz unreadable or disagreeing with the manifest.
    """
    import numpy as np

    root = Path(root)
    manifest = read_manifest(root, verify=verify)
    try:
        with np.load(root / INDEX) as saved:
            arrays = {key: saved[key] for key in saved.files}
        labels = arrays["label"]
    except (OSError, ValueError, KeyError) as error:
        raise TFRecordError(f"{root / INDEX}: unreadable index ({error}); write the shards again") from None
    splits = {}
    for name, split in manifest["splits"].items():
        ids = np.arange(split["first_id"], split["first_id"] + split["count"], dtype=np.int64)
        if len(ids) and ids[-1] >= len(labels):
            raise TFRecordError(
                f"{root / INDEX}: {len(labels)} records, but {root / MANIFEST} puts {name} "
                f"at ids {ids[0]}..{ids[-1]}; write the shards again"
            )
        splits[name] = (ids, labels[ids])
    return ShardIndex(splits, list(manifest["classes"]), root, manifest, arrays)


FEATURES = {  # tf.io.FixedLenFeature arguments of every record
    "image/encoded": ([], "string"),
    "image/format": ([], "string"),
    "image/class/label": ([], "int64"),
    "image/class/text": ([], "string"),
    "image/filename": ([], "string"),
    "image/height": ([], "int64"),
    "image/width": ([], "int64"),
    "image/id": ([], "int64"),
}


def parse_example(serialized):
    """A serialized record (tf.string scalar) -> {feature name: scalar tensor} of FEATURES."""
    import tensorflow as tf

    spec = {name: tf.io.FixedLenFeature(shape, tf.as_dtype(dtype)) for name, (shape, dtype) in FEATURES.items()}
    return tf.io.parse_single_example(serialized, spec)


def tfrecord_dataset(
    files,
    *,
    num_parallel_reads: int | None = -1,
    deterministic: bool = True,
    cycle_length: int | None = None,
    with_keys: bool = False,
):
    """Records of `files`, streamed: each shard read sequentially, `cycle_length` shards interleaved.

    Order: round-robin over `cycle_length` shards at a time, one record each (tf.data `interleave` with
    block_length 1). With deterministic=True it is that order whatever `num_parallel_reads`; False lets
    a slow read be overtaken (faster, not repeatable).

    Args:
        files: shard paths (e.g. `shard_files(root, split)`, or a worker's share of them).
        num_parallel_reads: shards read at once: -1 (default) is tf.data.AUTOTUNE, None one at a time.
        cycle_length: shards open at once (default min(len(files), DEFAULT_CYCLE_LENGTH)).
        with_keys: also yield each record's id first.
    Returns:
        tf.data.Dataset of (encoded image tf.string [], label int64 []), or (id int64 [], encoded, label).
    Raises:
        ValueError: no files.
    """
    import tensorflow as tf

    files = [str(path) for path in files]
    if not files:
        raise ValueError("files must name at least one shard. Received: files=[]")
    parallel = (
        {}
        if num_parallel_reads is None
        # None: sequential (interleave rejects `deterministic`)
        else {"num_parallel_calls": num_parallel_reads, "deterministic": deterministic}
    )
    dataset = tf.data.Dataset.from_tensor_slices(files).interleave(
        lambda path: tf.data.TFRecordDataset(path, buffer_size=1 << 20),
        cycle_length=min(len(files), cycle_length or DEFAULT_CYCLE_LENGTH),
        block_length=1,
        **parallel,
    )

    def fields(serialized):
        record = parse_example(serialized)
        values = (record["image/encoded"], record["image/class/label"])
        return ((record["image/id"],) + values) if with_keys else values

    return dataset.map(fields, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)


def record_reader(root, *, index: ShardIndex | None = None):
    """A function key -> encoded image bytes, reading one record by its id with a positioned read.

    The drop-in for `tf.io.read_file(path)` in a pipeline fed record ids instead of paths. Each call
    opens the shard, reads the record (checking its TFRecord length field against index.npz) and parses
    the Example in the graph. Runs Python (`tf.numpy_function`): fine in tf.data in this process, not
    serializable (no tf.data service, no SavedModel).

    Returns:
        read(key: int64 scalar tensor) -> tf.string scalar tensor.
    Raises (when run):
        tf.errors.InvalidArgumentError/UnknownError: an id out of range, or a shard that changed since
        index.npz was written (the message names it).
    """
    import tensorflow as tf

    from pipeline import compat

    index = index or load_tfrecord_split_index(root)
    arrays, root = index.arrays, Path(root)
    paths = [str(root / name) for name in arrays["shard_files"]]
    shard, offset, length = arrays["shard"], arrays["offset"], arrays["length"]

    def read_record(key) -> bytes:
        key = int(key)
        if not 0 <= key < len(length):
            raise ValueError(f"record id {key} out of range 0..{len(length) - 1} in {root / INDEX}")
        start, size = int(offset[key]) - HEADER_BYTES, int(length[key])
        descriptor = os.open(paths[shard[key]], os.O_RDONLY)
        try:
            data = os.pread(descriptor, size + HEADER_BYTES, start)
        finally:
            os.close(descriptor)
        if len(data) != size + HEADER_BYTES or int.from_bytes(data[:8], "little") != size:
            raise ValueError(
                f"{paths[shard[key]]}: record {key} is not where {root / INDEX} says; the shard "
                f"changed since it was written"
            )
        return data[HEADER_BYTES:]

    def read(key):
        # Not a bare tf.numpy_function: returning these bytes as a 0-d array leaks every record read.
        serialized = compat.numpy_function_bytes(read_record, [key])
        return tf.io.parse_single_example(serialized, {"image/encoded": tf.io.FixedLenFeature([], tf.string)})[
            "image/encoded"
        ]

    return read
