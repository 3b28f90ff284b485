"""Faults real users reported against tools like ours, round 2 (../shared/cases/25..32), rebuilt on inputs made
here, one section per kind: a kill never blocks resume (25), YAML reads as PyYAML reads it (26), a damaged file
of ours is named as damaged (28), SIGTERM stops every command as Ctrl-C does and leaves no orphan (30), the
run's record is the truth for later commands (31), every file a user points at is used or reported (32), and
hostile input is bounded (decompression bombs, archives)."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_field_cases import folder_config, stripes

from pipeline import cli
from pipeline import config as config_lib
from pipeline.config import rundir
from pipeline.core import fileio, signals
from pipeline.data import disk_cache, folders, image_files, image_header

PROJECT = Path(__file__).resolve().parents[2]
TINY = PROJECT / "experiments" / "tiny.yaml"


def bomb_png(width: int, height: int) -> bytes:
    """A valid PNG of ~1 KB whose IHDR declares width x height RGB pixels (a decompression bomb)."""
    chunk = lambda kind, data: (  # noqa: E731
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 4096))
        + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def finished_folder_run(tmp_path_factory):
    """A finished tiny run on ROOT/{cats,dogs} (10 images each, 1 epoch): (run_dir, data root)."""
    base = tmp_path_factory.mktemp("field2")
    root = stripes(base / "ds", {"cats": 10, "dogs": 10})
    overrides = [
        "dataset.name=folder",
        f"dataset.root={root}",
        f"dataset.data_dir={base / 'data'}",
        "input.image_size=[16,16]",
        "train.epochs=1",
        "train.verbose=0",
        "dataset.validation_split=0.2",
        "export.enabled=false",
        "evaluation.report=false",
        "train.callbacks.tensorboard.enabled=false",
    ]
    argv = ["train", "tiny", "--run-dir", str(base / "run")] + [item for o in overrides for item in ("--set", o)]
    assert cli.main(argv) == 0
    return base / "run", root


@pytest.fixture
def run_copy(finished_folder_run, tmp_path):
    """A copy of the finished run and of its data, the copy's config pointing at the copied data."""
    run_dir, root = finished_folder_run
    data = Path(shutil.copytree(root, tmp_path / "ds"))
    copy = Path(shutil.copytree(run_dir, tmp_path / "run"))
    config = (copy / "config.yaml").read_text().replace(str(root), str(data))
    (copy / "config.yaml").write_text(config)
    return copy, data


# -- 25: a kill at any moment never blocks resume ---------------------------------------------------


def test_a_killed_first_pass_of_the_disk_cache_is_recovered(tmp_path):
    """TF's lockfile and partial shard left by kill -9 (tensorflow/tensorflow#28798) are removed by the next
    owner, and tf.data then writes and reads the cache in full."""
    import tensorflow as tf

    from pipeline.data import input_pipeline

    prefix = tmp_path / "cache" / "photos-train"
    prefix.parent.mkdir()
    (prefix.parent / "photos-train_0.lockfile").write_text("")
    (prefix.parent / "photos-train_0.data-00000-of-00001.tempstate123").write_bytes(b"half")
    (prefix.parent / "unrelated.txt").write_text("kept")
    before = tf.data.Dataset.range(5).cache(str(prefix))
    with pytest.raises(tf.errors.AlreadyExistsError):  # what the same command met before the fix
        list(before)
    cached = input_pipeline._cache(tf.data.Dataset.range(5), str(tmp_path / "cache" / "photos"), "train")
    assert [int(x) for x in cached] == [0, 1, 2, 3, 4]
    assert sorted(p.name for p in prefix.parent.iterdir()) == [
        "photos-train.data-00000-of-00001",
        "photos-train.index",
        "photos-train.owner",
        "unrelated.txt",
    ]
    assert [int(x) for x in input_pipeline._cache(tf.data.Dataset.range(5), str(prefix)[:-6], "train")] == [
        0,
        1,
        2,
        3,
        4,
    ]
    disk_cache.release_all()


def test_a_disk_cache_in_use_by_a_live_process_is_refused_not_broken(tmp_path):
    prefix = str(tmp_path / "shared-train")
    other = subprocess.Popen(
        [sys.executable, "-c", f"import fcntl,time; h=open({prefix + '.owner'!r},'a'); fcntl.flock(h, fcntl.LOCK_EX); "
         "print('locked', flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert other.stdout.readline().strip() == "locked"
        (tmp_path / "shared-train_0.lockfile").write_text("")  # the live writer's: must stay
        with pytest.raises(disk_cache.DiskCacheInUseError, match="in use by another running process"):
            disk_cache.claim(prefix)
        assert (tmp_path / "shared-train_0.lockfile").exists()
    finally:
        other.kill()
        other.wait()
    assert disk_cache.claim(prefix) == ["shared-train_0.lockfile"]  # its owner is dead: stale, removed
    disk_cache.release_all()


def test_temporary_files_a_killed_write_left_in_the_run_directory_are_removed(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / ".tmp-best-abc.keras").write_bytes(b"half")
    (tmp_path / "checkpoints" / "best.keras").write_bytes(b"whole")
    (tmp_path / "export" / "tiny" / ".tmp-3-xyz").mkdir(parents=True)
    removed = rundir.remove_leftovers(tmp_path)
    assert {p.name for p in removed} == {".tmp-best-abc.keras", ".tmp-3-xyz"}
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["best.keras"]


def test_a_killed_archive_extraction_is_cleaned_up_and_redone(tmp_path):
    source = stripes(tmp_path / "src", {"cats": 2, "dogs": 2}, size=12)
    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for path in sorted(source.rglob("*.png")):
            handle.write(path, path.relative_to(source).as_posix())
    (tmp_path / "data" / ".tmp-photos-dead").mkdir(parents=True)  # a kill -9 during extraction left it
    (tmp_path / "data" / ".tmp-photos-dead" / "cats").mkdir()
    target = folders.extract_archive(archive, str(tmp_path / "data"))
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["photos"]
    assert len(image_files.find_files(target)) == 4


# -- 26: every YAML PyYAML's safe loader reads loads the same; only duplicate keys refused -------------

YAML_DOCUMENTS = {
    "merge key": "a: &sgd {name: sgd, learning_rate: 0.01, momentum: 0.9}\nb:\n  <<: *sgd\n  learning_rate: 0.001\n",
    "merge list": "x: &x {p: 1, q: 2}\ny: &y {q: 3, r: 4}\nz:\n  <<: [*x, *y]\n  r: 5\n",
    "flow merge": "x: &x {p: 1}\nz: {<<: *x, q: 2}\n",
    "alias": "x: &x [1, 2]\ny: *x\n",
    "explicit tags": "a: !!str 3\nb: !!float '2'\n? c\n: 4\n",
    "block scalars": "a: |\n  line\nb: >-\n  folded\n  text\n",
}


@pytest.mark.parametrize("name", sorted(YAML_DOCUMENTS))
def test_yaml_that_pyyaml_reads_loads_the_same(name):
    import yaml

    text = YAML_DOCUMENTS[name]
    assert config_lib.yaml_load(text) == yaml.safe_load(text)


def test_a_merge_key_in_an_experiment_file_resolves_as_pyyaml_does(tmp_path):
    path = tmp_path / "merge.yaml"
    path.write_text(
        f"base: {TINY}\ntrain:\n  epochs: 3\n  optimizer: &sgd {{name: sgd, learning_rate: 0.01, momentum: 0.9}}\n"
        "  phases:\n    - {epochs: 1, trainable: all, optimizer: *sgd}\n"
        "    - epochs: 2\n      trainable: all\n      optimizer:\n        <<: *sgd\n        learning_rate: 0.001\n"
    )
    phases = config_lib.load_config(str(path)).train.phases
    assert [(p.optimizer.name, p.optimizer.learning_rate, p.optimizer.momentum) for p in phases] == [
        ("sgd", 0.01, 0.9),
        ("sgd", 0.001, 0.9),
    ]


@pytest.mark.parametrize(
    "encode",
    [
        lambda text: text.encode(),
        lambda text: b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode(),  # Notepad: BOM + CRLF
        lambda text: text.replace("\n", "   \n").encode(),  # trailing spaces
        lambda text: text.encode("utf-16"),  # BOM + UTF-16
    ],
)
def test_text_files_from_any_editor_read_the_same(tmp_path, encode):
    path = tmp_path / "e.yaml"
    path.write_bytes(encode(f"base: {TINY}\ntrain:\n  epochs: 7\nname: café\n"))
    config = config_lib.load_config(str(path))
    assert (config.train.epochs, config.name) == (7, "café")


def test_duplicate_keys_are_still_refused_beside_a_merge_key():
    with pytest.raises(config_lib.yaml.YAMLError, match="duplicate key 'q'"):
        config_lib.yaml_load("x: &x {p: 1}\nz:\n  <<: *x\n  q: 2\n  q: 3\n")


# -- 28: a damaged file of ours is named as damaged, exit 2 -------------------------------------------


@pytest.mark.parametrize("command", ["evaluate", "export"])
def test_a_truncated_checkpoint_is_named_as_damaged(run_copy, command, capsys, tmp_path):
    run_dir, _ = run_copy
    best = run_dir / "checkpoints" / "best.keras"
    best.write_bytes(best.read_bytes()[: best.stat().st_size // 2])
    extra = ["--out", str(tmp_path / "exp")] if command == "export" else []
    assert cli.main([command, str(run_dir), *extra]) == 2
    error = capsys.readouterr().err
    assert f"error: {best}: damaged or truncated" in error and "not found" not in error.lower()
    assert not (tmp_path / "exp").exists()


def test_a_damaged_resume_state_is_named_as_damaged(tmp_path):
    import keras

    from pipeline.training import callbacks

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    weights = tmp_path / "epoch-0001.weights.h5"
    model.save_weights(weights)
    weights.write_bytes(weights.read_bytes()[:600])
    (tmp_path / "training_metadata.json").write_text(json.dumps({"epoch": 1, "weights": weights.name}))
    with pytest.raises(fileio.DamagedFileError, match=f"{weights}: damaged or truncated") as caught:
        callbacks._load_backup_weights(model, weights)
    assert "delete" in str(caught.value) and str(tmp_path) in str(caught.value)
    (tmp_path / "training_metadata.json").write_text('{"epoch": 1, "weig')
    with pytest.raises(fileio.DamagedFileError, match="training_metadata.json: damaged or truncated"):
        callbacks.read_backup_metadata(tmp_path)


def test_a_garbled_scan_cache_is_rebuilt_not_a_traceback(tmp_path):
    root = stripes(tmp_path / "ds", {"cats": 2}, size=12)
    paths = image_files.find_files(root)
    cache = tmp_path / "cache"
    first = image_files.scan_images(paths, cache_dir=cache)
    (cache_file,) = cache.iterdir()
    for garbage in ('{"x": 1', "[1, 2]", json.dumps({str(paths[0]): {"key": None}})):
        cache_file.write_text(garbage)
        assert image_files.scan_images(paths, cache_dir=cache) == first


# -- 30: SIGTERM is Ctrl-C for every command; no orphan, ever ----------------------------------------

# A stand-in worker: what `python -m pipeline train` does with signals, without TensorFlow.
WORKER = textwrap.dedent(
    """
    import sys, time
    from pipeline.core import signals
    signals.install(); signals.watch_parent()
    print("ready", flush=True)
    try:
        time.sleep(60)
    except KeyboardInterrupt:
        sys.exit(3)
    """
)
LAUNCHER = textwrap.dedent(
    """
    import sys
    from pipeline.core import signals
    from pipeline.distribute import launch
    signals.install()
    sys.exit(launch.launch(2, [], command=[sys.executable, "-c", sys.argv[1]], stop_grace=3))
    """
)


def _workers_of(launcher: subprocess.Popen, lines: list) -> list[int]:
    for line in launcher.stdout:  # "[worker i] ready" twice, then the pids from /proc
        lines.append(line)
        if sum("ready" in seen for seen in lines) == 2:
            break
    children = Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text().split()
    return [int(pid) for pid in children]


def _gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
            status = Path(f"/proc/{pid}/stat").read_text().split()[2]
            if status == "Z":  # a zombie has exited; only its parent's wait is missing
                return True
        except (ProcessLookupError, FileNotFoundError):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("sent, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_launch_stops_its_workers_on_sigterm_as_on_ctrl_c(sent, status):
    # SIGINT as a terminal delivers it: a test run started in the background (`make test &`) hands its
    # children SIGINT ignored, and Python then installs no KeyboardInterrupt handler
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, WORKER], cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, env=dict(os.environ, PYTHONPATH=str(PROJECT)),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    lines = []
    workers = _workers_of(launcher, lines)
    assert len(workers) == 2
    launcher.send_signal(sent)  # to launch only, as `kill PID` does
    output = launcher.communicate(timeout=30)[0]
    assert launcher.returncode == status
    assert all(_gone(pid, within=1) for pid in workers), "a worker outlived launch"
    assert "stopped all workers; run the same command again to resume" in output


def test_workers_stop_when_launch_is_killed_outright():
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, WORKER], cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, env=dict(os.environ, PYTHONPATH=str(PROJECT)),
    )  # fmt: skip
    workers = _workers_of(launcher, [])
    launcher.kill()  # SIGKILL: launch cannot react; its workers notice their parent is gone
    launcher.wait()
    assert all(_gone(pid, within=signals.PARENT_POLL_SECONDS + 5) for pid in workers), "orphaned workers"


@pytest.mark.parametrize("command", ["train", "evaluate", "data"])
def test_every_command_answers_sigterm_with_143_and_one_line(monkeypatch, capsys, command):
    def killed(args):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this ends
        raise AssertionError("SIGTERM was not handled")

    monkeypatch.setattr(cli, "run_command", killed)
    monkeypatch.setattr(cli, "quiet_tensorflow", lambda: None)
    argv = {"train": ["train", "tiny"], "evaluate": ["evaluate", "RUN"], "data": ["data", "check", "ROOT"]}[command]
    before = signal.getsignal(signal.SIGTERM)
    assert cli.main(argv) == 143
    error = capsys.readouterr().err.strip()
    assert error == f"terminated (SIGTERM); {cli.INTERRUPTED_STATE[command]}"
    assert signal.getsignal(signal.SIGTERM) == before  # restored for the caller


# -- 31: what a run recorded is the truth for later commands ------------------------------------------


def test_evaluate_refuses_a_renamed_class_folder(run_copy, capsys):
    run_dir, data = run_copy
    metrics = json.loads((run_dir / "metrics.json").read_text())
    (data / "cats").rename(data / "tabby_cats")
    assert cli.main(["evaluate", str(run_dir)]) == 2
    error = capsys.readouterr().err
    assert "the data's classes differ from the run's" in error
    assert "missing from the data: cats" in error and "never saw: tabby_cats" in error
    assert json.loads((run_dir / "metrics.json").read_text()) == metrics  # nothing overwritten


def test_evaluate_refuses_data_with_images_added(run_copy, capsys):
    run_dir, data = run_copy
    metrics = json.loads((run_dir / "metrics.json").read_text())
    recorded = json.loads((run_dir / "data.json").read_text())["images"]
    assert recorded == {split: metrics[f"{split}_images"] for split in ("train", "validation", "test")}
    for number in range(3):
        shutil.copy(data / "cats" / "img000.png", data / "cats" / f"new{number}.png")
    assert cli.main(["evaluate", str(run_dir)]) == 2
    error = capsys.readouterr().err
    assert f"the data differs from what the run recorded in {run_dir / 'data.json'}" in error
    assert "images when trained" in error and "the test split could hold images the model trained on" in error


def test_reordered_classes_and_changed_split_sizes_are_refused(tmp_path):
    (tmp_path / "classes.txt").write_text("cats\ndogs\n")
    (tmp_path / "metrics.json").write_text(json.dumps({"train_images": 12, "validation_images": 4, "test_images": 4}))
    with pytest.raises(rundir.DataChangedError, match="another label order: dogs, cats"):
        rundir.check_same_data(tmp_path, class_names=["dogs", "cats"])
    with pytest.raises(rundir.DataChangedError, match="test: 4 images when trained, 5 now"):
        rundir.check_same_data(tmp_path, class_names=["cats", "dogs"], split_sizes={"train": 12, "test": 5})
    rundir.check_same_data(tmp_path, class_names=["cats", "dogs"], split_sizes={"train": 12, "test": 4})
    (tmp_path / "data.json").write_text(json.dumps({"images": {"train": 11, "validation": 4, "test": 4}}))  # wins
    with pytest.raises(rundir.DataChangedError, match="train: 11 images when trained, 12 now"):
        rundir.check_same_data(tmp_path, class_names=["cats", "dogs"], split_sizes={"train": 12, "test": 4})
    (tmp_path / "classes.txt").unlink()  # a worker's scratch copy: nothing recorded, nothing compared
    rundir.check_same_data(tmp_path, class_names=["dogs"], split_sizes={"train": 1})


# -- 32: every file a user points at is used or reported, the same way by every command ---------------


@pytest.fixture
def linked_tree(tmp_path):
    """ROOT/cats (2 images + `more` -> elsewhere/cats with 2 + a loop link), ROOT/dogs -> elsewhere/dogs (a class
    folder that is itself a link), a name with a space and one that is not UTF-8, and a decompression bomb."""
    root, elsewhere = tmp_path / "ds", tmp_path / "elsewhere"
    stripes(root, {"cats": 2}, size=12)
    stripes(elsewhere, {"cats": 2, "dogs": 3}, size=12)
    os.symlink(elsewhere / "cats", root / "cats" / "more")
    os.symlink(root / "cats", root / "cats" / "up")  # a loop
    os.symlink(elsewhere / "dogs", root / "dogs")
    shutil.copy(root / "cats" / "img000.png", root / "cats" / "with space.png")
    shutil.copy(root / "cats" / "img001.png", os.fsdecode(os.fsencode(root / "cats") + b"/caf\xe9.png"))
    (root / "cats" / "bomb.png").write_bytes(bomb_png(20000, 20000))
    return root


def test_one_walk_follows_links_and_reports_loops(linked_tree):
    files = image_files.find_files(linked_tree)
    names = sorted(os.fsencode(p.relative_to(linked_tree)) for p in files)
    assert names == sorted(
        [b"cats/bomb.png", b"cats/caf\xe9.png", b"cats/img000.png", b"cats/img001.png", b"cats/more/img000.png"]
        + [b"cats/more/img001.png", b"cats/up", b"cats/with space.png"]
        + [f"dogs/img00{i}.png".encode() for i in range(3)]
    )
    reasons = {p.name if p.name in ("up", "bomb.png") else p: image_files.check_image(p).reason for p in files}
    assert reasons["up"].startswith("symbolic link loop: links to")
    assert reasons["bomb.png"].startswith("too many pixels: its header promises 20000x20000 = 400.0 megapixels")
    assert sum(reason is None for reason in reasons.values()) == 9


def test_training_data_check_and_predict_see_the_same_files(linked_tree, tmp_path, capsys):
    from pipeline.data.splits import Splits
    from pipeline.serving import predict
    from pipeline.tools import check

    splits = Splits(folder_config(tmp_path, linked_tree, "dataset.validation_split=0.2", "dataset.test_split=0.2"))
    used = [path for part in (splits.train, splits.validation, splits.test) for path in part[0]]
    skipped = {Path(entry["path"]).name: entry["reason"] for entry in splits.skipped}
    assert len(used) == 9 and set(skipped) == {"up", "bomb.png"}
    report = check.check(linked_tree, report=tmp_path / "check.json", cache=False)
    assert (report.files, report.good) == (11, 9)
    assert {bad["path"]: bad["reason"] for bad in report.bad} == {
        "cats/up": skipped["up"],
        "cats/bomb.png": skipped["bomb.png"],
    }
    from pipeline.tools import label

    out, _, count = label.label(linked_tree, tmp_path / "lists" / "labels.txt")
    assert count == 10 and "skipped cats/up: symbolic link loop" in capsys.readouterr().err
    listed = out.read_bytes().decode("utf-8", "surrogateescape").splitlines()[1:]
    assert all((linked_tree / line.rsplit(" ", 1)[0]).is_file() for line in listed)  # the odd names included
    entries, _ = predict.collect_files([linked_tree])
    failures = {Path(e.path).name: e.reason for e in entries if isinstance(e, predict.Failure)}
    assert failures == {"up": skipped["up"]}  # the bomb is refused when read: see the bomb test below
    assert len(entries) == 11  # the 9 images, the bomb (refused when read) and the loop


# -- hostile input is bounded ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "fmt, options", [("JPEG", {}), ("PNG", {}), ("GIF", {}), ("BMP", {}), ("WEBP", {"lossless": True}), ("WEBP", {})]
)
def test_header_sizes_are_read_as_decoders_read_them(fmt, options):
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((37, 53, 3), np.uint8)).save(buffer, format=fmt, **options)
    assert image_header.dimensions(buffer.getvalue()) == (53, 37)


def test_a_decompression_bomb_is_refused_undecoded_by_every_path(tmp_path, monkeypatch):
    import keras
    import tensorflow as tf

    from pipeline.data.transform import EvalTransform
    from pipeline.serving import export, predict

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(bomb_png(30000, 30000))  # 2.7 GB once decoded
    assert image_files.check_image(bomb).reason.startswith("too many pixels: its header promises 30000x30000")
    assert "raise dataset.max_image_pixels" in image_files.check_image(bomb).reason
    assert image_files.check_image(bomb, max_pixels=0).reason.startswith("truncated or corrupt PNG")  # decoded
    failure = predict.read_bytes(bomb)
    assert isinstance(failure, predict.Failure) and "--max-pixels" in failure.reason
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(2)])
    serve_bytes, _ = export.serving_functions(
        model, class_names=["a", "b"], transform=EvalTransform().sized(image_size=(8, 8), channels=3), top_k=1
    )
    good = io.BytesIO()
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(good, format="PNG")
    assert serve_bytes(tf.constant([good.getvalue()]))["probabilities"].shape == (1, 2)
    with pytest.raises(tf.errors.InvalidArgumentError, match="header promises more than 89478485 pixels"):
        serve_bytes(tf.constant([bomb.read_bytes()]))


def test_an_archive_that_expands_past_the_limit_is_refused_before_extraction(tmp_path, monkeypatch):
    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as handle:
        handle.writestr("cats/a.png", b"\0" * (4 << 20))  # 4 MiB of zeros in ~4 KB
    monkeypatch.setattr(folders, "MIN_BOMB_BYTES", 1 << 20)
    with pytest.raises(folders.DatasetError, match=r"photos.zip: refused: .* expand to 4,194,304 bytes"):
        folders.extract_archive(archive, str(tmp_path / "data"))
    assert list((tmp_path / "data").iterdir()) == []  # nothing extracted
