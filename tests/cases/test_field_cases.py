"""Faults real users reported against tools like ours (../shared/cases/), rebuilt on inputs made here.

Each test asserts the right value for the whole kind of fault, not only the reported input:
degenerate datasets and splits are refused before anything is written, ambiguous YAML is refused,
our own list files read back as written, non-finite models never become checkpoints, a full disk is one
line naming the file, and a run directory has one writer.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from helpers import LEAN_RUN
from PIL import Image

from pipeline import cli
from pipeline import config as config_lib
from pipeline import experiment as experiment_lib
from pipeline.config import rundir
from pipeline.core import errors, fileio
from pipeline.data import datasets
from pipeline.data import splits as splits_lib

PROJECT = Path(__file__).resolve().parents[2]


def stripes(root: Path, counts: dict, size: int = 16) -> Path:
    """ROOT/<class>/imgNNN.png; class i has horizontal (even i) or vertical (odd i) noisy stripes."""
    for index, (name, count) in enumerate(counts.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for number in range(count):
            rng = np.random.default_rng(index * 1000 + number)
            image = np.zeros((size, size, 3), np.uint8)
            on = (np.arange(size) // 2) % 2 == 0
            if index % 2 == 0:
                image[on] = 255
            else:
                image[:, on] = 255
            noisy = np.clip(image.astype(int) + rng.integers(-20, 20, image.shape), 0, 255).astype(np.uint8)
            Image.fromarray(noisy).save(root / name / f"img{number:03d}.png")
    return root


def folder_config(tmp_path: Path, root: Path, *extra: str) -> config_lib.Config:
    return experiment_lib.load_experiment(
        "tiny",
        [
            "dataset.name=folder",
            f"dataset.root={root}",
            f"dataset.data_dir={tmp_path / 'data'}",
            "input.image_size=[16,16]",
            "train.epochs=1",
            "train.verbose=0",
            *LEAN_RUN,
            *extra,
        ],
    )


# -- 05: valid but ambiguous YAML ------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, key",
    [
        ("train:\n  epochs: 30\nseed: 1\ntrain:\n  batch_size: 8\n", "train"),
        ("train:\n  epochs: 3\n  epochs: 4\n", "epochs"),
    ],
)
def test_duplicate_yaml_keys_are_refused_with_both_lines(tmp_path, text, key):
    path = tmp_path / "dup.yaml"
    path.write_text(f"base: {PROJECT / 'experiments' / 'tiny.yaml'}\n{text}")
    with pytest.raises(config_lib.ConfigError) as caught:
        config_lib.load_config(str(path))
    message = str(caught.value)
    assert f"duplicate key {key!r}" in message and str(path) in message and "line" in message


# -- 11: what our tools write, our loaders read back -------------------------------------------------


def test_numeric_class_folders_round_trip_through_data_split(tmp_path):
    root = stripes(tmp_path / "ds", {str(k): 4 for k in range(12)}, size=12)
    assert (
        cli.main(["data", "split", str(root), "--val", "0.25", "--test", "0.25", "--out", str(tmp_path / "lists")]) == 0
    )
    lists = {
        "train": tmp_path / "lists/train.txt",
        "validation": tmp_path / "lists/val.txt",
        "test": tmp_path / "lists/test.txt",
    }
    data = datasets.load_dataset(
        "file_list",
        data_dir=str(tmp_path / "data"),
        root=str(root),
        classes=str(tmp_path / "lists/classes.txt"),
        lists={k: str(v) for k, v in lists.items()},
    )
    checked = 0
    for paths, labels in data.splits.values():
        for path, label in zip(paths, labels):
            assert Path(path).parent.name == data.class_names[label]
            checked += 1
    assert checked == 48


def test_a_label_that_is_both_a_name_and_another_index_is_refused_unless_the_file_says(tmp_path):
    root = stripes(tmp_path / "ds", {str(k): 1 for k in range(12)}, size=12)
    (tmp_path / "classes.txt").write_text("".join(f"{k}\n" for k in sorted(map(str, range(12)))))
    listing = tmp_path / "train.txt"
    listing.write_text("10/img000.png 2\n")
    options = dict(
        data_dir=str(tmp_path / "data"),
        root=str(root),
        classes=str(tmp_path / "classes.txt"),
        lists={"train": str(listing)},
    )
    with pytest.raises(datasets.DatasetError, match="ambiguous.*labels: names"):
        datasets.load_dataset("file_list", **options)
    names = sorted(map(str, range(12)))
    listing.write_text("# labels: indices\n10/img000.png 2\n")
    assert names[datasets.load_dataset("file_list", **options).splits["train"][1][0]] == "10"
    listing.write_text("# labels: names\n2/img000.png 2\n")
    assert names[datasets.load_dataset("file_list", **options).splits["train"][1][0]] == "2"


# -- 02, 03, 09: degenerate datasets and splits, refused or reported up front ------------------------


def test_a_single_class_is_refused_before_anything_is_written(tmp_path):
    from pipeline import run as train

    root = stripes(tmp_path / "ds", {"cat": 10})
    with pytest.raises(errors.UserError, match="at least two classes"):
        train.train(folder_config(tmp_path, root), run_dir=tmp_path / "run", log=lambda *_: None)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("validation_split", [0.1, 0.3])
def test_small_classes_keep_an_image_in_every_split(tmp_path, validation_split):
    root = stripes(tmp_path / "ds", {"cat": 4, "dog": 4})
    splits = splits_lib.Splits.from_config(
        folder_config(tmp_path, root, f"dataset.validation_split={validation_split}"), log=lambda *_: None
    )
    for split in ("train", "validation", "test"):
        assert sorted(set(getattr(splits, split)[1].tolist())) == [0, 1], split


def test_a_split_that_cannot_be_filled_is_refused_up_front(tmp_path):
    from pipeline import run as train

    root = stripes(tmp_path / "ds", {"cat": 1, "dog": 1})
    with pytest.raises(datasets.DatasetError, match="split is empty"):
        train.train(folder_config(tmp_path, root), run_dir=tmp_path / "run", log=lambda *_: None)
    assert not (tmp_path / "run").exists()


def test_a_rare_class_is_held_out_too_and_missing_classes_are_named(tmp_path):
    root = stripes(tmp_path / "ds", {"common": 60, "rare": 4})
    splits = splits_lib.Splits.from_config(folder_config(tmp_path, root), log=lambda *_: None)
    rare = splits.class_names.index("rare")
    assert all(rare in getattr(splits, split)[1] for split in ("train", "validation", "test"))
    messages = []
    splits_lib.check_split_sizes(
        {"train": ([1, 2], np.array([0, 1])), "validation": ([3], np.array([0])), "test": ([4], np.array([1]))},
        ["common", "rare"],
        validation_split=0.1,
        log=messages.append,
    )
    assert any("validation split has no image of class(es) rare" in m for m in messages)


def test_stratified_split_keeps_proportions_for_large_classes():
    labels = np.repeat([0, 1, 2], [100, 50, 10])
    kept, held = splits_lib.stratified_split(labels, 0.1, seed=3)
    assert np.bincount(labels[held]).tolist() == [10, 5, 1]
    assert sorted(np.concatenate([kept, held]).tolist()) == list(range(160))


# -- 07: a full disk is one line naming the file, nothing lost ---------------------------------------


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EFBIG, errno.EDQUOT])
def test_a_full_disk_during_an_atomic_write_names_the_file_and_keeps_the_old_one(tmp_path, code):
    target = tmp_path / "last.keras"
    target.write_text("previous")

    def fail(temporary):
        Path(temporary).write_text("half")
        raise OSError(code, os.strerror(code))

    with pytest.raises(fileio.StorageFullError) as caught:
        fileio.atomic_write(target, fail)
    assert str(target) in str(caught.value) and "run the same command again" in str(caught.value)
    assert target.read_text() == "previous" and [p.name for p in tmp_path.iterdir()] == ["last.keras"]


def test_hdf5_wrapped_write_failures_are_recognised():
    assert (
        fileio.storage_error(
            RuntimeError("Can't write data (file write failed: errno = 28, error message = 'No space left on device')")
        )
        is not None
    )
    assert fileio.storage_error(ValueError("bad value")) is None


def test_the_cli_reports_a_full_disk_in_one_line(monkeypatch, capsys):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "/runs/x/history.csv")

    from pipeline import run as train

    monkeypatch.setattr(train, "train", full)
    assert cli.main(["train", "tiny"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "/runs/x/history.csv" in err and "Traceback" not in err


# -- 13: one writer per run directory ----------------------------------------------------------------


def test_a_second_writer_is_refused_at_once_and_a_killed_one_leaves_no_lock(tmp_path):
    run_dir = tmp_path / "run"
    with rundir.exclusive(run_dir):
        with rundir.exclusive(run_dir):  # re-entrant in one process (a run's own evaluation and export)
            pass
    assert not run_dir.exists()  # the run never started: nothing left behind

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(PROJECT)!r})
        from pipeline.config import rundir
        with rundir.exclusive(__import__('pathlib').Path({str(run_dir)!r})):
            (rundir.Path({str(run_dir)!r}) / "config.yaml").write_text("x")
            print("locked", flush=True)
            time.sleep(60)
        """),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(rundir.RunError, match="in use by another `train` process"):
        with rundir.exclusive(run_dir):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with rundir.exclusive(run_dir):  # the kernel released the killed holder's lock
        pass


# -- 01: EXIF orientation honoured on every decode path ----------------------------------------------


def _upright_and_tagged(tmp_path: Path) -> tuple[Path, Path]:
    """The same picture twice: stored upright, and stored rotated with EXIF Orientation 6 (as phones do)."""
    upright = np.zeros((48, 32, 3), np.uint8)
    upright[:12] = 255  # a bright band at the top, as displayed
    plain, tagged = tmp_path / "upright.jpg", tmp_path / "phone.jpg"
    Image.fromarray(upright).save(plain, quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed = stored rotated 90 degrees clockwise
    Image.fromarray(np.rot90(upright, 1).copy()).save(tagged, quality=95, exif=exif.tobytes())
    return plain, tagged


def test_training_and_evaluation_pipelines_see_the_picture_as_displayed(tmp_path):
    from pipeline.data import input_pipeline
    from pipeline.data.transform import EvalTransform

    paths = _upright_and_tagged(tmp_path)
    transform = EvalTransform(image_size=(24, 16), channels=3)
    for training in (False, True):
        batch = next(
            iter(
                input_pipeline.make_file_dataset(
                    [str(p) for p in paths],
                    [0, 1],
                    training=training,
                    batch_size=2,
                    num_classes=2,
                    transform=transform,
                    seed=1,
                )
            )
        )[0].numpy()
        top, bottom = batch[:, :6].mean(axis=(1, 2, 3)), batch[:, -6:].mean(axis=(1, 2, 3))
        assert (top > 150).all() and (bottom < 60).all(), (training, top, bottom)


def test_the_serving_signature_and_the_scan_honour_the_orientation(tmp_path):
    import keras
    import tensorflow as tf

    from pipeline.data import image_files
    from pipeline.data.transform import EvalTransform
    from pipeline.serving import export

    plain, tagged = _upright_and_tagged(tmp_path)
    inputs = keras.Input((24, 16, 3))
    top = keras.layers.Lambda(lambda x: keras.ops.mean(x[:, :6], axis=(1, 2, 3), keepdims=False))(inputs)
    bottom = keras.layers.Lambda(lambda x: keras.ops.mean(x[:, -6:], axis=(1, 2, 3), keepdims=False))(inputs)
    logits = keras.layers.Concatenate()([keras.layers.Reshape((1,))(top), keras.layers.Reshape((1,))(bottom)])
    model = keras.Model(inputs, keras.layers.Softmax()(logits / 50.0))
    serve_bytes, _ = export.serving_functions(
        model, class_names=["top", "bottom"], top_k=1, transform=EvalTransform(image_size=(24, 16), channels=3)
    )
    answers = serve_bytes(tf.constant([plain.read_bytes(), tagged.read_bytes()]))
    assert [c[0].decode() for c in answers["classes"].numpy()] == ["top", "top"]
    np.testing.assert_allclose(answers["probabilities"][0], answers["probabilities"][1], atol=0.02)
    checks = image_files.scan_images([str(plain), str(tagged)])
    assert [(c.height, c.width) for c in checks] == [(48, 32), (48, 32)]


# -- more of the same kinds --------------------------------------------------------------------------


def test_class_folders_starting_with_a_hash_survive_our_list_files(tmp_path):
    root = stripes(tmp_path / "ds", {"#tag": 3, "plain": 3}, size=12)
    assert cli.main(["data", "label", str(root), "--out", str(tmp_path / "lists" / "labels.txt")]) == 0
    data = datasets.load_dataset(
        "file_list",
        data_dir=str(tmp_path / "data"),
        root=str(root),
        classes=str(tmp_path / "lists" / "classes.txt"),
        lists={"train": str(tmp_path / "lists" / "labels.txt")},
    )
    paths, labels = data.splits["train"]
    assert len(paths) == 6
    assert all(Path(p).parent.name == data.class_names[label] for p, label in zip(paths, labels))


def test_a_non_finite_validation_value_never_becomes_the_best(tmp_path):
    import keras

    from pipeline.training import callbacks

    checkpoints = callbacks.Checkpoints(tmp_path, monitor="val_accuracy")
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    checkpoints.set_model(model)
    checkpoints.on_epoch_end(0, {"loss": 1.0, "val_accuracy": float("nan")})
    assert checkpoints.best is None and not (tmp_path / "best.keras").exists()
    checkpoints.on_epoch_end(1, {"loss": 1.0, "val_accuracy": 0.5})
    assert checkpoints.best == 0.5 and (tmp_path / "best.keras").exists()


def test_a_checkpoint_with_nan_weights_is_never_evaluated_or_exported(tmp_path):
    import keras

    from pipeline.evaluation import evaluate

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.layers[0].kernel.assign(np.full((2, 1), np.nan, np.float32))
    model.save(tmp_path / "best.keras")
    with pytest.raises(rundir.RunDirError, match="NaN or infinite weights"):
        evaluate.load_checkpoint(tmp_path / "best.keras")
