"""The Keras internals pipeline/compat/'s callbacks section relies on. Each test fails naming the Keras
version when an upgrade changes the internal, so the fix lands in compat.py and nowhere else."""

import inspect

import keras
import numpy as np

from pipeline import compat

VERSION = f"Keras {keras.__version__}"


def test_backup_and_restore_still_saves_through_the_private_hook():
    source = inspect.getsource(keras.callbacks.BackupAndRestore)
    assert "def _save_model(self)" in source, f"{VERSION}: BackupAndRestore no longer has _save_model"
    assert "self._save_model()" in source, f"{VERSION}: BackupAndRestore no longer calls _save_model"
    assert "self._current_epoch = epoch + 1" in source, f"{VERSION}: _current_epoch is no longer counted"


def test_fit_still_reads_the_private_initial_epoch():
    from keras.src.backend.tensorflow import trainer

    assert "self._initial_epoch or initial_epoch" in inspect.getsource(trainer.TensorFlowTrainer.fit), (
        f"{VERSION}: fit no longer starts from model._initial_epoch; fix compat.BackupAndRestoreHooks.skip_to_epoch"
    )


def test_hooks_save_each_epoch_and_skip_finished_epochs(tmp_path):
    saved, epochs_run = [], []

    class Recorder(compat.BackupAndRestoreHooks):
        def save_backup(self):
            saved.append(self.current_epoch)

    class Skipper(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            recorder.skip_to_epoch(2)

        def on_epoch_begin(self, epoch, logs=None):
            epochs_run.append(epoch)

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    recorder = Recorder(str(tmp_path / "backup"), save_freq="epoch", delete_checkpoint=False)
    x, y = np.zeros((4, 2), "float32"), np.zeros((4, 1), "float32")
    model.fit(x, y, epochs=2, verbose=0, callbacks=[recorder])
    assert saved == [1, 2], f"{VERSION}: save hook called for epochs {saved}"
    model.fit(x, y, epochs=4, verbose=0, callbacks=[recorder, Skipper()])
    assert epochs_run == [2, 3], f"{VERSION}: skip_to_epoch did not skip (ran {epochs_run})"


def test_the_book_baseline_generator_is_still_where_compat_finds_it():
    generator = compat.legacy_image_data_generator()
    assert hasattr(generator, "flow"), f"{VERSION}: keras.src.legacy ImageDataGenerator moved or changed"
