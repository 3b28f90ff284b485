"""Callbacks and fit state: BackupAndRestore's private hooks, the fit's initial epoch.

Part of `pipeline.compat` (see its docstring); tested in tests/test_compat_*.py.
"""

from __future__ import annotations

import keras

# --------------------------------------------------------------------------------------------------
# Callbacks and fit state
# --------------------------------------------------------------------------------------------------
#
# Keras' BackupAndRestore (keras/src/callbacks/backup_and_restore.py) saves through the private hook
# `_save_model` and counts epochs in `_current_epoch`; a fit learns where to start from the model's
# private `_initial_epoch` (keras/src/backend/tensorflow/trainer.py: `initial_epoch = self._initial_epoch
# or initial_epoch`), which is how BackupAndRestore itself skips finished epochs. Our crash-safe backup
# (pipeline/training/callbacks.py) keeps that mechanism and reaches it only through this class.


class BackupAndRestoreHooks(keras.callbacks.BackupAndRestore):
    """keras.callbacks.BackupAndRestore with its private hooks under public names.

    Subclasses implement `save_backup()` (called where Keras would write its own backup) and read
    `current_epoch` (epochs completed, counted by Keras); `skip_to_epoch(epoch)` makes the fit in progress
    start after `epoch` completed epochs.
    """

    def _save_model(self):  # the private hook Keras calls at each save point
        self.save_backup()

    def save_backup(self) -> None:
        raise NotImplementedError

    @property
    def current_epoch(self) -> int:
        return self._current_epoch

    def skip_to_epoch(self, epoch: int) -> None:
        self.model._initial_epoch = epoch  # read by the fit in progress
