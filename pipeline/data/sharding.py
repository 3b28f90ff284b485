"""How a multi-worker run divides its input: tf.data's auto-shard policy per kind of source, and each
worker's share of a file or array list. The cluster itself (TF_CONFIG, strategies, chief) is
`pipeline.distribute`'s; this module only receives (workers, index)."""

from __future__ import annotations

from pipeline.core.errors import UserError, did_you_mean


class ShardError(UserError):
    """The input cannot be divided among the workers as asked."""


SHARD_KINDS = ("array", "tfrecord", "files")


def shard_options(kind: str):
    """tf.data.Options with the auto-shard policy for a kind of input; apply with `dataset.with_options`.

    Args:
        kind: "array": in-memory arrays (Dataset.range / from_tensor_slices over the data): DATA, every
                  worker runs the pipeline and keeps its share of the batches (the same shuffle seed on
                  every worker keeps the shares disjoint).
              "tfrecord": reader datasets over a list of files (TFRecordDataset, TextLineDataset,
                  list_files + interleave): FILE, each worker opens only its share of the files.
              "files": image files decoded with tf.io.read_file from a path list: OFF, because tf.data's
                  FILE policy cannot find a reader there ("Found an unshardable source dataset",
                  verified with TF 2.21); shard the path list yourself with `worker_share` before
                  reading, so that each worker still reads only its share of the files.

    Raises:
        ShardError: an unknown kind.
    """
    import tensorflow as tf

    policies = {
        "array": tf.data.experimental.AutoShardPolicy.DATA,
        "tfrecord": tf.data.experimental.AutoShardPolicy.FILE,
        "files": tf.data.experimental.AutoShardPolicy.OFF,
    }
    if kind not in policies:
        raise ShardError(
            f"shard kind must be one of {', '.join(SHARD_KINDS)}"
            f"{did_you_mean(kind, SHARD_KINDS)}. Received: kind={kind!r}"
        )
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = policies[kind]
    return options


def worker_share(items, shard: tuple[int, int]):
    """Worker `index`'s share of a sequence (numpy array or list) for `shard` = (workers, index): items
    index, index + workers, index + 2 * workers, ... Taken before the dataset is built, in
    the same order on every worker (sorted or seeded); `items` itself when workers is 1."""
    workers, index = shard
    return items if workers <= 1 else items[index::workers]
