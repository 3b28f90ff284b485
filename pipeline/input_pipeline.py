"""tf.data input pipelines for in-memory image arrays.

Train: shuffled indices -> batch -> gather -> eval transform -> augmentation -> one-hot -> prefetch.
Eval: the same without shuffling or augmentation. Working on whole batches keeps per-element overhead
out of the hot path (one gather and one vectorised augmentation call per batch).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from pipeline import preprocessing

AUTOTUNE = tf.data.AUTOTUNE


def _indexed_batches(images: np.ndarray, labels: np.ndarray, *, batch_size: int, num_classes: int,
                     shuffle: bool, seed: int | None, shuffle_buffer: int | None,
                     image_size, channels, resize_method) -> tf.data.Dataset:
    images_tensor = tf.constant(images)
    labels_tensor = tf.constant(np.asarray(labels, np.int64))
    dataset = tf.data.Dataset.range(len(images))
    if shuffle:
        dataset = dataset.shuffle(shuffle_buffer or len(images), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)

    def load(indices):
        batch = preprocessing.prepare_images(tf.gather(images_tensor, indices), image_size=image_size,
                                             channels=channels, resize_method=resize_method)
        return batch, tf.one_hot(tf.gather(labels_tensor, indices), num_classes)

    return dataset.map(load, num_parallel_calls=AUTOTUNE, deterministic=True)


def make_train_dataset(images: np.ndarray, labels: np.ndarray, *, batch_size: int, num_classes: int,
                       seed: int, image_size=None, channels=None, resize_method="bilinear",
                       augment: dict | None = None, shuffle_buffer: int | None = None,
                       deterministic: bool = True) -> tf.data.Dataset:
    """Shuffled, augmented batches of (float32 images in [0, 255], one-hot labels).

    Args:
        images: uint8 [N, H, W, C]; labels: int [N].
        augment: keyword arguments for `preprocessing.build_augmenter` (None: no augmentation).
        deterministic: run augmentation in order so a seed reproduces a run exactly; False lets
            tf.data run several augmentation calls at once (faster, not repeatable).
    """
    dataset = _indexed_batches(images, labels, batch_size=batch_size, num_classes=num_classes,
                               shuffle=True, seed=seed, shuffle_buffer=shuffle_buffer,
                               image_size=image_size, channels=channels, resize_method=resize_method)
    augmenter = preprocessing.build_augmenter(**(augment or {}), image_size=image_size or images.shape[1:3],
                                              seed=seed)
    if augmenter is not None:
        # Keras random layers keep their RNG state in a variable: calls in parallel would race for it.
        if deterministic:
            dataset = dataset.map(lambda x, y: (augmenter(x), y))
        else:
            dataset = dataset.map(lambda x, y: (augmenter(x), y), num_parallel_calls=AUTOTUNE,
                                  deterministic=False)
    return dataset.prefetch(AUTOTUNE)


def make_eval_dataset(images: np.ndarray, labels: np.ndarray, *, batch_size: int, num_classes: int,
                      image_size=None, channels=None, resize_method="bilinear") -> tf.data.Dataset:
    """Batches in order, eval transform only (no randomness)."""
    return _indexed_batches(images, labels, batch_size=batch_size, num_classes=num_classes,
                            shuffle=False, seed=None, shuffle_buffer=None, image_size=image_size,
                            channels=channels, resize_method=resize_method).prefetch(AUTOTUNE)
