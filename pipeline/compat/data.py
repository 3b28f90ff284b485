"""tf.data: bytes from Python inside a tf.numpy_function (pipeline/data/records.py's record reader).

Part of `pipeline.compat` (see its docstring); tested in tests/compat/test_compat_data_scale.py.
"""

from __future__ import annotations

# Bytes from Python inside tf.data (pipeline/data/records.py's record reader)
# --------------------------------------------------------------------------------------------------
#
# TensorFlow 2.21 keeps alive the element of a 0-d object ndarray that a `tf.numpy_function` returns:
# each call's bytes object is never freed (measured: +1 MiB of RSS per 1 MiB record, every epoch, so
# training from TFRecords by id grew by the dataset's size each epoch). A 1-element 1-d object array
# is released. tests/compat/test_compat_data_scale.py checks both, and fails when an upgrade fixes the leak.


def numpy_function_bytes(function, inputs, *, stateful: bool = False):
    """`tf.numpy_function` for a Python function returning one `bytes` value -> tf.string scalar.

    The bytes travel in a 1-element object array (reshaped to a scalar in the graph): NUL bytes are
    kept (a fixed-width np.bytes_ would drop trailing ones), and nothing leaks (see above).
    """
    import numpy as np
    import tensorflow as tf

    def wrapped(*arguments):
        return np.array([function(*arguments)], dtype=object)

    values = tf.numpy_function(wrapped, inputs, tf.string, stateful=stateful)
    return tf.reshape(tf.ensure_shape(values, [1]), [])
