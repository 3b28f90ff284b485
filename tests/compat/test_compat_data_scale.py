"""compat.numpy_function_bytes: the workaround for tf.numpy_function keeping returned 0-d object arrays'
bytes alive. One test checks the workaround (exact bytes, no growth); one checks that the upstream leak is
still there, and fails, naming the TensorFlow version, when an upgrade fixes it (then the workaround can go)."""

from __future__ import annotations

import os
import tracemalloc

import numpy as np
import tensorflow as tf

from pipeline import compat

RECORDS, RECORD_BYTES = 64, 1 << 20  # 64 MiB through numpy_function: a leak is unmistakable


def growth_mib(numpy_function) -> float:
    """MiB of Python allocations still alive after reading RECORDS fresh 1 MiB bytes objects through
    `numpy_function(python, [key])`, after a first pass that warms up tf.data's buffers.

    Counted with tracemalloc, not RSS: in a process that already ran other tests (pytest-xdist workers
    run many files), freed heap absorbs a leak and RSS barely grows (measured 28 MiB of a 64 MiB leak)."""

    def fresh(key) -> bytes:
        return int(key).to_bytes(8, "little") + bytes(RECORD_BYTES - 8)  # ends with NULs

    dataset = tf.data.Dataset.range(RECORDS).map(lambda key: tf.strings.length(numpy_function(fresh, [key])))
    assert [int(length) for length in dataset.take(2)] == [RECORD_BYTES] * 2
    tracemalloc.start()
    try:
        for _ in dataset:
            pass
        alive, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return alive / (1 << 20)


def test_numpy_function_bytes_keeps_every_byte_and_frees_them():
    data = b"\x00head" + os.urandom(100) + b"\x00\x00"
    value = compat.numpy_function_bytes(lambda: data, [])
    assert value.shape == [] and value.dtype == tf.string and value.numpy() == data
    assert growth_mib(compat.numpy_function_bytes) < 16


def test_upstream_leak_of_zero_d_object_arrays_is_still_there():
    def zero_d(python, inputs):
        return tf.ensure_shape(
            tf.numpy_function(lambda *a: np.array(python(*a), dtype=object), inputs, tf.string, stateful=False), []
        )

    leaked = growth_mib(zero_d)
    assert leaked > RECORDS / 2, (
        f"TensorFlow {tf.__version__} no longer leaks the bytes of 0-d object arrays returned by "
        f"tf.numpy_function ({leaked:.0f} MiB over {RECORDS} MiB): compat.numpy_function_bytes can go"
    )
