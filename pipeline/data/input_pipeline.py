"""tf.data input pipelines for in-memory image arrays.

Train: shuffled indices -> batch -> gather -> eval transform -> augmentation -> one-hot -> prefetch.
Eval: the same without shuffling or augmentation. Working on whole batches keeps per-element overhead
out of the hot path (one gather and one vectorised augmentation call per batch).
"""

from __future__ import annotations

import os
import sys

import numpy as np
import tensorflow as tf

from pipeline.data import decode, disk_cache
from pipeline.data import image_ops as preprocessing
from pipeline.data.augmentation import Augmentation, as_augmentation
from pipeline.data.transform import EvalTransform

AUTOTUNE = tf.data.AUTOTUNE
# The decode functions branch with tf.cond / tf.switch_case themselves, so their map functions skip AutoGraph:
# converting `decode_working_image`'s call tree took ~5 s of every start (py-spy, 10,000-file folder), a
# fixed cost before the first step whatever the folder's size.
graph_only = tf.autograph.experimental.do_not_convert


def _indexed_batches(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    batch_size: int,
    num_classes: int,
    shuffle: bool,
    seed: int | None,
    shuffle_buffer: int | None,
    transform: EvalTransform,
) -> tf.data.Dataset:
    images_tensor = tf.constant(images)
    labels_tensor = tf.constant(np.asarray(labels, np.int64))
    dataset = tf.data.Dataset.range(len(images))
    if shuffle:
        dataset = dataset.shuffle(shuffle_buffer or len(images), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)

    def load(indices):
        batch = transform(tf.gather(images_tensor, indices))
        return batch, tf.one_hot(tf.gather(labels_tensor, indices), num_classes)

    return dataset.map(load, num_parallel_calls=AUTOTUNE, deterministic=True)


def make_train_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    batch_size: int,
    num_classes: int,
    seed: int,
    transform: EvalTransform = EvalTransform(),
    augment: Augmentation | dict | None = None,
    shuffle_buffer: int | None = None,
    deterministic: bool = True,
) -> tf.data.Dataset:
    """Shuffled, augmented batches of (float32 images in [0, 255], one-hot labels).

    Args:
        images: uint8 [N, H, W, C]; labels: int [N].
        transform: the eval transform (applied to whole arrays; there is no random crop for arrays).
        augment: the augmentation (`Augmentation`, or a dict of `input.augment` keys; None: none).
        deterministic: run augmentation in order so a seed reproduces a run exactly; False lets
            tf.data run several augmentation calls at once (faster, not repeatable).
    """
    dataset = _indexed_batches(
        images,
        labels,
        batch_size=batch_size,
        num_classes=num_classes,
        shuffle=True,
        seed=seed,
        shuffle_buffer=shuffle_buffer,
        transform=transform,
    )
    dataset = _augment(dataset, augment, seed, deterministic)
    return _batch_augment(dataset, augment, seed, deterministic).prefetch(AUTOTUNE)


def _augment(dataset, augment: Augmentation | dict | None, seed: int, deterministic: bool):
    """Batch-level augmentation (one vectorised call per batch).

    Shift/flip/crop augmenters are stateless: each batch gets its own seed from a seeded stream, so they
    run in parallel and still repeat exactly. Rotation and zoom use Keras layers whose random state is a
    variable that parallel calls would race for: run in order when `deterministic`.
    """
    augmenter = preprocessing.build_augmenter(**as_augmentation(augment).image, seed=seed)
    if augmenter is None:
        return dataset
    if augmenter.stateless:
        seeds = tf.data.Dataset.random(seed=seed + 1, rerandomize_each_iteration=True).batch(2)
        return tf.data.Dataset.zip(dataset, seeds).map(
            lambda batch, pair: (augmenter(batch[0], pair), batch[1]), num_parallel_calls=AUTOTUNE, deterministic=True
        )
    if deterministic:
        return dataset.map(lambda x, y: (augmenter(x), y))
    return dataset.map(lambda x, y: (augmenter(x), y), num_parallel_calls=AUTOTUNE, deterministic=False)


def _batch_augment(dataset, augment: Augmentation | dict | None, seed: int, deterministic: bool):
    """Keras' batch layers (RandAugment, RandomColorJitter, RandomErasing, MixUp, CutMix) on batches of
    (float32 images, one-hot labels), after the classic augmentation; see `pipeline.data.batch_augment`."""
    from pipeline.data import batch_augment as augment_lib

    batch = as_augmentation(augment).batch
    batch_augment = augment_lib.build_batch_augment(**batch) if batch else None
    return augment_lib.map_batch_augment(dataset, batch_augment, seed=seed + 2, deterministic=deterministic)


def make_eval_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    batch_size: int,
    num_classes: int,
    transform: EvalTransform = EvalTransform(),
) -> tf.data.Dataset:
    """Batches in order, eval transform only (no randomness)."""
    return _indexed_batches(
        images,
        labels,
        batch_size=batch_size,
        num_classes=num_classes,
        shuffle=False,
        seed=None,
        shuffle_buffer=None,
        transform=transform,
    ).prefetch(AUTOTUNE)


# --------------------------------------------------------------------------------------------------
# Image files of any size (folder and file_list datasets)
# --------------------------------------------------------------------------------------------------


def _cache(dataset: tf.data.Dataset, cache: str, suffix: str) -> tf.data.Dataset:
    if cache == "auto":  # resolved by the caller (Splits.cache_mode); never a file named "auto"
        raise ValueError("cache='auto' must be resolved to 'memory' or 'none' first. Received: cache='auto'")
    if cache == "none":
        return dataset
    if cache == "memory":
        return dataset.cache()
    prefix = f"{cache}-{suffix}"  # a disk cache; TF adds its own .index/.data files
    removed = disk_cache.claim(prefix)  # one owner; what a killed first pass left is removed
    if removed:
        print(
            f"input.cache: removed {len(removed)} file(s) an interrupted first pass left at {prefix} "
            f"({', '.join(removed)}); the cache is written again",
            file=sys.stderr,
        )
    return dataset.cache(prefix)


def _streamed_first_pass(source: tf.data.Dataset, decoded, *, buffer: int, seed: int) -> tf.data.Dataset:
    """The training images kept in memory, without waiting for all of them before the first step.

    A shuffle after a cache fills its buffer from the cache, so the first batch of the first epoch waited
    for every file to be decoded (31 s of the first step on 100,000 small JPEGs on 2 cores, RESULTS
    "first step"). Here the first pass shuffles the names (cheap), decodes them in that order into the
    cache, and passes each image on as soon as it is decoded; every later pass shuffles the cached images.
    A first pass stopped part-way leaves no cache (tf.data keeps a memory cache only once complete), and
    the next pass streams again. (Disk caches keep the plain cache-then-shuffle: a second iterator over a
    file cache that is being written is an error.)

    Args:
        source: (name or record, label) elements.
        decoded: names -> decoded training elements (the working-size decode, broken files dropped).
        buffer: shuffle buffer, in elements (names in the first pass, decoded images later).
    Returns:
        The decoded elements: the first pass in the order of the seeded name shuffle (the same order as
        `cache: none`'s first epoch), later passes freshly shuffled each time.
    """
    # Set when a first pass has reached the end (the cache then holds every image). Created here, outside
    # any distribution scope (Cluster.datasets), so it is a plain variable of this pipeline.
    complete = tf.Variable(False, trainable=False, name="memory_cache_complete")
    # reshuffled as `cache: none` does, so its first epoch is this one's; a pass stopped part-way is redone
    # in a new order
    cached = decoded(source.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)).cache()

    @graph_only
    def mark_complete(_):
        with tf.control_dependencies([complete.assign(True)]):
            return tf.nest.map_structure(
                lambda spec: tf.zeros([0 if size is None else size for size in spec.shape], spec.dtype),
                cached.element_spec,
            )

    # after the last image, one more element, which sets the flag and is dropped
    end = tf.data.Dataset.range(1).map(mark_complete).filter(graph_only(lambda *element: tf.constant(False)))
    first_pass = cached.concatenate(end)
    later_passes = cached.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    # Read once per element; 0 (the first pass) until the flag is set. `choose_from_datasets` pulls only
    # from the dataset chosen, so the later passes' shuffle does not fill its buffer during the first.
    which = tf.data.Dataset.range(1).repeat().map(graph_only(lambda _: tf.cast(complete.read_value(), tf.int64)))
    return tf.data.Dataset.choose_from_datasets([first_pass, later_passes], which)


def make_file_dataset(paths, labels, **options) -> tf.data.Dataset:
    """`make_image_dataset` over image files: paths [N] (str) and labels int [N]."""
    labels = np.asarray(labels, np.int64)
    # os.fsencode: the name's bytes as the file system holds them; str() of a name that is not UTF-8 (a
    # Latin-1 "café.jpg" from an old camera) carries surrogates that TensorFlow refuses to convert.
    source = tf.data.Dataset.from_tensor_slices((np.array([os.fsencode(path) for path in paths], object), labels))
    return make_image_dataset(source, count=len(labels), read=tf.io.read_file, **options)


def make_image_dataset(
    source: tf.data.Dataset,
    *,
    count: int,
    training: bool,
    batch_size: int,
    num_classes: int,
    transform: EvalTransform,
    read=None,
    seed: int = 0,
    augment: Augmentation | dict | None = None,
    cache: str = "memory",
    shuffle_buffer: int | None = None,
    deterministic: bool = True,
    cache_suffix: str = "",
) -> tf.data.Dataset:
    """Batches of (float32 images in [0, 255], one-hot labels) from encoded images of any size.

    Memory follows the training resolution, not the files: training decodes each image at reduced scale
    where JPEG allows it and brings it down to its working size (`decode.decode_working_image`: the
    smallest size the random crop still needs) before anything is cached or shuffled. With
    `cache="none"` nothing decoded is kept: the (small) file names or records are shuffled, then decoded
    every epoch. With `cache="memory"` the first epoch streams the same way, filling the cache, and
    training starts after one batch (`_streamed_first_pass`): the first epochs of the two are the same
    batches for the same seed; later epochs shuffle differently (names against cached images). Evaluation keeps the exact eval transform
    (full decode, then `transform`), cached after it at the model's input size.

    Decoding runs in parallel; a file that fails to decode is dropped with a logged warning (files are
    checked before training, so this only catches files that changed since). Random crops use stateless
    seeds, so the result does not depend on the parallelism.

    Args:
        source: (item, label int64) elements: file paths (with `read=tf.io.read_file`) or encoded bytes.
        count: number of elements (the default shuffle buffer holds them all: names or small images).
        transform: the eval transform, with image_size and channels set (files come in many sizes).
        cache: "memory", a file path prefix (disk cache) or "none" (stream).
    """
    read = read or (lambda item: item)
    one_hot = graph_only(lambda images, y: (images, tf.one_hot(y, num_classes)))
    if not training:
        dataset = source.map(
            graph_only(
                lambda item, label: (transform(decode.decode_image(read(item), channels=transform.channels)), label)
            ),
            num_parallel_calls=AUTOTUNE,
            deterministic=True,
        )
        dataset = _cache(dataset.ignore_errors(log_warning=True), cache, f"eval{cache_suffix}")
        return dataset.batch(batch_size).map(one_hot, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)

    crop, factor = transform.working_crop()

    @graph_only
    def working(item, label):
        image, margin = decode.decode_working_image(
            read(item),
            image_size=transform.image_size,
            crop=crop,
            margin=transform.margin,
            channels=transform.channels,
            factor=factor,
        )
        return image, margin, label

    def decoded(names: tf.data.Dataset) -> tf.data.Dataset:
        return names.map(working, num_parallel_calls=AUTOTUNE, deterministic=True).ignore_errors(log_warning=True)

    buffer = shuffle_buffer or max(count, 1)
    if cache == "none":  # stream: shuffle the names/records, decode every epoch
        dataset = decoded(source.shuffle(buffer, seed=seed, reshuffle_each_iteration=True))
    elif cache == "memory":
        dataset = _streamed_first_pass(source, decoded, buffer=buffer, seed=seed)
    else:  # decode once at the working size into the disk cache, shuffle the small images
        dataset = _cache(decoded(source), cache, f"train{cache_suffix}")
        dataset = dataset.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    dataset = tf.data.Dataset.zip(dataset, seeds).map(
        graph_only(lambda element, pair: (transform.train_crop(element[0], pair, margin=element[1]), element[2])),
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    )
    dataset = _augment(dataset.batch(batch_size), augment, seed, deterministic)
    dataset = _batch_augment(dataset.map(one_hot, num_parallel_calls=AUTOTUNE), augment, seed, deterministic)
    return dataset.prefetch(AUTOTUNE)
