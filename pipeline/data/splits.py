"""Train / validation / test splits of an experiment, and the tf.data pipeline of each split.

Where the validation split is carved: `Splits._carve` (stratified by class, seeded). Image files are
checked once before training (cached per file): unreadable ones are skipped and reported, or with
`dataset.strict` the run stops with the full list.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from pipeline import config as config_lib
from pipeline.data import datasets
from pipeline.data import sharding
from pipeline.data import image_files
from pipeline.data import input_pipeline
from pipeline.data import image_ops as preprocessing
from pipeline.config import PROJECT_ROOT, Config
from pipeline.data.transform import EvalTransform


class Splits:
    """Train/validation/test data of one experiment, with what the model needs to know about it.

    In-memory datasets (MNIST, CIFAR-10) hold arrays; image-file datasets hold paths, checked once
    before training (cached): unreadable files are skipped and reported (`skipped`), or with
    `dataset.strict` the run stops before training with the full list.
    """

    def __init__(self, config: Config, *, log=print):
        options = config.dataset
        data = datasets.load_dataset(options.name, data_dir=options.data_dir, mirror_dir=options.mirror_dir,
                                     root=options.root, lists=options.lists, classes=options.classes)
        self.class_names = data.class_names
        self.num_classes = len(data.class_names)
        self.skipped: list[dict] = []
        self.image_sizes: dict[str, tuple[int, int]] = {}  # path -> (height, width) as displayed
        self._log = log
        self._cache_mode: str | None = None
        if isinstance(data, datasets.RecordDataset):
            # Checked when written (`data shard` reports and leaves out bad files): no scan here.
            self.kind, self.records = "records", data.index
            parts = {split: (np.asarray(ids, np.int64), np.asarray(labels, np.int64))
                     for split, (ids, labels) in data.splits.items()}
            self.skipped = list(data.index.manifest.get("skipped", []))
            self._require_image_size(config)
            height, width, channels = None, None, 3
        elif isinstance(data, datasets.ArrayDataset):
            self.kind = "arrays"
            parts = {"train": (data.train_images, data.train_labels), "test": (data.test_images, data.test_labels)}
            height, width, channels = data.image_shape
        else:
            self.kind = "files"
            parts = self._checked_files(data, config, log)
            self._require_image_size(config)
            height, width, channels = None, None, 3
        check_class_count(self.class_names, getattr(data, "root", options.name))
        parts = self._carve(parts, config)
        check_split_sizes(parts, self.class_names, validation_split=options.validation_split, log=log)
        self.train, self.validation, self.test = parts["train"], parts["validation"], parts["test"]
        if config.input.image_size:
            height, width = config.input.image_size
        self.input_shape = (int(height), int(width), int(config.input.channels or channels))

    @staticmethod
    def _require_image_size(config: Config) -> None:
        if not config.input.image_size:
            raise config_lib.ConfigError(f"input.image_size: required for dataset {config.dataset.name!r}, whose "
                                         f"images have many sizes; e.g. --set input.image_size=[224,224]")

    def _checked_files(self, data, config: Config, log) -> dict:
        every = [path for paths, _ in data.splits.values() for path in paths]
        checks = image_files.scan_images(
            every, min_size=config.dataset.min_image_size, max_pixels=config.dataset.max_image_pixels,
            cache_dir=datasets.resolve_data_dir(config.dataset.data_dir) / ".scan-cache",
            progress=True, description=f"checking {len(every)} images")
        bad = {}
        self.image_sizes = {check.path: (check.height, check.width) for check in checks if check.ok}
        for check in checks:
            if not check.ok:
                bad[check.path] = check.reason
            elif config.dataset.skip_placeholders and check.warning and "placeholder" in check.warning:
                bad[check.path] = check.warning
        if bad and config.dataset.strict:
            listing = "\n  ".join(f"{path}: {reason}" for path, reason in bad.items())
            raise datasets.DatasetError(f"{len(bad)} unreadable image(s) and dataset.strict is true:\n  {listing}\n"
                                        f"Fix or remove them (`python -m pipeline data check ROOT --quarantine DIR` "
                                        f"moves them aside), or set dataset.strict=false to skip them.")
        for path, reason in bad.items():
            log(f"skipping {path}: {reason}")
        train_paths, train_labels = data.splits["train"]
        usable = {label for path, label in zip(train_paths, train_labels) if path not in bad}
        empty = [name for index, name in enumerate(data.class_names) if index not in usable]
        if empty:
            raise datasets.DatasetError(
                f"{data.root}: class folder(s) {', '.join(empty)} hold no readable training image; every "
                f"sub-folder of the dataset root is taken as a class. Remove or move the folder(s), or point "
                f"dataset.root at the folder that holds only class folders.")
        parts = {}
        for split, (paths, labels) in data.splits.items():
            keep = np.asarray([path not in bad for path in paths], bool)
            parts[split] = (np.asarray(paths, object)[keep] if len(paths) else np.asarray([], object),
                            np.asarray(labels, np.int64)[keep] if len(paths) else np.zeros(0, np.int64))
        self.skipped = [{"path": path, "reason": reason} for path, reason in bad.items()]
        return parts

    @staticmethod
    def _carve(parts: dict, config: Config) -> dict:
        """Fills in missing splits, stratified by class and seeded. A source with train and validation
        but no test (e.g. hymenoptera's train/ and val/) uses its validation folder as the test split, and
        validation is carved from train: the test split must never steer training."""
        parts = dict(parts)
        if "test" not in parts:
            if "validation" in parts:
                parts["test"] = parts.pop("validation")
            else:
                kept, held = stratified_split(parts["train"][1], config.dataset.test_split, config.seed + 1)
                parts["test"] = tuple(a[held] for a in parts["train"])
                parts["train"] = tuple(a[kept] for a in parts["train"])
        if "validation" not in parts:
            if config.dataset.validation_split > 0:
                kept, held = stratified_split(parts["train"][1], config.dataset.validation_split,
                                              config.seed)
            else:
                kept, held = np.arange(len(parts["train"][1])), np.arange(0)
            parts["validation"] = tuple(a[held] for a in parts["train"])
            parts["train"] = tuple(a[kept] for a in parts["train"])
        return parts

    def dataset(self, split: str, config: Config, *, training: bool = False, batch_size: int | None = None,
                shard: tuple[int, int] = (1, 0)):
        """The tf.data pipeline of one split: training (shuffled, augmented; with `train.class_weight`,
        (images, labels, sample weights)) or evaluation (images, one-hot labels).

        `shard` = (workers, this worker's index) for `fit` under multi_worker (pipeline/distribute.py):
        image files and records by id are cut to this worker's share before anything is read, streamed
        TFRecords to its share of the shard files; arrays stay whole and tf.distribute keeps this
        worker's part of every batch. Evaluation after training reads whole splits (the default)."""
        dataset = self._dataset(split, config, training=training, batch_size=batch_size, shard=shard)
        if shard[0] > 1:  # what each worker reads is already its share: tf.distribute must not cut it again
            dataset = dataset.with_options(sharding.shard_options("array" if self.kind == "arrays" else "files"))
        weights = self.class_weights(config) if training else None
        if weights is None:
            return dataset
        import tensorflow as tf

        # Weights from the (possibly MixUp/CutMix-mixed, not yet smoothed) label: sum_c y_c * weight_c.
        table = tf.constant(weights, tf.float32)
        return dataset.map(lambda images, labels: (images, labels, tf.linalg.matvec(labels, table)),
                           num_parallel_calls=tf.data.AUTOTUNE)

    def class_weights(self, config: Config):
        """`train.class_weight` as per-class weights float [classes] computed on the training split, or None."""
        from pipeline.data import class_balance

        return class_balance.class_weights(self.train[1], self.num_classes, config.train.class_weight,
                                           class_names=self.class_names)

    def _dataset(self, split: str, config: Config, *, training: bool, batch_size: int | None,
                 shard: tuple[int, int] = (1, 0)):
        inputs, labels = getattr(self, split)
        batch_size = batch_size or config.train.batch_size
        common = dict(batch_size=batch_size, num_classes=self.num_classes, transform=self.transform(config))
        if self.kind == "records":
            return self._record_dataset(split, inputs, labels, config, training=training, shard=shard, **common)
        if self.kind == "files":
            inputs, labels = sharding.worker_share(inputs, shard), sharding.worker_share(labels, shard)
            common.update(cache=self.cache_mode(config), cache_suffix=f"-{split}{_worker_suffix(shard)}")
            if training:
                return input_pipeline.make_file_dataset(
                    inputs, labels, training=True, seed=config.seed, augment=config_lib.to_dict(config.input.augment),
                    shuffle_buffer=config.input.shuffle_buffer, deterministic=config.input.deterministic, **common)
            return input_pipeline.make_file_dataset(inputs, labels, training=False, **common)
        if training:
            return input_pipeline.make_train_dataset(
                inputs, labels, seed=config.seed, augment=config_lib.to_dict(config.input.augment),
                shuffle_buffer=config.input.shuffle_buffer, deterministic=config.input.deterministic, **common)
        return input_pipeline.make_eval_dataset(inputs, labels, **common)

    def _record_dataset(self, split, ids, labels, config: Config, *, training: bool, shard=(1, 0), **common):
        """TFRecord shards. Read by id (a positioned read per record), the pipeline is the folder's with
        ids for paths: the same seed gives the same batches. With a bounded `input.shuffle_buffer` in
        training, the split's shards are streamed instead: interleaved parallel sequential reads, records
        of other splits (validation carved from train) filtered out, a shuffle buffer of that size."""
        import tensorflow as tf

        from pipeline.data import records as tfrecords

        suffix = f"-{split}{_worker_suffix(shard)}"
        options = dict(seed=config.seed, augment=config_lib.to_dict(config.input.augment),
                       shuffle_buffer=config.input.shuffle_buffer, deterministic=config.input.deterministic,
                       cache_suffix=suffix) if training else dict(cache_suffix=suffix)
        if training and config.input.shuffle_buffer:
            member = np.zeros(len(self.records.arrays["label"]), bool)
            member[ids] = True
            source_split = "train" if split in ("train", "validation") else split
            files = tfrecords.shard_files(self.records.root, source_split)
            if len(files) < shard[0]:
                raise sharding.ShardError(
                    f"{self.records.root}: {len(files)} {source_split} shard file(s) for {shard[0]} workers, and "
                    f"each worker streams whole files; write at least {shard[0]} (`python -m pipeline data shard "
                    f"--shards N`), or set input.shuffle_buffer=null to read records by id")
            stream = tfrecords.tfrecord_dataset(sharding.worker_share(files, shard), with_keys=True)
            keep = tf.constant(member)
            source = stream.filter(lambda key, encoded, label: tf.gather(keep, key)).map(
                lambda key, encoded, label: (encoded, label))
            return input_pipeline.make_image_dataset(source, count=len(ids), training=True, cache="none",
                                                     **options, **common)
        ids, labels = sharding.worker_share(ids, shard), sharding.worker_share(labels, shard)
        source = tf.data.Dataset.from_tensor_slices((np.asarray(ids, np.int64), np.asarray(labels, np.int64)))
        return input_pipeline.make_image_dataset(source, count=len(ids), training=training,
                                                 read=tfrecords.record_reader(self.records.root, index=self.records),
                                                 cache=self.cache_mode(config), **options, **common)

    def cache_mode(self, config: Config) -> str:
        """`input.cache`, with `auto` resolved (once, logged): `memory` when the training split at its
        working size plus the evaluation splits at the model's input size fit the budget, else `none`
        (stream from the files: decode every epoch, keep nothing)."""
        if self._cache_mode is None:
            self._cache_mode = config.input.cache
            if self._cache_mode == "auto":
                transform = self.transform(config)
                if self.kind == "files":
                    sizes = [self.image_sizes.get(str(p), (0, 0)) for p in self.train[0]]
                elif "height" in self.records.arrays:  # by training id (older shards lack sizes)
                    arrays = self.records.arrays
                    sizes = list(zip(arrays["height"][self.train[0]].tolist(), arrays["width"][self.train[0]].tolist()))
                else:
                    sizes = []
                needed = (estimate_working_bytes(sizes or [(0, 0)] * len(self.train[0]), transform)
                          + 4 * int(np.prod(self.input_shape)) * (len(self.validation[1]) + len(self.test[1])))
                budget = cache_budget_bytes(config.input.cache_budget_mb)
                self._cache_mode = "memory" if needed <= budget else "none"
                self._log(f"input.cache auto: {self._cache_mode} (decoded images need ~{needed / 2**20:,.0f} MiB "
                          f"at the training resolution; budget {budget / 2**20:,.0f} MiB"
                          f"{'' if config.input.cache_budget_mb else ', a quarter of this machine memory'})")
        return self._cache_mode

    def transform(self, config: Config) -> EvalTransform:
        """The eval transform of this data: the config's, with the model's input size and channels."""
        return EvalTransform.from_input_section(config.input).sized(image_size=self.input_shape[:2],
                                                                      channels=self.input_shape[-1])

    def channel_statistics(self, config: Config) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of the training split after the eval transform (for `standardize`),
        or those of `input.statistics` (a `data stats` JSON file)."""
        if config.input.statistics:
            return read_statistics(config.input.statistics, channels=self.input_shape[-1])
        batches = (images for images, _ in self.dataset("train", config, batch_size=256).as_numpy_iterator())
        return preprocessing.channel_statistics(batches)

    def sample_images(self, config: Config, count: int = 5000):
        """The first `count` training images (in split order) through the eval transform: float32
        [<= count, H, W, C] in pixel units, for a model's data-dependent initialisation."""
        return _first_images(self.dataset("train", config, batch_size=256).as_numpy_iterator(), count)


def _first_images(batches, count: int):
    """float32 [<= count, H, W, C]: the images of the first batches of (images, labels) numpy batches."""
    import numpy as np

    kept, total = [], 0
    for images, _ in batches:
        kept.append(np.asarray(images, np.float32))
        total += len(images)
        if total >= count:
            break
    return np.concatenate(kept)[:count]


def _worker_suffix(shard: tuple[int, int]) -> str:
    """Disk-cache name part of one worker's share ("" on one worker): workers never share a cache file."""
    return f"-worker{shard[1]}" if shard[0] > 1 else ""


def read_statistics(path: str, *, channels: int) -> tuple[list[float], list[float]]:
    """mean/std (pixel units) from a `python -m pipeline data stats` JSON file."""
    file = Path(path).expanduser()
    file = file if file.is_file() else PROJECT_ROOT / path
    try:
        stats = json.loads(file.read_text())
        mean, std = [float(v) for v in stats["mean"]], [float(v) for v in stats["std"]]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise datasets.DatasetError(f"input.statistics: {path} is not a `data stats` JSON file with mean and std "
                       f"({error!r})") from None
    if len(mean) != channels or len(std) != channels:
        raise datasets.DatasetError(f"input.statistics: {path} has {len(mean)} channels, the model takes {channels}")
    return mean, std


def cache_budget_bytes(budget_mb: int | None) -> int:
    """`input.cache_budget_mb` in bytes; None: a quarter of the machine's physical memory."""
    if budget_mb:
        return int(budget_mb) * 2**20
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4


def estimate_working_bytes(sizes, transform: EvalTransform) -> int:
    """Bytes of uint8 images [h, w, channels] at their working size (`decode.working_size`'s rule for
    `transform.working_crop()`: never enlarged; `none` keeps both sides >= the target, the crop modes
    bring the cropped side to the target's longer side, times the crop's factor: random_resized keeps
    1 / sqrt(scale[0]) of it), for images of (height, width) `sizes` (0 when unknown: counted at the target)."""
    crop, factor = transform.working_crop()
    target_h, target_w = (float(np.ceil(side * factor)) for side in transform.image_size)
    total = 0
    for height, width in sizes:
        if not height or not width:
            height, width = target_h, target_w
        if crop == "none":
            scale = max(target_h / height, target_w / width)
        else:
            margin = transform.margin if crop == "square" else 0
            scale = max(target_h, target_w) / max(min(height, width) - 2 * margin, 1)
        scale = min(scale, 1.0)
        total += int(np.ceil(height * scale) * np.ceil(width * scale)) * transform.channels
    return total


def check_class_count(class_names: list[str], source) -> None:
    """Raises DatasetError for fewer than two classes: a one-class softmax is always right, so it would
    train, report accuracy 1.0 and export a model that answers that class for any picture."""
    if len(class_names) < 2:
        found = f"only the class {class_names[0]!r}" if class_names else "no class"
        raise datasets.DatasetError(
            f"{source}: found {found}; a classifier needs at least two classes (one sub-folder per class, "
            f"e.g. ROOT/cats/ and ROOT/dogs/). Add the other classes' folders, or point dataset.root at the "
            f"folder that holds the class folders.")


def check_split_sizes(parts: dict, class_names: list[str], *, validation_split: float, log=print) -> None:
    """Refuses, before anything is written, splits that cannot give a meaningful run: an empty training
    or test split, or an empty validation split when one was asked for. Classes absent from the
    validation or test split are named in the log (their metrics would silently be missing).

    Raises:
        DatasetError: naming the split, its size and what to change.
    """
    sizes = {split: len(labels) for split, (_, labels) in parts.items()}
    advice = ("add images, or lower dataset.validation_split / dataset.test_split "
              f"(now: train {sizes['train']}, validation {sizes['validation']}, test {sizes['test']} images)")
    if not sizes["train"]:
        raise datasets.DatasetError(f"the training split is empty: {advice}")
    if not sizes["test"]:
        raise datasets.DatasetError(f"the test split is empty: too few images to hold any out; {advice}")
    if validation_split > 0 and not sizes["validation"]:
        raise datasets.DatasetError(f"the validation split is empty: too few images to hold any out; {advice}, "
                                    f"or set dataset.validation_split=0 and monitor a training metric")
    for split in ("validation", "test"):
        if not sizes[split]:
            continue
        present = set(np.asarray(parts[split][1]).tolist())
        missing = [name for index, name in enumerate(class_names) if index not in present]
        if missing:
            log(f"warning: the {split} split has no image of class(es) {', '.join(missing)}: their {split} "
                f"metrics are not measured. Add images of them.")


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held_out): `fraction` of each class held out, chosen with `seed`.

    Per class, so sorted sources (CIFAR-10 folders are sorted by class) still give a validation split
    with every class in its true proportion. Every class with at least two images keeps at least one
    image on each side, so a small class is not silently left out of validation or test (rounding would
    give it 0); a class with a single image stays in training (`check_split_sizes` names it). Both index
    arrays are shuffled.
    """
    rng = np.random.default_rng(seed)
    kept, held_out = [], []
    for label in np.unique(labels):
        indices = rng.permutation(np.flatnonzero(labels == label))
        count = int(round(len(indices) * fraction))
        if fraction > 0 and len(indices) >= 2:
            count = min(max(count, 1), len(indices) - 1)
        held_out.append(indices[:count])
        kept.append(indices[count:])
    kept, held_out = np.concatenate(kept), np.concatenate(held_out)
    return rng.permutation(kept), rng.permutation(held_out)
