"""One reader per kind of source: how a split's items become a tf.data pipeline.

- `ArrayReader`: in-memory uint8 arrays (MNIST, Fashion-MNIST, CIFAR-10); batches are gathered.
- `FileReader`: image files of any size (folder, file_list); checked once before training (cached per
  file): unreadable files are skipped and reported, or with `strict` the run stops with the full list.
- `RecordReader`: TFRecord shards written by `data shard` (checked when written); read by id, or
  streamed by shard file with a bounded shuffle buffer.

Each reader holds its source's splits (`parts`: {split: (items [N], labels int64 [N])}), the kind its
items are sharded as under multi_worker (`shard_kind`), the files it left out (`skipped`), and builds a
split's pipeline with `dataset(...)`. `reader_for` picks the reader of a loaded dataset.
"""

from __future__ import annotations

import numpy as np

from pipeline.data import datasets, image_files, input_pipeline, sharding
from pipeline.data.options import DataOptions


def _worker_suffix(shard: tuple[int, int]) -> str:
    """Disk-cache name part of one worker's share ("" on one worker): workers never share a cache file."""
    return f"-worker{shard[1]}" if shard[0] > 1 else ""


def _require_image_size(options: DataOptions) -> None:
    """Raises ConfigError (`EvalTransform.for_data`'s) before any file is read when no image size is set."""
    options.transform.for_data(None, source=f"dataset {options.dataset!r}")


class ArrayReader:
    """In-memory arrays: whole batches gathered from uint8 [N, H, W, C]."""

    shard_kind = "array"

    def __init__(self, data, options: DataOptions, *, log=print):
        self.parts = {"train": (data.train_images, data.train_labels), "test": (data.test_images, data.test_labels)}
        self.native_shape = tuple(data.image_shape)
        self.skipped: list[dict] = []

    def dataset(self, inputs, labels, *, training, options: DataOptions, common: dict, split, shard, cache):
        if training:
            return input_pipeline.make_train_dataset(
                inputs,
                labels,
                seed=options.seed,
                augment=options.augment,
                shuffle_buffer=options.shuffle_buffer,
                deterministic=options.deterministic,
                **common,
            )
        return input_pipeline.make_eval_dataset(inputs, labels, **common)

    def working_sizes(self, items) -> list:
        return []  # arrays are not cached by the file pipelines


class FileReader:
    """Image files, checked once before training (decoded, cached per file)."""

    shard_kind = "files"

    def __init__(self, data, options: DataOptions, *, log=print):
        _require_image_size(options)
        self.native_shape = (None, None, 3)
        self.image_sizes: dict[str, tuple[int, int]] = {}  # path -> (height, width) as displayed
        self.parts = self._checked_files(data, options, log)

    def _checked_files(self, data, options: DataOptions, log) -> dict:
        every = [path for paths, _ in data.splits.values() for path in paths]
        checks = image_files.scan_images(
            every,
            min_size=options.min_image_size,
            max_pixels=options.max_image_pixels,
            cache_dir=datasets.resolve_data_dir(options.data_dir) / ".scan-cache",
            progress=True,
            description=f"checking {len(every)} images",
        )
        bad = {}
        self.image_sizes = {check.path: (check.height, check.width) for check in checks if check.ok}
        for check in checks:
            if not check.ok:
                bad[check.path] = check.reason
            elif options.skip_placeholders and check.warning and "placeholder" in check.warning:
                bad[check.path] = check.warning
        if bad and options.strict:
            listing = "\n  ".join(f"{path}: {reason}" for path, reason in bad.items())
            raise datasets.DatasetError(
                f"{len(bad)} unreadable image(s) and dataset.strict is true:\n  {listing}\n"
                f"Fix or remove them (`python -m pipeline data check ROOT --quarantine DIR` "
                f"moves them aside), or set dataset.strict=false to skip them."
            )
        for path, reason in bad.items():
            log(f"skipping {path}: {reason}")
        train_paths, train_labels = data.splits["train"]
        usable = {label for path, label in zip(train_paths, train_labels) if path not in bad}
        empty = [name for index, name in enumerate(data.class_names) if index not in usable]
        if empty:
            raise datasets.DatasetError(
                f"{data.root}: class folder(s) {', '.join(empty)} hold no readable training image; every "
                f"sub-folder of the dataset root is taken as a class. Remove or move the folder(s), or point "
                f"dataset.root at the folder that holds only class folders."
            )
        parts = {}
        for split, (paths, labels) in data.splits.items():
            keep = np.asarray([path not in bad for path in paths], bool)
            parts[split] = (
                np.asarray(paths, object)[keep] if len(paths) else np.asarray([], object),
                np.asarray(labels, np.int64)[keep] if len(paths) else np.zeros(0, np.int64),
            )
        self.skipped = [{"path": path, "reason": reason} for path, reason in bad.items()]
        return parts

    def dataset(self, inputs, labels, *, training, options: DataOptions, common: dict, split, shard, cache):
        inputs, labels = sharding.worker_share(inputs, shard), sharding.worker_share(labels, shard)
        common = dict(common, cache=cache, cache_suffix=f"-{split}{_worker_suffix(shard)}")
        if not training:
            return input_pipeline.make_file_dataset(inputs, labels, training=False, **common)
        return input_pipeline.make_file_dataset(
            inputs,
            labels,
            training=True,
            seed=options.seed,
            augment=options.augment,
            shuffle_buffer=options.shuffle_buffer,
            deterministic=options.deterministic,
            **common,
        )

    def working_sizes(self, items) -> list:
        return [self.image_sizes.get(str(path), (0, 0)) for path in items]


class RecordReader:
    """TFRecord shards: records read by id, or streamed by shard file (bounded shuffle buffer)."""

    shard_kind = "files"

    def __init__(self, data, options: DataOptions, *, log=print):
        _require_image_size(options)
        self.native_shape = (None, None, 3)
        self.records = data.index
        self.parts = {
            split: (np.asarray(ids, np.int64), np.asarray(labels, np.int64))
            for split, (ids, labels) in data.splits.items()
        }
        self.skipped = list(data.index.manifest.get("skipped", []))

    def dataset(self, ids, labels, *, training, options: DataOptions, common: dict, split, shard, cache):
        """Read by id (a positioned read per record), the pipeline is the folder's with ids for paths: the
        same seed gives the same batches. With a bounded `shuffle_buffer` in training, the split's shards
        are streamed instead: interleaved parallel sequential reads, records of other splits (validation
        carved from train) filtered out, a shuffle buffer of that size."""
        import tensorflow as tf

        from pipeline.data import records as tfrecords

        suffix = f"-{split}{_worker_suffix(shard)}"
        settings = (
            dict(
                seed=options.seed,
                augment=options.augment,
                shuffle_buffer=options.shuffle_buffer,
                deterministic=options.deterministic,
                cache_suffix=suffix,
            )
            if training
            else dict(cache_suffix=suffix)
        )
        if training and options.shuffle_buffer:
            member = np.zeros(len(self.records.arrays["label"]), bool)
            member[ids] = True
            source_split = "train" if split in ("train", "validation") else split
            files = tfrecords.shard_files(self.records.root, source_split)
            if len(files) < shard[0]:
                raise sharding.ShardError(
                    f"{self.records.root}: {len(files)} {source_split} shard file(s) for {shard[0]} workers, and "
                    f"each worker streams whole files; write at least {shard[0]} (`python -m pipeline data shard "
                    f"--shards N`), or set input.shuffle_buffer=null to read records by id"
                )
            stream = tfrecords.tfrecord_dataset(sharding.worker_share(files, shard), with_keys=True)
            keep = tf.constant(member)
            source = stream.filter(lambda key, encoded, label: tf.gather(keep, key)).map(
                lambda key, encoded, label: (encoded, label)
            )
            return input_pipeline.make_image_dataset(
                source, count=len(ids), training=True, cache="none", **settings, **common
            )
        ids, labels = sharding.worker_share(ids, shard), sharding.worker_share(labels, shard)
        source = tf.data.Dataset.from_tensor_slices((np.asarray(ids, np.int64), np.asarray(labels, np.int64)))
        return input_pipeline.make_image_dataset(
            source,
            count=len(ids),
            training=training,
            read=tfrecords.record_reader(self.records.root, index=self.records),
            cache=cache,
            **settings,
            **common,
        )

    def working_sizes(self, ids) -> list:
        arrays = self.records.arrays
        if "height" not in arrays:  # older shards lack sizes: counted at the target size
            return []
        return list(zip(arrays["height"][ids].tolist(), arrays["width"][ids].tolist()))


def reader_for(data, options: DataOptions, *, log=print):
    """The reader of a dataset `datasets.load_dataset` returned."""
    if isinstance(data, datasets.RecordDataset):
        return RecordReader(data, options, log=log)
    if isinstance(data, datasets.ArrayDataset):
        return ArrayReader(data, options, log=log)
    return FileReader(data, options, log=log)
