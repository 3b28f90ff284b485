"""`data shard` (tfrecord_writer.py) and tfrecords.py: round trip, --max-side, shards, atomicity, readers.

Synthetic folders written to tmp_path; every image is small except the few that --max-side must shrink.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from pipeline.cli import main
from pipeline.data import folders
from pipeline.data import record_writer as tfrecord_writer
from pipeline.data import records as tfrecords


def encode(array, format, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=format, **options)
    return buffer.getvalue()


def noise(height, width, channels=3, seed=0) -> np.ndarray:
    shape = (height, width, channels) if channels > 1 else (height, width)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def smooth(height, width) -> np.ndarray:
    """A gradient: survives shrinking and JPEG nearly unchanged, so resized pixels can be compared."""
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    return np.stack(np.broadcast_arrays(x, y, np.full_like(x * y, 128)), axis=-1).astype(np.uint8)


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


BAD = {
    "train/cat/empty.jpg": b"",
    "train/dog/text.jpg": b"not a picture\n",
    "val/dog/truncated.jpg": encode(noise(40, 40, seed=99), "JPEG")[:300],
}


def make_tree(root: Path) -> Path:
    """train/ and val/ class folders, JPEG and PNG (grey too), with the BAD files among them."""
    for index in range(7):
        write(root / f"train/cat/c{index}.png", encode(noise(20 + index, 24, seed=index), "PNG"))
        write(root / f"train/dog/d{index}.jpg", encode(noise(24, 20 + index, seed=10 + index), "JPEG", quality=90))
    write(root / "train/dog/grey.png", encode(noise(16, 18, 1, seed=30), "PNG"))
    write(root / "val/cat/v0.png", encode(noise(22, 22, seed=40), "PNG"))
    write(root / "val/dog/v1.jpg", encode(noise(22, 26, seed=41), "JPEG"))
    for relative, data in BAD.items():
        write(root / relative, data)
    return root


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """(source root, shard directory, stdout of the command) for a 3-shard write of make_tree."""
    base = tmp_path_factory.mktemp("sharded")
    root = make_tree(base / "photos")
    out = base / "shards"
    capture = io.StringIO()
    import contextlib

    with contextlib.redirect_stdout(capture):
        assert main(["data", "shard", str(root), "--out", str(out), "--shards", "3", "--workers", "2"]) == 0
    return root, out, capture.getvalue()


def good_files(root: Path) -> dict:
    """{split: (relative paths, labels)} as the folder source lists them, bad files dropped."""
    tree = folders.read_folder_tree(root)
    result = {}
    for split, (paths, labels) in tree.splits.items():
        kept = [
            (Path(p).relative_to(root).as_posix(), int(label))
            for p, label in zip(paths, labels)
            if Path(p).relative_to(root).as_posix() not in BAD
        ]
        result[split] = ([p for p, _ in kept], [label for _, label in kept])
    return result


def read_all(files) -> list[dict]:
    records = tf.data.TFRecordDataset([str(f) for f in files]).map(tfrecords.parse_example)
    return [{key: value.numpy() for key, value in record.items()} for record in records]


def test_round_trip_bytes_pixels_labels_and_bad_files(sharded):
    root, out, printed = sharded
    for relative in BAD:  # reported as `data check` reports them: `path: reason`
        assert f"{relative}: " in printed
    manifest = tfrecords.read_manifest(out, verify=True)
    assert manifest["classes"] == ["cat", "dog"]
    assert {entry["path"] for entry in manifest["skipped"]} == set(BAD)
    expected = good_files(root)
    for split, (names, labels) in expected.items():
        entry = manifest["splits"][split]
        assert entry["count"] == len(names)
        assert entry["per_class"] == {"cat": labels.count(0), "dog": labels.count(1)}
        assert sum(shard["records"] for shard in entry["shards"]) == len(names)
        for shard in entry["shards"]:
            data = (out / shard["file"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == shard["sha256"] and len(data) == shard["bytes"]
        records = read_all(tfrecords.shard_files(out, split))
        assert sorted(r["image/filename"].decode() for r in records) == sorted(names)
        for record in records:
            name = record["image/filename"].decode()
            original = (root / name).read_bytes()
            assert record["image/encoded"] == original  # no --max-side: the file's own bytes
            assert record["image/class/label"] == labels[names.index(name)]
            assert record["image/class/text"].decode() == manifest["classes"][record["image/class/label"]]
            assert record["image/format"].decode() == ("png" if name.endswith(".png") else "jpeg")
            pixels = tf.io.decode_image(record["image/encoded"], expand_animations=False).numpy()
            assert (record["image/height"], record["image/width"]) == pixels.shape[:2]
            if name.endswith(".png"):
                assert np.array_equal(pixels.squeeze(), np.asarray(Image.open(root / name)))


def test_index_ids_follow_the_folder_order_and_read_by_key(sharded):
    root, out, _ = sharded
    index = tfrecords.load_tfrecord_split_index(out)
    expected = good_files(root)
    assert set(index.splits) == set(expected) and index.class_names == ["cat", "dog"]
    for split, (ids, labels) in index.splits.items():
        assert index.filenames(ids) == expected[split][0]  # same order as the folder source
        assert labels.tolist() == expected[split][1]
    every = np.concatenate([ids for ids, _ in index.splits.values()])
    assert every.tolist() == list(range(len(every)))  # unique across splits
    read = tfrecords.record_reader(out, index=index)
    got = list(tf.data.Dataset.from_tensor_slices(every).map(read, num_parallel_calls=4).as_numpy_iterator())
    assert got == [(root / name).read_bytes() for name in index.filenames(every)]


def test_shard_count_is_honoured_and_capped_by_images(sharded):
    _, out, _ = sharded
    manifest = tfrecords.read_manifest(out)
    train = [shard["file"] for shard in manifest["splits"]["train"]["shards"]]
    assert train == [f"train-{i:05d}-of-00003.tfrecord" for i in range(3)]
    assert [s["file"] for s in manifest["splits"]["validation"]["shards"]] == [
        "validation-00000-of-00002.tfrecord",
        "validation-00001-of-00002.tfrecord",
    ]  # 2 good images
    sizes = [shard["records"] for shard in manifest["splits"]["train"]["shards"]]
    assert max(sizes) - min(sizes) <= 1
    labels_per_shard = [{r["image/class/label"] for r in read_all([out / name])} for name in train]
    assert all(labels == {0, 1} for labels in labels_per_shard)  # spread in a seeded order, not by class


def test_parallel_reads_keep_a_deterministic_order(sharded):
    _, out, _ = sharded
    files = tfrecords.shard_files(out, "train")
    per_file = [[int(r["image/id"]) for r in read_all([f])] for f in files]
    round_robin = [ids[i] for i in range(max(map(len, per_file))) for ids in per_file if i < len(ids)]

    def keys(**options):
        dataset = tfrecords.tfrecord_dataset(files, with_keys=True, **options)
        return [int(key) for key, _, _ in dataset.as_numpy_iterator()]

    assert keys(num_parallel_reads=None) == round_robin  # one record from each shard in turn
    assert keys(num_parallel_reads=3, deterministic=True) == round_robin
    assert keys() == round_robin
    encoded, label = next(iter(tfrecords.tfrecord_dataset(files)))
    assert encoded.dtype == tf.string and label.dtype == tf.int64


def exif_rotated(array: np.ndarray, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(array, "JPEG", quality=95, exif=exif.tobytes())


def test_max_side_shrinks_large_images_only(tmp_path):
    root = tmp_path / "photos"
    big = smooth(300, 200)
    write(root / "a/big.jpg", encode(big, "JPEG", quality=95))
    write(root / "a/wide.png", encode(smooth(50, 400), "PNG"))
    write(root / "b/small.png", encode(noise(30, 40, seed=1), "PNG"))
    write(root / "b/rotated.jpg", exif_rotated(smooth(100, 160), 6))  # displayed 160 high, 100 wide
    write(root / "b/rotated_small.jpg", exif_rotated(smooth(20, 30), 6))  # kept: 30 high as displayed
    out = tmp_path / "shards"
    result = tfrecord_writer.write_shards(
        folders.read_folder_tree(root).splits, ["a", "b"], out_dir=out, source_root=root, max_side=64, progress=False
    )
    assert result.manifest["max_side"] == 64
    records = {r["image/filename"].decode(): r for r in read_all(tfrecords.shard_files(out, "train"))}
    small = records.pop("b/rotated_small.jpg")
    assert small["image/encoded"] == (root / "b/rotated_small.jpg").read_bytes()  # EXIF kept with the bytes
    assert (small["image/height"], small["image/width"]) == (30, 20)  # the size as training decodes it
    shapes = {}
    for name, record in records.items():
        pixels = tf.io.decode_image(record["image/encoded"], expand_animations=False).numpy()
        assert (record["image/height"], record["image/width"]) == pixels.shape[:2]
        shapes[name] = pixels.shape[:2]
    assert shapes == {
        "a/big.jpg": (64, 43),
        "a/wide.png": (8, 64),
        "b/small.png": (30, 40),
        "b/rotated.jpg": (64, 40),
    }  # the rotated photo is stored upright
    assert records["a/wide.png"]["image/format"] == b"jpeg"  # re-encoded: JPEG quality 95
    assert records["b/small.png"]["image/encoded"] == (root / "b/small.png").read_bytes()  # PNG kept as is
    shrunk = tf.io.decode_jpeg(records["a/big.jpg"]["image/encoded"]).numpy().astype(np.float32)
    reference = tf.image.resize(big, (64, 43), method="area").numpy()
    assert np.abs(shrunk - reference).mean() < 3.0  # same picture, within JPEG error


def test_interrupted_write_leaves_nothing_and_keeps_the_old_shards(tmp_path, monkeypatch):
    root = make_tree(tmp_path / "photos")
    out = tmp_path / "shards"
    splits = folders.read_folder_tree(root).splits
    real, calls = tfrecord_writer._encode_record, []

    def failing(item, **options):
        calls.append(item)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(item, **options)

    monkeypatch.setattr(tfrecord_writer, "_encode_record", failing)
    with pytest.raises(KeyboardInterrupt):
        tfrecord_writer.write_shards(
            splits, ["cat", "dog"], out_dir=out, source_root=root, num_shards=2, workers=1, progress=False
        )
    assert not out.exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith((".tmp-", ".old-"))]

    monkeypatch.setattr(tfrecord_writer, "_encode_record", real)
    tfrecord_writer.write_shards(splits, ["cat", "dog"], out_dir=out, source_root=root, num_shards=2, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    calls.clear()
    monkeypatch.setattr(tfrecord_writer, "_encode_record", failing)
    with pytest.raises(KeyboardInterrupt):
        tfrecord_writer.write_shards(
            splits, ["cat", "dog"], out_dir=out, source_root=root, num_shards=3, overwrite=True, progress=False
        )
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith((".tmp-", ".old-"))]


def test_manifest_errors_name_the_file(sharded, tmp_path):
    _, out, _ = sharded
    with pytest.raises(tfrecords.TFRecordError, match=r"manifest\.json: not found"):
        tfrecords.read_manifest(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{not json")
    with pytest.raises(tfrecords.TFRecordError, match=r"broken/manifest\.json: not valid JSON"):
        tfrecords.load_tfrecord_split_index(broken)
    (broken / "manifest.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(tfrecords.TFRecordError, match="format must be"):
        tfrecords.read_manifest(broken)
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in out.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    shard = copy / "train-00001-of-00003.tfrecord"
    data = bytearray(shard.read_bytes())
    data[40] ^= 0xFF
    shard.write_bytes(bytes(data))
    tfrecords.read_manifest(copy)  # form only: fine
    with pytest.raises(tfrecords.TFRecordError, match=r"train-00001-of-00003\.tfrecord: sha256 differs"):
        tfrecords.read_manifest(copy, verify=True)
    shard.unlink()
    with pytest.raises(tfrecords.TFRecordError, match=r"train-00001-of-00003\.tfrecord: listed in .* but missing"):
        tfrecords.read_manifest(copy)


def test_command_refuses_unsafe_outputs(sharded, tmp_path, capsys):
    root, out, _ = sharded
    assert main(["data", "shard", str(root), "--out", str(root / "shards")]) == 2
    assert "must be outside" in capsys.readouterr().err
    assert main(["data", "shard", str(root), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    other = tmp_path / "mine"
    write(other / "notes.txt", b"keep me")
    assert main(["data", "shard", str(root), "--out", str(other), "--overwrite"]) == 2
    assert "not a shard directory" in capsys.readouterr().err and (other / "notes.txt").exists()
    assert main(["data", "shard", str(root), "--out", str(tmp_path / "x"), "--shards", "0"]) == 2
    assert "--shards must be >= 1; received 0" in capsys.readouterr().err


def test_file_lists_are_sharded_with_their_splits(tmp_path, capsys):
    root = tmp_path / "photos"
    for index in range(3):
        write(root / f"img/{index}.png", encode(noise(20, 20, seed=index), "PNG"))
    write(tmp_path / "train.txt", b"img/0.png cat\nimg/1.png dog\n")
    write(tmp_path / "val.txt", b"img/2.png 1\n")
    write(tmp_path / "classes.txt", b"cat\ndog\n")
    out = tmp_path / "shards"
    assert (
        main(
            [
                "data",
                "shard",
                str(root),
                "--out",
                str(out),
                "--list",
                f"train={tmp_path / 'train.txt'}",
                "--list",
                f"val={tmp_path / 'val.txt'}",
                "--classes",
                str(tmp_path / "classes.txt"),
            ]
        )
        == 0
    )
    index = tfrecords.load_tfrecord_split_index(out)
    assert {split: labels.tolist() for split, (_, labels) in index.splits.items()} == {
        "train": [0, 1],
        "validation": [1],
    }
    assert index.filenames(index.splits["validation"][0]) == ["img/2.png"]
    assert "wrote 3 records" in capsys.readouterr().out


def test_a_file_changed_after_its_check_stops_the_write_naming_it(tmp_path):
    from pipeline.data import image_files

    path = write(tmp_path / "a.png", encode(noise(20, 20), "PNG"))
    check = image_files.check_image(path)
    path.write_bytes(b"now broken")
    item = (0, str(path), check, 0, "a", "a.png")
    with pytest.raises(tfrecords.TFRecordError, match=r"a\.png: .*changed since it was checked"):
        tfrecord_writer._encode_record(item, max_side=8, quality=95)
    path.unlink()
    with pytest.raises(tfrecords.TFRecordError, match=r"a\.png: .*changed since it was checked"):
        tfrecord_writer._encode_record(item, max_side=None, quality=95)
