"""Image files of any size: crop geometry, the folder and file_list datasets (archives, Food-101 layout),
split carving, broken files (skip, strict, placeholders, scan cache), the file input pipeline, serving
parity of a folder run, and the real hymenoptera mirror. Small synthetic images and the `tiny` model."""

from __future__ import annotations

import contextlib
import io
import json
import os
import tarfile
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from pipeline import cli
from pipeline import config as config_lib
from pipeline import experiment as experiment_lib
from pipeline.data import datasets, decode, folders, image_files, input_pipeline, readers
from pipeline.data import image_ops as preprocessing
from pipeline.data import splits as splits_lib
from pipeline.data.transform import EvalTransform

IMAGE_SIZE = (16, 16)

# Image-file pipelines drop undecodable files, so Keras learns the epoch length at the end of epoch 1.
pytestmark = pytest.mark.filterwarnings("ignore:Your input ran out of data")


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def coordinate_image(height: int, width: int) -> np.ndarray:
    """uint8 [H, W, 3] whose pixel (r, c) is (r, c, 7): every pixel names its own position."""
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    return np.stack([rows, cols, np.full_like(rows, 7)], axis=-1).astype(np.uint8)


def photo_like(height: int, width: int, seed: int, *, tint=(0, 0, 0), channels: int = 3) -> np.ndarray:
    """A smooth gradient plus noise: hundreds of colours, like a photo."""
    rng = np.random.default_rng(seed)
    rows, cols = np.meshgrid(np.linspace(0, 120, height), np.linspace(0, 120, width), indexing="ij")
    base = (rows + cols)[..., None] + np.asarray(tint[:channels], float)
    noisy = base + rng.normal(0, 25, (height, width, channels))
    return np.clip(noisy, 0, 255).astype(np.uint8)


def save_image(path: Path, array: np.ndarray, fmt: str | None = None, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array[..., 0] if array.ndim == 3 and array.shape[-1] == 1 else array).save(
        path, format=fmt, **options
    )
    return path


def class_tree(root: Path, classes, per_class: int, *, seed: int = 0, sizes=((20, 28), (28, 20), (24, 24))):
    """root/<class>/img_NN.png, photo-like images of a few sizes; returns {class: [paths]}."""
    tree = {}
    for index, name in enumerate(classes):
        tree[name] = []
        for number in range(per_class):
            height, width = sizes[number % len(sizes)]
            tint = (40 * index, 0, 80 - 30 * index)
            image = photo_like(height, width, seed + 1000 * index + number, tint=tint)
            tree[name].append(save_image(root / name / f"img_{number:02d}.png", image))
    return tree


def make_config(tmp_path: Path, dataset: dict | None = None, *, seed: int = 7, input_options=None) -> config_lib.Config:
    data = {
        "name": "folder_test",
        "seed": seed,
        "dataset": {"name": "folder", "data_dir": str(tmp_path / "data"), **(dataset or {})},
        "input": {"image_size": list(IMAGE_SIZE), "channels": 3, **(input_options or {})},
        "model": {"name": "tiny"},
        "train": {"epochs": 1, "batch_size": 8, "verbose": 0},
    }
    return config_lib.from_dict(data)


def collect(dataset) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for x, y in dataset:
        images.append(x.numpy())
        labels.append(y.numpy())
    return np.concatenate(images), np.concatenate(labels)


# --------------------------------------------------------------------------------------------------
# Crop geometry
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "height, width, margin, top_left, bottom_right",
    [
        (40, 24, 2, (10, 2), (29, 21)),  # portrait: side 20; rows from the height, columns from the width
        (24, 40, 2, (2, 10), (21, 29)),  # landscape: side 20
        (31, 20, 0, (5, 0), (24, 19)),  # odd difference: floor of the half
        (20, 33, 3, (3, 9), (16, 22)),
    ],
)
def test_center_square_crop_is_the_centred_square(height, width, margin, top_left, bottom_right):
    image = coordinate_image(height, width)
    side = min(height, width) - 2 * margin
    crop = preprocessing.center_square_crop(tf.constant(image), margin).numpy()
    assert crop.shape == (side, side, 3)
    assert tuple(crop[0, 0, :2]) == top_left
    assert tuple(crop[-1, -1, :2]) == bottom_right
    assert tuple(crop[0, -1, :2]) == (top_left[0], bottom_right[1])
    assert tuple(crop[-1, 0, :2]) == (bottom_right[0], top_left[1])
    top, left = (height - side) // 2, (width - side) // 2
    np.testing.assert_array_equal(crop, image[top : top + side, left : left + side])
    # The same on a batch.
    batch = preprocessing.center_square_crop(tf.constant(np.stack([image, image])), margin).numpy()
    np.testing.assert_array_equal(batch, np.stack([crop, crop]))


@pytest.mark.parametrize("height, width", [(40, 24), (24, 40)])
def test_random_square_crop_geometry_and_seeding(height, width):
    margin = 3
    side = min(height, width) - 2 * margin
    image = coordinate_image(height, width)
    tensor = tf.constant(image)
    crop_fn = tf.function(lambda s: preprocessing.random_square_crop(tensor, margin, s))
    tops, lefts, crops = set(), set(), {}
    for seed in range(300):
        crop = crop_fn(tf.constant([seed, 11], tf.int64)).numpy()
        assert crop.shape == (side, side, 3)
        top, left = int(crop[0, 0, 0]), int(crop[0, 0, 1])
        assert 0 <= top <= height - side and 0 <= left <= width - side
        # a contiguous window of the image, fully inside it
        np.testing.assert_array_equal(crop, image[top : top + side, left : left + side])
        tops.add(top)
        lefts.add(left)
        crops[seed] = crop
    # every position on both axes is reached over many seeds
    assert tops == set(range(height - side + 1))
    assert lefts == set(range(width - side + 1))
    # same seed, same crop (also eagerly); different seeds differ
    np.testing.assert_array_equal(
        preprocessing.random_square_crop(tensor, margin, tf.constant([5, 11], tf.int64)).numpy(), crops[5]
    )
    assert len({(int(c[0, 0, 0]), int(c[0, 0, 1])) for c in crops.values()}) > 10


def test_resize_shorter_side_keeps_the_aspect_ratio():
    for (height, width), size, expected in (
        ((30, 60), 15, (15, 30)),
        ((60, 30), 15, (30, 15)),
        ((33, 50), 16, (16, 25)),
        ((16, 16), 16, (16, 16)),
        ((10, 40), 20, (20, 80)),
    ):
        image = tf.zeros((height, width, 3), tf.uint8)
        assert tuple(preprocessing.resize_shorter_side(image, size).shape[:2]) == expected


def test_shorter_side_crop_keeps_the_middle_of_a_landscape_image():
    image = coordinate_image(30, 60)
    out = preprocessing.prepare_images(
        tf.constant(image), image_size=(15, 15), crop="shorter_side", resize_method="nearest"
    ).numpy()
    assert out.shape == (15, 15, 3) and out.dtype == np.float32
    rows, cols = out[..., 0], out[..., 1]
    # The whole height survives, the left and right quarters are cut away.
    assert rows.min() <= 1 and rows.max() >= 28
    assert cols.min() >= 14 and cols.max() <= 45
    assert abs((cols.min() + cols.max()) / 2 - 29.5) <= 1.5  # centred
    # Aspect ratio kept: one output pixel steps the same distance (2 source pixels) on both axes.
    np.testing.assert_array_equal(np.diff(rows[:, 0]), 2)
    np.testing.assert_array_equal(np.diff(cols[0, :]), 2)
    # Portrait: the middle rows survive, every column.
    portrait = preprocessing.prepare_images(
        tf.constant(coordinate_image(60, 30)), image_size=(15, 15), crop="shorter_side", resize_method="nearest"
    ).numpy()
    assert portrait[..., 1].min() <= 1 and portrait[..., 1].max() >= 28
    assert portrait[..., 0].min() >= 14 and portrait[..., 0].max() <= 45


@pytest.mark.parametrize("crop", ["none", "square", "shorter_side"])
def test_prepare_images_batches_equal_single_images(crop):
    rng = np.random.default_rng(3)
    batch = rng.integers(0, 256, (3, 30, 50, 3), dtype=np.uint8)
    out = preprocessing.prepare_images(
        tf.constant(batch), image_size=IMAGE_SIZE, channels=3, crop=crop, margin=2
    ).numpy()
    assert out.shape == (3, *IMAGE_SIZE, 3) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 255.0
    for index in range(3):
        single = preprocessing.prepare_images(
            tf.constant(batch[index]), image_size=IMAGE_SIZE, channels=3, crop=crop, margin=2
        ).numpy()
        assert single.shape == (*IMAGE_SIZE, 3)
        np.testing.assert_allclose(single, out[index], atol=1e-4)
    if crop == "square":
        expected = tf.image.resize(tf.cast(batch[:, 2:28, 12:38], tf.float32), IMAGE_SIZE).numpy()
        np.testing.assert_allclose(out, np.clip(expected, 0, 255), atol=1e-4)
    # grey in, three channels out
    grey = preprocessing.prepare_images(
        tf.constant(batch[..., :1]), image_size=IMAGE_SIZE, channels=3, crop=crop, margin=2
    ).numpy()
    assert grey.shape == (3, *IMAGE_SIZE, 3)
    np.testing.assert_array_equal(grey[..., 0], grey[..., 2])


def test_prepare_images_rejects_an_unknown_crop_and_shorter_side_without_size():
    with pytest.raises(ValueError, match="crop must be"):
        preprocessing.prepare_images(tf.zeros((8, 8, 3)), image_size=IMAGE_SIZE, crop="circle")
    with pytest.raises(ValueError, match="needs image_size"):
        preprocessing.prepare_images(tf.zeros((8, 8, 3)), crop="shorter_side")


# --------------------------------------------------------------------------------------------------
# The folder dataset
# --------------------------------------------------------------------------------------------------


def test_folder_class_layout_is_recursive_and_sorted(tmp_path):
    root = tmp_path / "images"
    files = {
        "gamma": [root / "gamma" / "g.png"],
        "alpha": [
            root / "alpha" / "a.png",
            root / "alpha" / "sub" / "deeper" / "b.jpg",
            root / "alpha" / "sub" / "c.png",
        ],
        "beta": [root / "beta" / "x.png"],
    }
    for index, paths in enumerate(files.values()):
        for number, path in enumerate(paths):
            save_image(path, photo_like(12, 12, index * 10 + number))
    (root / "alpha" / ".DS_Store").write_bytes(b"junk")  # hidden: not an image of the class
    (root / "alpha" / ".cache").mkdir()
    save_image(root / "alpha" / ".cache" / "hidden.png", photo_like(12, 12, 99))
    save_image(root / "stray.png", photo_like(12, 12, 98))  # directly in root: no class
    data = datasets.load_dataset("folder", data_dir=str(tmp_path / "data"), root=str(root))
    assert isinstance(data, datasets.FileDataset)
    assert data.class_names == ["alpha", "beta", "gamma"]
    assert set(data.splits) == {"train"}
    paths, labels = data.splits["train"]
    got = {path: int(label) for path, label in zip(paths, labels)}
    expected = {str(p): ["alpha", "beta", "gamma"].index(name) for name, ps in files.items() for p in ps}
    assert got == expected
    assert not (tmp_path / "data").exists()  # a plain folder is read in place


def test_folder_split_layout_with_a_missing_class_in_val(tmp_path):
    root = tmp_path / "tree"
    class_tree(root / "train", ["a", "b", "c"], 2)
    class_tree(root / "val", ["a", "c"], 2, seed=50)
    class_tree(root / "test", ["a", "b", "c"], 1, seed=90)
    data = datasets.load_dataset("folder", data_dir=str(tmp_path / "data"), root=str(root))
    assert data.class_names == ["a", "b", "c"]
    assert set(data.splits) == {"train", "validation", "test"}
    for split, (paths, labels) in data.splits.items():
        assert len(paths) == len(labels) > 0
        for path, label in zip(paths, labels):
            assert Path(path).parent.name == data.class_names[label], (split, path)
            assert Path(path).parent.parent.name == {"train": "train", "validation": "val", "test": "test"}[split]
    # val has no b: c keeps index 2
    assert sorted(set(data.splits["validation"][1].tolist())) == [0, 2]


def test_unknown_class_folder_in_val_is_named(tmp_path):
    root = tmp_path / "tree"
    class_tree(root / "train", ["ants", "bees"], 1)
    class_tree(root / "val", ["ants", "wasps"], 1)
    with pytest.raises(datasets.DatasetError, match="wasps") as error:
        datasets.load_dataset("folder", data_dir=str(tmp_path / "data"), root=str(root))
    assert "val" in str(error.value)


def test_missing_root_is_named(tmp_path):
    missing = tmp_path / "no" / "such" / "folder"
    with pytest.raises(datasets.DatasetError, match="does not exist") as error:
        datasets.load_dataset("folder", data_dir=str(tmp_path / "data"), root=str(missing))
    assert str(missing) in str(error.value)
    with pytest.raises(datasets.DatasetError, match="dataset.root"):
        datasets.load_dataset("folder", data_dir=str(tmp_path / "data"), root=None)


def test_folder_without_class_folders(tmp_path):
    (tmp_path / "flat").mkdir()
    save_image(tmp_path / "flat" / "a.png", photo_like(12, 12, 0))
    with pytest.raises(datasets.DatasetError, match="no class folders"):
        datasets.load_dataset("folder", data_dir=str(tmp_path / "data"), root=str(tmp_path / "flat"))


def _archive(tmp_path: Path, kind: str) -> tuple[Path, dict]:
    source = tmp_path / "source"
    tree = class_tree(source / "shapes", ["circle", "square"], 3)
    if kind == "zip":
        archive = tmp_path / "shapes.zip"
        with zipfile.ZipFile(archive, "w") as handle:
            for path in sorted((source / "shapes").rglob("*")):
                handle.write(path, path.relative_to(source).as_posix())
    else:
        archive = tmp_path / "shapes.tar.gz"
        with tarfile.open(archive, "w:gz") as handle:
            handle.add(source / "shapes", arcname="shapes")
    return archive, tree


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_archive_root_is_extracted_once(tmp_path, kind, monkeypatch):
    archive, tree = _archive(tmp_path, kind)
    data_dir = tmp_path / "data"
    first = datasets.load_dataset("folder", data_dir=str(data_dir), root=str(archive))
    assert first.class_names == ["circle", "square"]
    paths, labels = first.splits["train"]
    assert len(paths) == 6 and sorted(labels.tolist()) == [0, 0, 0, 1, 1, 1]
    assert all(Path(p).is_relative_to(data_dir / "shapes") for p in paths)
    for path, label in zip(paths, labels):
        assert Path(path).parent.name == first.class_names[label]
        assert (
            Path(path).read_bytes()
            == (tmp_path / "source" / "shapes" / Path(path).parent.name / Path(path).name).read_bytes()
        )
    stamps = {p: p.stat().st_mtime_ns for p in (data_dir / "shapes").rglob("*")}
    dir_stamp = (data_dir / "shapes").stat().st_mtime_ns

    def no_extraction(*args, **kwargs):
        raise AssertionError("the archive was opened again")

    monkeypatch.setattr(folders.tarfile, "open", no_extraction)
    monkeypatch.setattr(folders.zipfile, "ZipFile", no_extraction)
    second = datasets.load_dataset("folder", data_dir=str(data_dir), root=str(archive))
    assert list(second.splits["train"][0]) == list(paths)
    assert {p: p.stat().st_mtime_ns for p in (data_dir / "shapes").rglob("*")} == stamps
    assert (data_dir / "shapes").stat().st_mtime_ns == dir_stamp
    assert [p.name for p in data_dir.iterdir()] == ["shapes"]  # no temporary folder left


def test_interrupted_extraction_does_not_count(tmp_path, monkeypatch):
    archive, _ = _archive(tmp_path, "tar.gz")
    data_dir = tmp_path / "data"
    # A crashed earlier extraction left its temporary folder with part of the tree.
    partial = data_dir / ".tmp-shapes-x1y2z3"
    save_image(partial / "shapes" / "circle" / "img_00.png", photo_like(12, 12, 0))
    data = datasets.load_dataset("folder", data_dir=str(data_dir), root=str(archive))
    assert len(data.splits["train"][0]) == 6 and data.class_names == ["circle", "square"]
    assert all(".tmp-" not in p for p in data.splits["train"][0])

    # An extraction interrupted now (Ctrl-C in the middle) leaves nothing that looks extracted.
    other = tmp_path / "other_data"
    real_extractall = tarfile.TarFile.extractall

    def interrupted(self, path, *args, **kwargs):
        Path(path, "shapes", "circle").mkdir(parents=True)
        Path(path, "shapes", "circle", "half.png").write_bytes(b"\x89PNG")
        raise KeyboardInterrupt

    monkeypatch.setattr(tarfile.TarFile, "extractall", interrupted)
    with pytest.raises(KeyboardInterrupt):
        datasets.load_dataset("folder", data_dir=str(other), root=str(archive))
    assert list(other.iterdir()) == []
    monkeypatch.setattr(tarfile.TarFile, "extractall", real_extractall)
    data = datasets.load_dataset("folder", data_dir=str(other), root=str(archive))
    assert len(data.splits["train"][0]) == 6


def test_another_archive_with_the_same_name_is_not_mistaken_for_the_first(tmp_path):
    data_dir = tmp_path / "data"
    roots = {}
    for project, classes in (("one", ["circle", "square"]), ("two", ["apple", "pear", "plum"])):
        class_tree(tmp_path / project / "src" / "images", classes, 2)
        roots[project] = tmp_path / project / "images.tar.gz"
        with tarfile.open(roots[project], "w:gz") as handle:
            handle.add(tmp_path / project / "src" / "images", arcname="images")
    first = datasets.load_dataset("folder", data_dir=str(data_dir), root=str(roots["one"]))
    assert first.class_names == ["circle", "square"]
    second = datasets.load_dataset("folder", data_dir=str(data_dir), root=str(roots["two"]))
    assert second.class_names == ["apple", "pear", "plum"]


def test_val_and_validation_folders_together_drop_nothing_silently(tmp_path):
    root = tmp_path / "tree"
    class_tree(root / "train", ["a", "b"], 2)
    val = class_tree(root / "val", ["a", "b"], 1, seed=10)
    validation = class_tree(root / "validation", ["a", "b"], 1, seed=20)
    try:
        data = datasets.load_dataset("folder", data_dir=str(tmp_path / "data"), root=str(root))
    except datasets.DatasetError as error:  # refusing the ambiguity is a fix too
        assert "val" in str(error) and "validation" in str(error)
        return
    listed = {p for paths, _ in data.splits.values() for p in paths}
    assert {str(p) for tree in (val, validation) for ps in tree.values() for p in ps} <= listed


# --------------------------------------------------------------------------------------------------
# The file_list dataset
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def list_root(tmp_path):
    root = tmp_path / "listed"
    for number in range(6):
        save_image(root / "imgs" / f"p{number}.png", photo_like(12, 12, number))
    save_image(root / "imgs" / "with space.png", photo_like(12, 12, 9))
    (tmp_path / "classes.txt").write_text("cat\ndog\n#hash\n")
    return root


def test_file_list_with_index_and_name_labels(tmp_path, list_root):
    (tmp_path / "train.txt").write_text(
        "imgs/p0.png 0\nimgs/p1.png dog\n# a comment\n\nimgs/with space.png 2\nimgs/p2.png #hash\n"
    )
    (tmp_path / "val.txt").write_text("imgs/p3.png cat\n")
    (tmp_path / "test.txt").write_text("imgs/p4.png 1\nimgs/p5.png   cat  \n")
    data = datasets.load_dataset(
        "file_list",
        data_dir=str(tmp_path / "data"),
        root=str(list_root),
        lists={
            "train": str(tmp_path / "train.txt"),
            "validation": str(tmp_path / "val.txt"),
            "test": str(tmp_path / "test.txt"),
        },
        classes=str(tmp_path / "classes.txt"),
    )
    assert data.class_names == ["cat", "dog", "#hash"]
    train_paths, train_labels = data.splits["train"]
    assert train_paths == [str(list_root / "imgs" / n) for n in ("p0.png", "p1.png", "with space.png", "p2.png")]
    assert train_labels.tolist() == [0, 1, 2, 2]
    assert data.splits["validation"][1].tolist() == [0]
    assert data.splits["test"][0] == [str(list_root / "imgs" / "p4.png"), str(list_root / "imgs" / "p5.png")]
    assert data.splits["test"][1].tolist() == [1, 0]
    assert all(Path(p).is_file() for paths, _ in data.splits.values() for p in paths)


@pytest.mark.parametrize(
    "lines, line_number, fragment",
    [
        ("imgs/p0.png 0\nimgs/p1.png\n", 2, "expected `relative/path label`"),
        ("imgs/p0.png 0\nimgs/p1.png 1\nimgs/p2.png horse\n", 3, "'horse'"),
        ("imgs/p0.png 7\n", 1, "'7'"),
        ("imgs/p0.png -1\n", 1, "'-1'"),
    ],
    ids=["no-label", "unknown-name", "index-too-big", "negative-index"],
)
def test_file_list_bad_line_names_file_and_line(tmp_path, list_root, lines, line_number, fragment):
    (tmp_path / "train.txt").write_text(lines)
    with pytest.raises(datasets.DatasetError) as error:
        datasets.load_dataset(
            "file_list",
            data_dir=str(tmp_path / "data"),
            root=str(list_root),
            lists={"train": str(tmp_path / "train.txt")},
            classes=str(tmp_path / "classes.txt"),
        )
    assert f"{tmp_path / 'train.txt'}:{line_number}:" in str(error.value)
    assert fragment in str(error.value)


def test_file_list_line_number_counts_comments_and_blank_lines(tmp_path, list_root):
    (tmp_path / "train.txt").write_text("# header\n\nimgs/p0.png 0\nimgs/p1.png horse\n")
    with pytest.raises(datasets.DatasetError) as error:
        datasets.load_dataset(
            "file_list",
            data_dir=str(tmp_path / "data"),
            root=str(list_root),
            lists={"train": str(tmp_path / "train.txt")},
            classes=str(tmp_path / "classes.txt"),
        )
    assert f"{tmp_path / 'train.txt'}:4:" in str(error.value)


def test_file_list_needs_train_and_classes(tmp_path, list_root):
    (tmp_path / "t.txt").write_text("imgs/p0.png 0\n")
    with pytest.raises(datasets.DatasetError, match="train list is required"):
        datasets.load_dataset(
            "file_list",
            data_dir=str(tmp_path / "data"),
            root=str(list_root),
            lists={"test": str(tmp_path / "t.txt")},
            classes=str(tmp_path / "classes.txt"),
        )
    with pytest.raises(datasets.DatasetError, match="dataset.classes"):
        datasets.load_dataset(
            "file_list", data_dir=str(tmp_path / "data"), root=str(list_root), lists={"train": str(tmp_path / "t.txt")}
        )
    with pytest.raises(datasets.DatasetError, match="meta/classes.txt"):
        datasets.load_dataset("file_list", data_dir=str(tmp_path / "data"), root=str(list_root))


def _food101(parent: Path) -> Path:
    root = parent / "food-101"
    classes = ["apple_pie", "baby_back_ribs", "sushi"]
    (root / "meta").mkdir(parents=True)
    (root / "meta" / "classes.txt").write_text("\n".join(classes) + "\n")
    train_lines, test_lines = [], []
    for index, name in enumerate(classes):
        for number in range(4):
            image_id = f"{index}{number:03d}"
            save_image(root / "images" / name / f"{image_id}.jpg", photo_like(20, 20, index * 10 + number), "JPEG")
            (train_lines if number < 3 else test_lines).append(f"{name}/{image_id}")
    (root / "meta" / "train.txt").write_text("\n".join(train_lines[::-1]) + "\n")
    (root / "meta" / "test.txt").write_text("\n".join(test_lines) + "\n")
    return root


def test_food101_layout(tmp_path):
    root = _food101(tmp_path / "download")  # a single top folder, as in food-101.tar.gz: stepped into
    data = datasets.load_dataset("file_list", data_dir=str(tmp_path / "data"), root=str(tmp_path / "download"))
    assert data.class_names == ["apple_pie", "baby_back_ribs", "sushi"]
    assert set(data.splits) == {"train", "test"}
    assert len(data.splits["train"][0]) == 9 and len(data.splits["test"][0]) == 3
    for paths, labels in data.splits.values():
        for path, label in zip(paths, labels):
            assert Path(path).is_file()
            assert Path(path).is_relative_to(root / "images")
            assert Path(path).parent.name == data.class_names[label]
    assert data.splits["test"][1].tolist() == [0, 1, 2]
    assert data.splits["train"][0][0] == str(root / "images" / "sushi" / "2002.jpg")


def test_food101_unknown_class_names_the_file(tmp_path):
    root = _food101(tmp_path)
    (root / "meta" / "test.txt").write_text("sushi/2003\npizza/9999\n")
    with pytest.raises(datasets.DatasetError, match="'pizza'") as error:
        datasets.load_dataset("file_list", data_dir=str(tmp_path / "data"), root=str(root))
    assert str(root / "meta" / "test.txt") in str(error.value)


def test_food101_through_splits_carves_validation_from_train(tmp_path):
    root = _food101(tmp_path)
    config = make_config(tmp_path, {"name": "file_list", "root": str(root), "validation_split": 0.34})
    splits = splits_lib.Splits.from_config(config, log=lambda message: None)
    assert len(splits.test[0]) == 3  # meta/test.txt as is
    assert len(splits.validation[0]) == 3 and len(splits.train[0]) == 6  # one of three per class
    assert sorted(splits.validation[1].tolist()) == [0, 1, 2]
    assert not set(splits.validation[0]) & set(splits.train[0])


# --------------------------------------------------------------------------------------------------
# Splits: carving missing splits
# --------------------------------------------------------------------------------------------------


def _split_sets(splits) -> dict[str, list[str]]:
    return {name: list(getattr(splits, name)[0]) for name in ("train", "validation", "test")}


def _check_labels_match_folders(splits):
    for name in ("train", "validation", "test"):
        paths, labels = getattr(splits, name)
        assert len(paths) == len(labels)
        for path, label in zip(paths, labels):
            assert Path(path).parent.name == splits.class_names[label]


def test_splits_carve_test_and_validation_from_a_single_folder(tmp_path):
    root = tmp_path / "tree"
    tree = class_tree(root, ["a", "b", "c"], 10)
    every = sorted(str(p) for ps in tree.values() for p in ps)
    config = make_config(tmp_path, {"root": str(root), "test_split": 0.2, "validation_split": 0.25})
    splits = splits_lib.Splits.from_config(config, log=lambda message: None)
    assert isinstance(splits.reader, readers.FileReader) and splits.class_names == ["a", "b", "c"]
    assert splits.input_shape == (16, 16, 3) and splits.skipped == []
    parts = _split_sets(splits)
    # 2 of 10 per class for test, then 2 of the remaining 8 for validation
    assert [len(parts[name]) for name in ("train", "validation", "test")] == [18, 6, 6]
    for name in ("train", "validation", "test"):
        assert (
            np.bincount(getattr(splits, name)[1], minlength=3).tolist()
            == {"train": [6] * 3, "validation": [2] * 3, "test": [2] * 3}[name]
        )
    assert not set(parts["train"]) & set(parts["validation"])
    assert not set(parts["train"]) & set(parts["test"])
    assert not set(parts["validation"]) & set(parts["test"])
    assert sorted(parts["train"] + parts["validation"] + parts["test"]) == every
    _check_labels_match_folders(splits)
    # Seeded: the same seed gives the same splits in the same order; another seed other ones.
    again = splits_lib.Splits.from_config(config, log=lambda message: None)
    assert _split_sets(again) == parts
    other = splits_lib.Splits.from_config(
        make_config(tmp_path, {"root": str(root), "test_split": 0.2, "validation_split": 0.25}, seed=8),
        log=lambda message: None,
    )
    assert set(_split_sets(other)["test"]) != set(parts["test"])
    assert set(_split_sets(other)["validation"]) != set(parts["validation"])


def test_splits_train_and_val_folders_val_becomes_test(tmp_path):
    root = tmp_path / "tree"
    train_tree = class_tree(root / "train", ["ants", "bees"], 10)
    val_tree = class_tree(root / "val", ["ants", "bees"], 3, seed=500)
    config = make_config(tmp_path, {"root": str(root), "validation_split": 0.2, "test_split": 0.5})
    splits = splits_lib.Splits.from_config(config, log=lambda message: None)
    parts = _split_sets(splits)
    assert sorted(parts["test"]) == sorted(str(p) for ps in val_tree.values() for p in ps)
    train_files = sorted(str(p) for ps in train_tree.values() for p in ps)
    assert sorted(parts["train"] + parts["validation"]) == train_files
    assert len(parts["validation"]) == 4 and np.bincount(splits.validation[1]).tolist() == [2, 2]
    assert not set(parts["train"]) & set(parts["validation"])
    _check_labels_match_folders(splits)


def test_splits_full_source_is_used_as_is(tmp_path):
    root = tmp_path / "tree"
    trees = {
        split: class_tree(root / split, ["x", "y"], count, seed=seed)
        for split, count, seed in (("train", 5, 0), ("validation", 2, 100), ("test", 3, 200))
    }
    config = make_config(tmp_path, {"root": str(root), "validation_split": 0.5, "test_split": 0.5})
    splits = splits_lib.Splits.from_config(config, log=lambda message: None)
    parts = _split_sets(splits)
    for split, tree in trees.items():
        assert parts[split] == [str(p) for ps in tree.values() for p in ps], split
    _check_labels_match_folders(splits)


# --------------------------------------------------------------------------------------------------
# A broken folder: skip and report, strict, placeholders, scan cache
# --------------------------------------------------------------------------------------------------


def write_broken_folder(root: Path) -> tuple[list[Path], dict[str, str]]:
    """3 classes of good PNG/JPEG photos of several shapes, plus one file of every kind of breakage.
    Returns (good files, {bad path: expected reason fragment})."""
    good = []
    shapes = [(20, 28), (28, 20), (24, 24), (32, 22), (22, 36), (26, 26), (40, 24), (24, 40)]
    for index, name in enumerate(["cats", "dogs", "foxes"]):
        for number, (height, width) in enumerate(shapes):
            image = photo_like(height, width, 100 * index + number, tint=(60 * index, 30, 120 - 60 * index))
            folder = root / name / ("nested" if number == 3 else "")
            if number % 2:
                good.append(save_image(folder / f"photo_{number}.jpg", image, "JPEG", quality=92))
            else:
                good.append(save_image(folder / f"photo_{number}.png", image))
    noise = photo_like(32, 32, 999)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="JPEG", quality=90)
    bad = {}
    (root / "cats" / "empty.jpg").write_bytes(b"")
    bad[str(root / "cats" / "empty.jpg")] = "empty file (0 bytes)"
    (root / "dogs" / "truncated.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    bad[str(root / "dogs" / "truncated.jpg")] = "truncated or corrupt JPEG"
    (root / "foxes" / "notes.jpg").write_text("this is a text file, not a photo\n")
    bad[str(root / "foxes" / "notes.jpg")] = "not an image (text)"
    save_image(root / "cats" / "nested" / "dot.png", noise[:1, :1])
    bad[str(root / "cats" / "nested" / "dot.png")] = "too small (1x1 pixels"
    Image.fromarray(noise).convert("P", palette=Image.ADAPTIVE, colors=16).save(root / "dogs" / "palette.bmp")
    bad[str(root / "dogs" / "palette.bmp")] = "palette BMP"
    os.symlink("loop.jpg", root / "foxes" / "loop.jpg")
    bad[str(root / "foxes" / "loop.jpg")] = "symbolic link loop"
    return good, bad


def write_experiment(path: Path, root: Path) -> Path:
    path.write_text(
        "dataset:\n"
        "  name: folder\n"
        f"  root: {json.dumps(str(root))}\n"
        "input:\n"
        "  image_size: [16, 16]\n"
        "  channels: 3\n"
        "  crop: {mode: square, margin: 1}\n"
        "model:\n"
        "  name: tiny\n"
        "train:\n"
        "  epochs: 1\n"
        "  batch_size: 8\n"
        "  callbacks: {tensorboard: {enabled: false}}\n"
        "evaluation: {report: false}\n"
    )
    return path


@pytest.fixture(scope="module")
def broken_run(tmp_path_factory):
    """One finished `tiny` run (with export) on a folder holding good and broken files."""
    base = tmp_path_factory.mktemp("broken")
    root = base / "photos"
    good, bad = write_broken_folder(root)
    experiment = write_experiment(base / "broken_folder.yaml", root)
    data_dir = base / "data"
    run_dir = base / "run"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["train", str(experiment), "--run-dir", str(run_dir), "--set", f"dataset.data_dir={data_dir}"])
    return {
        "code": code,
        "root": root,
        "good": good,
        "bad": bad,
        "experiment": experiment,
        "data_dir": data_dir,
        "run_dir": run_dir,
        "out": out.getvalue(),
        "err": err.getvalue(),
    }


def test_broken_folder_trains_and_reports_exactly_the_bad_files(broken_run):
    assert broken_run["code"] == 0, broken_run["err"][-3000:]
    metrics = json.loads((broken_run["run_dir"] / "metrics.json").read_text())
    skipped = {entry["path"]: entry["reason"] for entry in metrics["skipped_files"]}
    assert set(skipped) == set(broken_run["bad"])
    for path, fragment in broken_run["bad"].items():
        assert fragment in skipped[path], (path, skipped[path])
    assert metrics["train_images"] + metrics["validation_images"] + metrics["test_images"] == len(broken_run["good"])
    assert metrics["test_images"] == 3 and metrics["validation_images"] == 3  # 10% of 8 per class, rounded
    assert metrics["epochs_completed"] == 1
    assert (broken_run["run_dir"] / "classes.txt").read_text().split() == ["cats", "dogs", "foxes"]
    for path, reason in skipped.items():
        assert f"skipping {path}: {reason}" in broken_run["out"]


def test_broken_folder_strict_stops_before_writing_anything(broken_run, tmp_path, capsys):
    run_dir = tmp_path / "strict_run"
    code = cli.main(
        [
            "train",
            str(broken_run["experiment"]),
            "--run-dir",
            str(run_dir),
            "--set",
            f"dataset.data_dir={broken_run['data_dir']}",
            "--set",
            "dataset.strict=true",
        ]
    )
    assert code == 2
    assert not run_dir.exists()
    error = capsys.readouterr().err
    assert f"{len(broken_run['bad'])} unreadable image(s)" in error and "dataset.strict" in error
    for path, fragment in broken_run["bad"].items():
        assert path in error and fragment in error
    for path in broken_run["good"]:
        assert str(path) not in error


def test_skip_placeholders_skips_a_flat_image_and_keeps_photos(tmp_path):
    root = tmp_path / "tree"
    tree = class_tree(root, ["a", "b"], 4)
    flat = np.zeros((30, 30, 3), np.uint8)
    flat[:10], flat[10:20], flat[20:] = (255, 255, 255), (200, 30, 30), (90, 90, 90)
    placeholder = save_image(root / "a" / "imageNotFound.png", flat)
    kept = save_image(root / "b" / "photo.jpg", photo_like(30, 40, 77), "JPEG")
    relaxed = splits_lib.Splits.from_config(
        make_config(tmp_path, {"root": str(root), "test_split": 0.25}), log=lambda m: None
    )
    assert relaxed.skipped == []
    messages = []
    strict = splits_lib.Splits.from_config(
        make_config(tmp_path, {"root": str(root), "test_split": 0.25, "skip_placeholders": True}), log=messages.append
    )
    assert [entry["path"] for entry in strict.skipped] == [str(placeholder)]
    assert "placeholder" in strict.skipped[0]["reason"] and "3 colours" in strict.skipped[0]["reason"]
    every = {p for name in ("train", "validation", "test") for p in getattr(strict, name)[0]}
    assert str(kept) in every and str(placeholder) not in every
    assert every == {str(p) for ps in tree.values() for p in ps} | {str(kept)}
    assert any(str(placeholder) in message for message in messages)


def test_second_scan_reuses_the_cache(tmp_path, monkeypatch):
    root = tmp_path / "tree"
    tree = class_tree(root, ["a", "b"], 3)
    (root / "a" / "broken.jpg").write_text("not an image")
    every = sorted(str(p) for ps in tree.values() for p in ps) + [str(root / "a" / "broken.jpg")]
    decoded = []
    real_check = image_files.check_image

    def spy(path, **kwargs):
        decoded.append(str(path))
        return real_check(path, **kwargs)

    monkeypatch.setattr(image_files, "check_image", spy)
    config = make_config(tmp_path, {"root": str(root), "test_split": 0.3})
    first = splits_lib.Splits.from_config(config, log=lambda m: None)
    assert sorted(decoded) == sorted(every)
    assert list((tmp_path / "data" / ".scan-cache").glob("scan-*.json"))
    decoded.clear()
    second = splits_lib.Splits.from_config(config, log=lambda m: None)
    assert decoded == []  # nothing unchanged is decoded again, bad files included
    assert second.skipped == first.skipped and len(second.skipped) == 1
    assert _split_sets(second) == _split_sets(first)
    # A changed file is checked again; the others still come from the cache.
    touched = tree["b"][1]
    stamp = touched.stat().st_mtime_ns + 5_000_000_000
    os.utime(touched, ns=(stamp, stamp))
    splits_lib.Splits.from_config(config, log=lambda m: None)
    assert decoded == [str(touched)]


# --------------------------------------------------------------------------------------------------
# make_file_dataset
# --------------------------------------------------------------------------------------------------

LEVELS = (30, 130, 230)  # the mean brightness of each class's images: identifies the label of a pixel


def labelled_files(folder: Path, count: int = 9, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """Images of many sizes, aspect ratios and layouts; image i has label i % 3 and brightness LEVELS[label]."""
    rng = np.random.default_rng(seed)
    layouts = [
        ((20, 28), "RGB", "png"),
        ((48, 18), "L", "png"),
        ((18, 50), "RGBA", "png"),
        ((33, 33), "RGB", "jpg"),
        ((60, 24), "RGB", "jpg"),
        ((12, 64), "L", "jpg"),
    ]
    paths, labels = [], []
    for index in range(count):
        (height, width), mode, ext = layouts[index % len(layouts)]
        label = index % 3
        channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
        pixels = np.clip(rng.normal(LEVELS[label], 8, (height, width, channels)), 0, 255).astype(np.uint8)
        if mode == "RGBA":
            pixels[..., 3] = rng.integers(0, 256, (height, width))  # alpha must not leak into the colours
        path = save_image(folder / f"f{index:02d}.{ext}", pixels, "JPEG" if ext == "jpg" else "PNG")
        paths.append(str(path))
        labels.append(label)
    return paths, np.asarray(labels)


def file_dataset(paths, labels, *, crop="square", margin=1, **options):
    settings = dict(batch_size=4, num_classes=3, seed=5)
    settings.update(options)
    transform = EvalTransform(image_size=IMAGE_SIZE, channels=3, crop=crop, margin=margin)
    return input_pipeline.make_file_dataset(paths, labels, transform=transform, **settings)


def check_pairing(images: np.ndarray, one_hot: np.ndarray):
    for image, target in zip(images, one_hot):
        assert abs(image.mean() - LEVELS[int(np.argmax(target))]) < 25


@pytest.mark.parametrize("crop", ["none", "square", "shorter_side"])
def test_file_dataset_training_shapes_and_labels(tmp_path, crop):
    paths, labels = labelled_files(tmp_path)
    batches = [(x.numpy(), y.numpy()) for x, y in file_dataset(paths, labels, training=True, crop=crop)]
    assert [len(x) for x, _ in batches] == [4, 4, 1]
    for images, one_hot in batches:
        assert images.shape[1:] == (*IMAGE_SIZE, 3) and images.dtype == np.float32
        assert images.min() >= 0.0 and images.max() <= 255.0
        assert one_hot.shape[1:] == (3,) and one_hot.dtype == np.float32
        np.testing.assert_array_equal(one_hot.sum(axis=1), 1.0)
        assert set(np.unique(one_hot)) <= {0.0, 1.0}
        check_pairing(images, one_hot)
    all_labels = np.concatenate([np.argmax(y, 1) for _, y in batches])
    assert sorted(all_labels.tolist()) == sorted(labels.tolist())


@pytest.mark.parametrize("crop", ["square", pytest.param("none", marks=pytest.mark.slow), "shorter_side"])
def test_file_dataset_eval_path_is_deterministic_and_matches_prepare_images(tmp_path, crop):
    paths, labels = labelled_files(tmp_path)
    dataset = file_dataset(paths, labels, training=False, crop=crop, margin=2)
    first, second = collect(dataset), collect(dataset)
    again = collect(file_dataset(paths, labels, training=False, crop=crop, margin=2))
    for other in (second, again):
        np.testing.assert_array_equal(first[0], other[0])
        np.testing.assert_array_equal(first[1], other[1])
    np.testing.assert_array_equal(np.argmax(first[1], 1), labels)  # in input order
    assert first[0].shape == (len(paths), *IMAGE_SIZE, 3)
    for image, path in zip(first[0], paths):
        decoded = decode.decode_image(tf.io.read_file(path), channels=3)
        expected = preprocessing.prepare_images(
            decoded[None], image_size=IMAGE_SIZE, channels=3, crop=crop, margin=2
        ).numpy()[0]
        np.testing.assert_allclose(image, expected, atol=1e-4)


@pytest.mark.slow  # 7-30 s on a 2-core AVX2 VM: make test must stay under 4 min there
def test_file_dataset_seeded_training_is_repeatable(tmp_path):
    paths, labels = labelled_files(tmp_path, count=12)
    first = collect(file_dataset(paths, labels, training=True, seed=3))
    same = collect(file_dataset(paths, labels, training=True, seed=3))
    other = collect(file_dataset(paths, labels, training=True, seed=4))
    np.testing.assert_array_equal(first[0], same[0])
    np.testing.assert_array_equal(first[1], same[1])
    assert not np.array_equal(first[0], other[0])
    assert sorted(np.argmax(first[1], 1).tolist()) == sorted(labels.tolist())  # every file, once
    # A second epoch of the same dataset is reshuffled and re-cropped.
    dataset = file_dataset(paths, labels, training=True, seed=3)
    epoch_one, epoch_two = collect(dataset), collect(dataset)
    np.testing.assert_array_equal(epoch_one[0], first[0])
    assert not np.array_equal(epoch_one[0], epoch_two[0])


@pytest.mark.slow  # 7-30 s on a 2-core AVX2 VM: make test must stay under 4 min there
def test_file_dataset_mixed_sizes_and_channel_layouts(tmp_path):
    paths, labels = labelled_files(tmp_path, count=6)  # RGB PNG, grey PNG, RGBA PNG, RGB JPEG, grey JPEG
    for training in (True, False):
        for crop in ("none", "square", "shorter_side"):
            images, one_hot = collect(file_dataset(paths, labels, training=training, crop=crop))
            assert images.shape == (6, *IMAGE_SIZE, 3), (training, crop)
            check_pairing(images, one_hot)
    images, _ = collect(file_dataset(paths, labels, training=False, crop="none"))
    np.testing.assert_array_equal(images[1][..., 0], images[1][..., 2])  # grey PNG -> R = G = B
    rgba = np.asarray(Image.open(paths[2]))
    expected = preprocessing.prepare_images(rgba[None, ..., :3], image_size=IMAGE_SIZE).numpy()[0]
    np.testing.assert_allclose(images[2], expected, atol=1e-4)  # alpha dropped, colours kept


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("damage", ["garbage", "deleted"])
def test_file_that_breaks_after_the_scan_is_dropped(tmp_path, training, damage):
    paths, labels = labelled_files(tmp_path, count=6)
    dataset = file_dataset(paths, labels, training=training)
    if damage == "garbage":
        Path(paths[2]).write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    else:
        Path(paths[2]).unlink()
    images, one_hot = collect(dataset)
    assert len(images) == 5
    expected = np.delete(labels, 2)
    assert sorted(np.argmax(one_hot, 1).tolist()) == sorted(expected.tolist())
    check_pairing(images, one_hot)


# --------------------------------------------------------------------------------------------------
# Serving parity of a folder run with the square crop
# --------------------------------------------------------------------------------------------------


def test_exported_model_serves_like_the_checkpoint_with_the_square_crop(broken_run, tmp_path):
    assert broken_run["code"] == 0, broken_run["err"][-3000:]
    metrics = json.loads((broken_run["run_dir"] / "metrics.json").read_text())
    serve = tf.saved_model.load(metrics["export"]).signatures["serving_default"]
    model = keras.models.load_model(broken_run["run_dir"] / "checkpoints" / "best.keras")
    portrait = save_image(tmp_path / "portrait.png", photo_like(48, 20, 1, tint=(90, 0, 0)))
    landscape = save_image(tmp_path / "landscape.jpg", photo_like(20, 56, 2, tint=(0, 0, 90)), "JPEG")
    for path in (portrait, landscape):
        data = path.read_bytes()
        served = serve(image_bytes=tf.constant([data]))
        decoded = tf.constant(np.asarray(Image.open(path).convert("RGB")))  # the accurate IDCT's pixels
        prepared = preprocessing.prepare_images(
            decoded[None], image_size=IMAGE_SIZE, channels=3, crop="square", margin=1
        )
        expected = model(prepared, training=False).numpy()
        np.testing.assert_allclose(served["probabilities"].numpy(), expected, atol=1e-5)
        # The comparison can tell crops apart: without the square crop the model answers differently.
        uncropped = model(
            preprocessing.prepare_images(decoded[None], image_size=IMAGE_SIZE, channels=3), training=False
        ).numpy()
        assert np.abs(uncropped - expected).max() > 1e-4
        assert served["classes"].numpy()[0, 0].decode() == ["cats", "dogs", "foxes"][int(np.argmax(expected))]
    both = serve(image_bytes=tf.constant([portrait.read_bytes(), landscape.read_bytes()]))["probabilities"]
    assert both.shape == (2, 3)


# --------------------------------------------------------------------------------------------------
# The real mirror: hymenoptera
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hymenoptera_data_dir(tmp_path_factory) -> Path:
    """Shared by the mirror tests of this module, so the archive is extracted once."""
    return tmp_path_factory.mktemp("hymenoptera-data")


@pytest.mark.mirror
def test_real_hymenoptera_loads(mirror_dir, hymenoptera_data_dir):
    data = datasets.hymenoptera(data_dir=str(hymenoptera_data_dir), mirror_dir=str(mirror_dir))
    assert data.class_names == ["ants", "bees"]
    assert set(data.splits) == {"train", "validation"}
    assert len(data.splits["train"][0]) == 245 and len(data.splits["validation"][0]) == 153
    assert np.bincount(data.splits["train"][1]).tolist() == [124, 121]
    assert np.bincount(data.splits["validation"][1]).tolist() == [70, 83]
    for paths, labels in data.splits.values():
        for path, label in zip(paths, labels):
            assert Path(path).parent.name == data.class_names[label]
            assert Path(path).is_relative_to(hymenoptera_data_dir)


@pytest.mark.mirror
def test_real_hymenoptera_prescan_skips_only_the_placeholder(mirror_dir, hymenoptera_data_dir):
    config = experiment_lib.load_experiment(
        "hymenoptera_scratch", [f"dataset.data_dir={hymenoptera_data_dir}", f"dataset.mirror_dir={mirror_dir}"]
    )
    messages = []
    splits = splits_lib.Splits.from_config(config, log=messages.append)
    assert splits.class_names == ["ants", "bees"]
    assert [Path(entry["path"]).relative_to(Path(entry["path"]).parents[2]).as_posix() for entry in splits.skipped] == [
        "train/ants/imageNotFound.gif"
    ]
    assert "placeholder" in splits.skipped[0]["reason"]
    assert [m for m in messages if m.startswith("skipping")] == [
        f"skipping {splits.skipped[0]['path']}: {splits.skipped[0]['reason']}"
    ]
    # val/ is the test split; validation (15% per class) is carved from the 244 remaining train photos.
    assert len(splits.test[0]) == 153
    assert len(splits.train[0]) + len(splits.validation[0]) == 244
    assert np.bincount(splits.validation[1]).tolist() == [18, 18]
    assert not set(splits.train[0]) & set(splits.validation[0])
    assert splits.input_shape == (*config.input.image_size, 3)


def test_files_written_beside_an_extracted_tree_do_not_change_its_classes(tmp_path):
    # `data stats` / `data check` write ROOT-stats/ and ROOT-check.json beside the folder they read; in an
    # extracted archive that is inside the extraction folder. The dataset root must not move because of it.
    archive, _ = _archive(tmp_path, "tar.gz")
    data_dir = tmp_path / "data"
    first = datasets.load_dataset("folder", data_dir=str(data_dir), root=str(archive))
    (data_dir / "shapes" / "shapes-stats").mkdir()
    (data_dir / "shapes" / "shapes-check.json").write_text("{}")
    second = datasets.load_dataset("folder", data_dir=str(data_dir), root=str(archive))
    assert second.class_names == first.class_names == ["circle", "square"]
    assert list(second.splits["train"][0]) == list(first.splits["train"][0])


def test_a_class_folder_without_readable_images_is_an_error(tmp_path):
    root = tmp_path / "photos"
    class_tree(root, ["cats"], 4)
    (root / "reports").mkdir()
    (root / "reports" / "summary.json").write_text("{}")
    config = make_config(tmp_path, {"name": "folder", "root": str(root)})
    with pytest.raises(datasets.DatasetError, match="reports hold no readable training image"):
        splits_lib.Splits.from_config(config, log=lambda *_: None)
