"""Train / validation / test splits of an experiment, and the tf.data pipeline of each split.

Where the validation split is carved: `carve` (stratified by class, seeded). Each kind of source has its
reader (`pipeline.data.readers`); `Splits` takes `DataOptions`, mapped once from the config.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from pipeline.config import PROJECT_ROOT
from pipeline.data import datasets, readers, sharding
from pipeline.data import image_ops as preprocessing
from pipeline.data.options import DataOptions
from pipeline.data.transform import EvalTransform


class Splits:
    """Train/validation/test data of one experiment, with what the model needs to know about it.

    Built from `DataOptions` (`Splits.from_config` maps a config). The source's reader (`readers`)
    holds the items: arrays, image files (checked before training; unreadable ones skipped and reported
    in `skipped`, or with `strict` the run stops with the full list) or TFRecord ids.

    Attributes:
        class_names: [classes] str, in label order; num_classes.
        train, validation, test: (items [N], labels int64 [N]) of each split.
        input_shape: (height, width, channels) the model takes.
        skipped: [{"path", "reason"}] of the files left out.
    """

    def __init__(self, options: DataOptions, *, log=print):
        if not isinstance(options, DataOptions):  # a config: scripts written for the former Splits(config)
            options = DataOptions.from_config(options)
        data = datasets.load_dataset(
            options.dataset,
            data_dir=options.data_dir,
            mirror_dir=options.mirror_dir,
            root=options.root,
            lists=options.lists,
            classes=options.classes,
        )
        self.options = options
        self.class_names = data.class_names
        self.num_classes = len(data.class_names)
        self._log = log
        self._cache_mode: str | None = None
        self.reader = readers.reader_for(data, options, log=log)
        self.skipped = self.reader.skipped
        check_class_count(self.class_names, getattr(data, "root", options.dataset))
        parts = carve(
            self.reader.parts,
            validation_split=options.validation_split,
            test_split=options.test_split,
            seed=options.seed,
        )
        check_split_sizes(parts, self.class_names, validation_split=options.validation_split, log=log)
        self.train, self.validation, self.test = parts["train"], parts["validation"], parts["test"]
        self.input_shape = options.transform.for_data(self.reader.native_shape).input_shape

    @classmethod
    def from_config(cls, config, *, log=print) -> Splits:
        """The splits of an experiment (`config`: a validated `pipeline.config.Config`)."""
        return cls(DataOptions.from_config(config), log=log)

    @property
    def image_sizes(self) -> dict[str, tuple[int, int]]:
        """path -> (height, width) as displayed, of the checked image files ({} for other sources)."""
        return getattr(self.reader, "image_sizes", {})

    def dataset(
        self, split: str, *, training: bool = False, batch_size: int | None = None, shard: tuple[int, int] = (1, 0)
    ):
        """The tf.data pipeline of one split: training (shuffled, augmented; with a class weight,
        (images, labels, sample weights)) or evaluation (images, one-hot labels).

        `shard` = (workers, this worker's index) for `fit` under multi_worker: image files and records by
        id are cut to this worker's share before anything is read, streamed TFRecords to its share of the
        shard files; arrays stay whole and tf.distribute keeps this worker's part of every batch.
        Evaluation after training reads whole splits (the default)."""
        inputs, labels = getattr(self, split)
        common = dict(
            batch_size=batch_size or self.options.batch_size, num_classes=self.num_classes, transform=self.transform()
        )
        dataset = self.reader.dataset(
            inputs,
            labels,
            training=training,
            options=self.options,
            common=common,
            split=split,
            shard=shard,
            cache=self.cache_mode() if self.reader.shard_kind == "files" else None,
        )
        if shard[0] > 1:  # what each worker reads is already its share: tf.distribute must not cut it again
            dataset = dataset.with_options(sharding.shard_options(self.reader.shard_kind))
        weights = self.class_weights() if training else None
        if weights is None:
            return dataset
        import tensorflow as tf

        # Weights from the (possibly MixUp/CutMix-mixed, not yet smoothed) label: sum_c y_c * weight_c.
        table = tf.constant(weights, tf.float32)
        return dataset.map(
            lambda images, labels: (images, labels, tf.linalg.matvec(labels, table)),
            num_parallel_calls=tf.data.AUTOTUNE,
        )

    def class_weights(self):
        """The class weight as per-class weights float [classes] computed on the training split, or None."""
        from pipeline.data import class_balance

        return class_balance.class_weights(
            self.train[1], self.num_classes, self.options.class_weight, class_names=self.class_names
        )

    def cache_mode(self) -> str:
        """`input.cache`, with `auto` resolved (once, logged): `memory` when the training split at its
        working size plus the evaluation splits at the model's input size fit the budget, else `none`
        (stream from the files: decode every epoch, keep nothing)."""
        if self._cache_mode is None:
            self._cache_mode = self.options.cache
            if self._cache_mode == "auto":
                sizes = self.reader.working_sizes(self.train[0])
                evaluation_bytes = 4 * int(np.prod(self.input_shape)) * (len(self.validation[1]) + len(self.test[1]))
                needed = (
                    estimate_working_bytes(sizes or [(0, 0)] * len(self.train[0]), self.transform()) + evaluation_bytes
                )
                budget = cache_budget_bytes(self.options.cache_budget_mb)
                self._cache_mode = "memory" if needed <= budget else "none"
                self._log(
                    f"input.cache auto: {self._cache_mode} (decoded images need ~{needed / 2**20:,.0f} MiB "
                    f"at the training resolution; budget {budget / 2**20:,.0f} MiB"
                    f"{'' if self.options.cache_budget_mb else ', a quarter of this machine memory'})"
                )
        return self._cache_mode

    def transform(self) -> EvalTransform:
        """The eval transform of this data: the configured one, with the model's input size and channels."""
        return self.sized(self.options.transform)

    def sized(self, transform: EvalTransform) -> EvalTransform:
        """`transform` with this data's input size and channels (e.g. another crop mode's, for estimates)."""
        return transform.for_data(self.input_shape)

    def channel_statistics(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of the training split after the eval transform (for `standardize`),
        or those of the `statistics` file (a `data stats` JSON file)."""
        if self.options.statistics:
            return read_statistics(self.options.statistics, channels=self.input_shape[-1])
        batches = (images for images, _ in self.dataset("train", batch_size=256).as_numpy_iterator())
        return preprocessing.channel_statistics(batches)

    def sample_images(self, count: int = 5000):
        """The first `count` training images (in split order) through the eval transform: float32
        [<= count, H, W, C] in pixel units, for a model's data-dependent initialisation."""
        return _first_images(self.dataset("train", batch_size=256).as_numpy_iterator(), count)


def carve(parts: dict, *, validation_split: float, test_split: float, seed: int) -> dict:
    """Fills in missing splits, stratified by class and seeded (test with `seed + 1`, validation with
    `seed`). A source with train and validation but no test (e.g. hymenoptera's train/ and val/) uses its
    validation folder as the test split, and validation is carved from train: the test split must never
    steer training."""
    parts = dict(parts)
    if "test" not in parts:
        if "validation" in parts:
            parts["test"] = parts.pop("validation")
        else:
            kept, held = stratified_split(parts["train"][1], test_split, seed + 1)
            parts["test"] = tuple(a[held] for a in parts["train"])
            parts["train"] = tuple(a[kept] for a in parts["train"])
    if "validation" not in parts:
        if validation_split > 0:
            kept, held = stratified_split(parts["train"][1], validation_split, seed)
        else:
            kept, held = np.arange(len(parts["train"][1])), np.arange(0)
        parts["validation"] = tuple(a[held] for a in parts["train"])
        parts["train"] = tuple(a[kept] for a in parts["train"])
    return parts


def _first_images(batches, count: int):
    """float32 [<= count, H, W, C]: the images of the first batches of (images, labels) numpy batches."""
    kept, total = [], 0
    for images, _ in batches:
        kept.append(np.asarray(images, np.float32))
        total += len(images)
        if total >= count:
            break
    return np.concatenate(kept)[:count]


def read_statistics(path: str, *, channels: int) -> tuple[list[float], list[float]]:
    """mean/std (pixel units) from a `python -m pipeline data stats` JSON file."""
    file = Path(path).expanduser()
    file = file if file.is_file() else PROJECT_ROOT / path
    try:
        stats = json.loads(file.read_text())
        mean, std = [float(v) for v in stats["mean"]], [float(v) for v in stats["std"]]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise datasets.DatasetError(
            f"input.statistics: {path} is not a `data stats` JSON file with mean and std ({error!r})"
        ) from None
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
            f"folder that holds the class folders."
        )


def check_split_sizes(parts: dict, class_names: list[str], *, validation_split: float, log=print) -> None:
    """Refuses, before anything is written, splits that cannot give a meaningful run: an empty training
    or test split, or an empty validation split when one was asked for. Classes absent from the
    validation or test split are named in the log (their metrics would silently be missing).

    Raises:
        DatasetError: naming the split, its size and what to change.
    """
    sizes = {split: len(labels) for split, (_, labels) in parts.items()}
    advice = (
        "add images, or lower dataset.validation_split / dataset.test_split "
        f"(now: train {sizes['train']}, validation {sizes['validation']}, test {sizes['test']} images)"
    )
    if not sizes["train"]:
        raise datasets.DatasetError(f"the training split is empty: {advice}")
    if not sizes["test"]:
        raise datasets.DatasetError(f"the test split is empty: too few images to hold any out; {advice}")
    if validation_split > 0 and not sizes["validation"]:
        raise datasets.DatasetError(
            f"the validation split is empty: too few images to hold any out; {advice}, "
            f"or set dataset.validation_split=0 and monitor a training metric"
        )
    for split in ("validation", "test"):
        if not sizes[split]:
            continue
        present = set(np.asarray(parts[split][1]).tolist())
        missing = [name for index, name in enumerate(class_names) if index not in present]
        if missing:
            log(
                f"warning: the {split} split has no image of class(es) {', '.join(missing)}: their {split} "
                f"metrics are not measured. Add images of them."
            )


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
