"""Every use of Keras or TensorFlow internals, and every workaround for an upstream bug, in one place.

Each function here names what it reaches into and why; `tests/test_compat.py` has one test per access
that fails loudly, naming the installed Keras version, when an upgrade changes the internal.
"""

from __future__ import annotations

import keras

KERAS_VERSION = keras.__version__


# --------------------------------------------------------------------------------------------------
# Layer graphs
# --------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------
# Callbacks and fit state
# --------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------
# tf.distribute (see pipeline/distribute.py)
# --------------------------------------------------------------------------------------------------
