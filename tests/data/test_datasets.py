"""Dataset loading from a mirror, caching, corrupt and missing files, and the stratified split.

Most tests use the synthetic mirror from conftest (`data_env`); the `mirror` ones read the real one.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from helpers import synthetic_images, write_idx

from pipeline.data import cifar_sources, datasets
from pipeline.data import splits as splits_lib
from pipeline.data.datasets import DatasetError

FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def data_dir_of(data_env) -> Path:
    """The data dir that the `data_env` fixture's override points at."""
    key, _, value = data_env[0].partition("=")
    assert key == "dataset.data_dir"
    return Path(value)


# --------------------------------------------------------------------------------------------------
# Loading from the (synthetic) mirror
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, seed, class_names", [("mnist", 1, [str(d) for d in range(10)]), ("fashion_mnist", 2, FASHION_CLASSES)]
)
def test_idx_datasets_from_the_mirror(data_env, name, seed, class_names):
    data_dir = data_dir_of(data_env)
    data = datasets.load_dataset(name, data_dir=str(data_dir))
    assert data.class_names == class_names
    assert data.train_images.shape == (300, 28, 28, 1) and data.test_images.shape == (100, 28, 28, 1)
    assert data.train_images.dtype == np.uint8 and data.test_images.dtype == np.uint8
    assert data.train_labels.shape == (300,) and data.test_labels.shape == (100,)
    assert data.train_labels.dtype == np.int64 and data.test_labels.dtype == np.int64
    assert data.image_shape == (28, 28, 1)
    # IDX is lossless: exactly the arrays conftest wrote, in order ("train" and "t10k" seeds as in make_mirror)
    images, labels = synthetic_images(300, 28, 1, 10, seed + len("train"))
    np.testing.assert_array_equal(data.train_images, images)
    np.testing.assert_array_equal(data.train_labels, labels)
    images, labels = synthetic_images(100, 28, 1, 10, seed + len("t10k"))
    np.testing.assert_array_equal(data.test_images, images)
    np.testing.assert_array_equal(data.test_labels, labels)
    assert not data_dir.exists(), "files found in the mirror are read in place, not copied"


def test_explicit_mirror_dir_wins_over_the_environment(synthetic_mirror, tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_MIRROR", str(tmp_path / "elsewhere"))
    data = datasets.load_dataset("mnist", data_dir=str(tmp_path / "data"), mirror_dir=str(synthetic_mirror))
    assert data.train_images.shape == (300, 28, 28, 1)
    assert datasets.resolve_mirror(str(synthetic_mirror)) == synthetic_mirror
    assert datasets.resolve_mirror(None) == tmp_path / "elsewhere"


def test_idx_dataset_from_the_data_dir(tmp_path, monkeypatch):
    """No file in the mirror: the project's data store is the next place looked at."""
    monkeypatch.setenv("DATA_MIRROR", str(tmp_path / "empty_mirror"))
    monkeypatch.setattr(datasets, "download", _no_download)
    store = tmp_path / "data" / "mnist"
    images, labels = synthetic_images(20, 28, 1, 10, 9)
    for split in ("train", "t10k"):
        write_idx(store / f"{split}-images-idx3-ubyte.gz", images[..., 0])
        write_idx(store / f"{split}-labels-idx1-ubyte.gz", labels)
    data = datasets.load_dataset("mnist", data_dir=str(tmp_path / "data"))
    np.testing.assert_array_equal(data.test_images, images)
    np.testing.assert_array_equal(data.train_labels, labels)


def test_cifar10_from_the_mirror_is_cached_and_the_cache_is_reused(data_env, monkeypatch, tmp_path):
    data_dir = data_dir_of(data_env)
    data = datasets.load_dataset("cifar10", data_dir=str(data_dir))
    assert data.class_names == CIFAR10_CLASSES
    assert data.train_images.shape == (300, 32, 32, 3) and data.test_images.shape == (100, 32, 32, 3)
    assert data.train_images.dtype == np.uint8 and data.train_labels.dtype == np.int64
    assert np.bincount(data.train_labels, minlength=10).tolist() == [30] * 10
    assert np.bincount(data.test_labels, minlength=10).tolist() == [10] * 10
    # labels come from the class folders and match the pictures: each class's bright square is in its cell
    for images, labels in ((data.train_images, data.train_labels), (data.test_images, data.test_labels)):
        for image, label in zip(images, labels):
            row, col = divmod(int(label), 4)
            assert image[row * 8 : (row + 1) * 8, col * 8 : (col + 1) * 8].mean() > 150

    cache = data_dir / "cifar10" / "cifar10.npz"
    assert cache.is_file()
    with np.load(cache) as saved:
        assert sorted(saved.files) == ["cache_version", "test_images", "test_labels", "train_images", "train_labels"]
        assert str(saved["cache_version"]) == datasets.CIFAR10_CACHE_VERSION
        np.testing.assert_array_equal(saved["train_images"], data.train_images)
        np.testing.assert_array_equal(saved["test_labels"], data.test_labels)
    assert not [p for p in data_dir.rglob("*") if p.name.startswith(".tmp")], "no temporary files left behind"

    # second load: no mirror and no network, so only the cache can answer, and identically
    monkeypatch.setenv("DATA_MIRROR", str(tmp_path / "no_mirror_here"))
    monkeypatch.setattr(datasets, "download", _no_download)
    stamp = cache.stat().st_mtime_ns
    again = datasets.load_dataset("cifar10", data_dir=str(data_dir))
    for field in ("train_images", "train_labels", "test_images", "test_labels"):
        np.testing.assert_array_equal(getattr(again, field), getattr(data, field))
    assert again.class_names == CIFAR10_CLASSES
    assert cache.stat().st_mtime_ns == stamp, "the cache is read, not rewritten"
    # while a data dir without the cache, in the same situation, is an error: the cache is what answered
    with pytest.raises(DatasetError):
        datasets.load_dataset("cifar10", data_dir=str(tmp_path / "fresh_data"))


@pytest.mark.slow  # 3-8 s on a 2-core AVX2 VM: make test must stay under 4 min there
def test_cifar10_cache_of_an_older_decoder_is_rebuilt_or_kept(data_env, monkeypatch, tmp_path, capsys):
    """A cache written before JPEGs were decoded with the accurate IDCT (no cache_version) is rebuilt from
    the mirror; with no source left it is used as it is, with a message naming it."""
    data_dir = data_dir_of(data_env)
    fresh = datasets.load_dataset("cifar10", data_dir=str(data_dir))
    cache = data_dir / "cifar10" / "cifar10.npz"
    old = {name: getattr(fresh, name) for name in ("train_images", "train_labels", "test_images", "test_labels")}
    old["train_images"] = old["train_images"] // 2  # stands for other pixels
    np.savez(cache, **old)
    rebuilt = datasets.load_dataset("cifar10", data_dir=str(data_dir))
    np.testing.assert_array_equal(rebuilt.train_images, fresh.train_images)
    with np.load(cache) as saved:
        assert str(saved["cache_version"]) == datasets.CIFAR10_CACHE_VERSION

    np.savez(cache, **old)
    monkeypatch.setenv("DATA_MIRROR", str(tmp_path / "no_mirror_here"))

    def no_network_wait(url, destination, timeout=60.0):
        raise AssertionError("an old cache is used without trying the network")

    monkeypatch.setattr(datasets, "download", no_network_wait)
    kept = datasets.load_dataset("cifar10", data_dir=str(data_dir))
    np.testing.assert_array_equal(kept.train_images, old["train_images"])
    assert str(cache) in capsys.readouterr().err


def test_cifar10_archive_is_read_in_memory_as_the_folder_reader_reads_it_extracted(synthetic_mirror, tmp_path):
    """The mirror's cifar10-jpg.tar.gz is decoded from the archive without extracting it: the same images,
    labels and order as extracting it and reading the class folders; a `./` prefix and hidden files (a
    macOS tar's `._x.jpg`, `__MACOSX/`) change nothing, as the folder walk skips them too."""
    import io
    import tarfile

    archive = synthetic_mirror / "cifar10-jpg.tar.gz"
    in_memory = cifar_sources.from_archive(archive)
    extracted = cifar_sources.from_folders(datasets.read_folder_tree(datasets.root_folder(archive, str(tmp_path))))
    for split in ("train", "test"):
        np.testing.assert_array_equal(in_memory[split][0], extracted[split][0])
        np.testing.assert_array_equal(in_memory[split][1], extracted[split][1])

    # the same files rewritten in reverse order, under ./ and beside hidden junk
    repacked = tmp_path / "repacked.tar"
    with tarfile.open(archive) as source, tarfile.open(repacked, "w") as target:
        members = [m for m in source.getmembers() if m.isfile()]
        for member in reversed(members):
            data = source.extractfile(member).read()
            folder, _, file = member.name.rpartition("/")
            for name in (f"./{member.name}", f"__MACOSX/{member.name}", f"{folder}/._{file}"):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                target.addfile(info, io.BytesIO(data))
    again = cifar_sources.from_archive(repacked)
    for split in ("train", "test"):
        np.testing.assert_array_equal(again[split][0], in_memory[split][0])


def test_cifar10_archive_with_a_broken_member_or_wrong_classes_names_it(tmp_path):
    import io
    import tarfile

    from PIL import Image

    def write(path, names):
        with tarfile.open(path, "w:gz") as archive:
            for name in names:
                buffer = io.BytesIO()
                Image.new("RGB", (32, 32), (200, 10, 10)).save(buffer, format="JPEG")
                data = b"<html>not a picture</html>" if "broken" in name else buffer.getvalue()
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
        return path

    everything = [f"cifar10/{split}/{name}/0.jpg" for split in ("train", "test") for name in CIFAR10_CLASSES]
    broken = write(tmp_path / "broken.tar.gz", [*everything, "cifar10/train/cat/broken.jpg"])
    with pytest.raises(DatasetError) as raised:
        cifar_sources.from_archive(broken)
    assert str(broken) in str(raised.value) and "train/cat/broken.jpg is not a readable image" in str(raised.value)

    wrong = write(tmp_path / "wrong.tar.gz", [n for n in everything if "/truck/" not in n])
    with pytest.raises(DatasetError, match="expected train/ and test/ folders with classes") as raised:
        cifar_sources.from_archive(wrong)
    assert str(wrong) in str(raised.value)
    (tmp_path / "cut.tar.gz").write_bytes(broken.read_bytes()[:200])
    with pytest.raises(DatasetError, match="cannot read"):
        cifar_sources.from_archive(tmp_path / "cut.tar.gz")


def test_corrupt_cifar10_cache_is_a_dataset_error(tmp_path):
    cache = tmp_path / "data" / "cifar10" / "cifar10.npz"
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"not an npz file")
    with pytest.raises(DatasetError, match="corrupt cache") as raised:
        datasets.load_dataset("cifar10", data_dir=str(tmp_path / "data"))
    assert str(cache) in str(raised.value) and "delete it" in str(raised.value)


def test_unknown_dataset_name():
    with pytest.raises(KeyError) as raised:
        datasets.load_dataset("mnsit")
    assert "did you mean 'mnist'" in raised.value.args[0]
    assert {"cifar10", "fashion_mnist", "mnist"} <= set(datasets.DATASETS.names())


# --------------------------------------------------------------------------------------------------
# Corrupt IDX files
# --------------------------------------------------------------------------------------------------


def gz(path: Path, payload: bytes) -> Path:
    with gzip.open(path, "wb") as handle:
        handle.write(payload)
    return path


def test_read_idx_round_trip(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "ok-idx3-ubyte.gz", array)
    np.testing.assert_array_equal(datasets.read_idx(tmp_path / "ok-idx3-ubyte.gz"), array)
    (tmp_path / "plain-idx3-ubyte").write_bytes(gzip.decompress((tmp_path / "ok-idx3-ubyte.gz").read_bytes()))
    np.testing.assert_array_equal(datasets.read_idx(tmp_path / "plain-idx3-ubyte"), array)


def test_read_idx_truncated_data(tmp_path):
    path = gz(tmp_path / "short-idx1-ubyte.gz", b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + b"\x01\x02")
    with pytest.raises(DatasetError) as raised:
        datasets.read_idx(path)
    assert str(path) in str(raised.value)
    assert "truncated IDX file: 2 bytes of data for shape (5,)" in str(raised.value)


def test_read_idx_truncated_gzip_stream(tmp_path):
    write_idx(tmp_path / "whole.gz", np.zeros((50, 28, 28), np.uint8))
    blob = (tmp_path / "whole.gz").read_bytes()
    path = tmp_path / "cut-idx3-ubyte.gz"
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DatasetError) as raised:
        datasets.read_idx(path)
    assert str(path) in str(raised.value)
    assert "cannot read IDX file" in str(raised.value) and "delete it" in str(raised.value)


def test_read_idx_not_gzip(tmp_path):
    path = tmp_path / "html-idx3-ubyte.gz"
    path.write_bytes(b"<html>rate limited</html>")
    with pytest.raises(DatasetError, match="cannot read IDX file") as raised:
        datasets.read_idx(path)
    assert str(path) in str(raised.value)


@pytest.mark.parametrize(
    "payload",
    [
        b"\x00\x00\x09\x01\x00\x00\x00\x01\x05",  # int8 type code, not uint8
        b"\x1f\x8b\x08\x01\x00\x00\x00\x01\x05",  # doubly gzipped-looking
        b"\x00\x01\x08\x01\x00\x00\x00\x01\x05",
        b"\x00\x00",
    ],
)
def test_read_idx_bad_magic(tmp_path, payload):
    path = gz(tmp_path / "bad-idx1-ubyte.gz", payload)
    with pytest.raises(DatasetError) as raised:
        datasets.read_idx(path)
    assert str(path) in str(raised.value)
    assert "bad magic number" in str(raised.value)


def test_read_idx_truncated_header(tmp_path):
    path = gz(tmp_path / "header-idx3-ubyte.gz", b"\x00\x00\x08\x03\x00\x00\x00\x02")  # 3 dims, 1 given
    with pytest.raises(DatasetError) as raised:
        datasets.read_idx(path)
    assert str(path) in str(raised.value)


def test_images_and_labels_of_different_length(tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_MIRROR", str(tmp_path / "mirror"))
    images, labels = synthetic_images(10, 28, 1, 10, 0)
    for split in ("train", "t10k"):
        write_idx(tmp_path / "mirror" / "mnist" / f"{split}-images-idx3-ubyte.gz", images[..., 0])
        write_idx(
            tmp_path / "mirror" / "mnist" / f"{split}-labels-idx1-ubyte.gz", labels[: 9 if split == "train" else 10]
        )
    with pytest.raises(DatasetError, match=r"train images and labels differ in count \(10 vs 9\)"):
        datasets.load_dataset("mnist", data_dir=str(tmp_path / "data"))


# --------------------------------------------------------------------------------------------------
# Missing datasets
# --------------------------------------------------------------------------------------------------


def _no_download(url, destination, timeout=60.0):
    raise OSError("network is unreachable")


@pytest.fixture
def nowhere(tmp_path, monkeypatch):
    """An empty mirror, an empty data dir and no network."""
    mirror = tmp_path / "empty_mirror"
    mirror.mkdir()
    monkeypatch.setenv("DATA_MIRROR", str(mirror))
    monkeypatch.setattr(datasets, "download", _no_download)
    return mirror, tmp_path / "data"


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_missing_idx_dataset_says_where_it_looked_and_what_to_do(nowhere, name):
    mirror, data_dir = nowhere
    with pytest.raises(DatasetError) as raised:
        datasets.load_dataset(name, data_dir=str(data_dir))
    message = str(raised.value)
    filename = "train-images-idx3-ubyte.gz"
    assert f"dataset {name!r}: {filename} not found" in message
    assert str(mirror / name / filename) in message  # looked in the mirror
    assert str(data_dir / name / filename) in message  # and in the data dir
    assert "download failed" in message and "network is unreachable" in message
    assert f"Place the file in {data_dir / name}/" in message  # how to provide it
    assert "DATA_MIRROR" in message and "dataset.mirror_dir" in message
    assert not any(data_dir.rglob("*.gz")), "nothing half-written"


def test_missing_cifar10_says_where_it_looked_and_what_to_do(nowhere):
    mirror, data_dir = nowhere
    with pytest.raises(DatasetError) as raised:
        datasets.load_dataset("cifar10", data_dir=str(data_dir))
    message = str(raised.value)
    assert "dataset 'cifar10' not found" in message
    assert str(mirror / "cifar10-jpg.tar.gz") in message
    assert str(data_dir / "cifar10" / "cifar-10-batches-py") in message
    assert "cifar-10-python.tar.gz" in message and "network is unreachable" in message
    assert f"in {data_dir / 'cifar10'}/ by hand" in message and "DATA_MIRROR" in message
    assert not (data_dir / "cifar10" / "cifar10.npz").exists()


def test_missing_dataset_through_the_cli_is_exit_2(nowhere, capsys, tmp_path):
    from pipeline import cli

    run_dir = tmp_path / "run"
    mirror, data_dir = nowhere
    code = cli.main(
        [
            "train",
            "mnist_lenet",
            "--set",
            f"dataset.data_dir={data_dir}",
            "--set",
            "train.epochs=1",
            "--set",
            f"dataset.mirror_dir={mirror}",
            "--run-dir",
            str(run_dir),
        ]
    )
    out, err = capsys.readouterr()
    assert code == 2, err
    assert err.startswith("error: dataset 'mnist'")
    assert "Traceback" not in err
    assert "Looked in:" in err and "DATA_MIRROR" in err


# --------------------------------------------------------------------------------------------------
# Stratified split
# --------------------------------------------------------------------------------------------------

SIZES = [100, 50, 20, 40, 10]


def grouped_labels(seed=0):
    labels = np.repeat(np.arange(len(SIZES)), SIZES)
    np.random.default_rng(seed).shuffle(labels)
    return labels


def test_stratified_split_proportions_disjoint_and_complete():
    labels = grouped_labels()
    kept, held_out = splits_lib.stratified_split(labels, 0.2, seed=3)
    assert len(np.intersect1d(kept, held_out)) == 0
    assert sorted(np.concatenate([kept, held_out])) == list(range(len(labels)))
    assert len(np.unique(kept)) == len(kept) and len(np.unique(held_out)) == len(held_out)
    assert np.bincount(labels[held_out]).tolist() == [20, 10, 4, 8, 2]  # every class in proportion
    assert np.bincount(labels[kept]).tolist() == [80, 40, 16, 32, 8]
    assert kept.dtype.kind == "i" and held_out.dtype.kind == "i"


def test_stratified_split_of_sorted_labels_is_shuffled():
    labels = np.repeat(np.arange(5), 20)  # sorted by class, like CIFAR-10 folders
    kept, held_out = splits_lib.stratified_split(labels, 0.25, seed=0)
    assert np.bincount(labels[held_out]).tolist() == [5] * 5
    assert not np.array_equal(labels[held_out], np.sort(labels[held_out]))  # classes interleaved
    assert not np.array_equal(labels[kept], np.sort(labels[kept]))


def test_stratified_split_is_seed_deterministic():
    labels = grouped_labels()
    first = splits_lib.stratified_split(labels, 0.2, seed=11)
    second = splits_lib.stratified_split(labels, 0.2, seed=11)
    other = splits_lib.stratified_split(labels, 0.2, seed=12)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert not np.array_equal(np.sort(first[1]), np.sort(other[1]))  # a different validation set
    assert np.bincount(labels[other[1]]).tolist() == [20, 10, 4, 8, 2]


def test_stratified_split_of_nothing():
    labels = grouped_labels()
    kept, held_out = splits_lib.stratified_split(labels, 0.0, seed=0)
    assert len(held_out) == 0 and sorted(kept) == list(range(len(labels)))


# --------------------------------------------------------------------------------------------------
# The real mirror
# --------------------------------------------------------------------------------------------------


@pytest.mark.mirror
def test_real_mnist(mirror_dir):
    data = datasets.load_dataset("mnist", mirror_dir=str(mirror_dir))
    assert data.train_images.shape == (60000, 28, 28, 1) and data.test_images.shape == (10000, 28, 28, 1)
    assert data.train_images.dtype == np.uint8
    assert data.train_labels[:5].tolist() == [5, 0, 4, 1, 9]
    assert data.test_labels[:5].tolist() == [7, 2, 1, 0, 4]
    assert set(np.unique(data.train_labels)) == set(range(10))
    assert data.train_images.max() == 255 and data.train_images.min() == 0


@pytest.mark.mirror
def test_real_fashion_mnist(mirror_dir):
    data = datasets.load_dataset("fashion_mnist", mirror_dir=str(mirror_dir))
    assert data.train_images.shape == (60000, 28, 28, 1) and data.test_images.shape == (10000, 28, 28, 1)
    assert data.class_names == FASHION_CLASSES
    assert np.bincount(data.train_labels).tolist() == [6000] * 10
    assert np.bincount(data.test_labels).tolist() == [1000] * 10


@pytest.mark.mirror
def test_real_cifar10(mirror_dir):
    # default data_dir: the project's data/ store, so the decoded cache is made once and reused
    data = datasets.load_dataset("cifar10", mirror_dir=str(mirror_dir))
    assert data.train_images.shape == (50000, 32, 32, 3) and data.test_images.shape == (10000, 32, 32, 3)
    assert data.train_images.dtype == np.uint8 and data.train_labels.dtype == np.int64
    assert data.class_names == CIFAR10_CLASSES
    assert np.bincount(data.train_labels).tolist() == [5000] * 10
    assert np.bincount(data.test_labels).tolist() == [1000] * 10
    assert (datasets.resolve_data_dir("data") / "cifar10" / "cifar10.npz").is_file()


def test_decode_files_in_parallel_gives_each_files_pixels_and_names_a_bad_one(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(5)]
    paths = []
    for index, array in enumerate(arrays):
        paths.append(str(tmp_path / f"{index}.png"))
        Image.fromarray(array).save(paths[-1])
    np.testing.assert_array_equal(cifar_sources.decode_files(paths, source="src"), np.stack(arrays))
    (tmp_path / "bad.png").write_bytes(b"<html>not an image</html>")
    with pytest.raises(datasets.DatasetError, match=r"src: .*bad\.png is not a readable image"):
        cifar_sources.decode_files([*paths, str(tmp_path / "bad.png")], source="src")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "small.png")
    with pytest.raises(datasets.DatasetError, match="images of several sizes"):
        cifar_sources.decode_files([*paths, str(tmp_path / "small.png")], source="src")


def test_decode_files_from_bytes_turns_an_exif_rotated_picture_as_displayed():
    """Bytes in memory are decoded without the orientation read only when none can hold the tag: one
    rotated JPEG among plain ones comes out as displayed, the plain ones as stored."""
    import io

    from PIL import Image

    def jpeg(orientation=None):
        buffer, image = io.BytesIO(), Image.new("RGB", (8, 8), (250, 250, 250))
        image.paste((10, 10, 10), (0, 0, 8, 2))  # a dark band along the top as stored
        exif = Image.Exif()
        if orientation:
            exif[0x0112] = orientation
        image.save(buffer, format="JPEG", quality=95, exif=exif.tobytes())
        return buffer.getvalue()

    plain = cifar_sources.decode_files(["a", "b"], source="src", contents=[jpeg(), jpeg()])
    assert plain[0][:2].mean() < 60 and plain[0][:, :2].mean() > 60  # band on top: not turned
    mixed = cifar_sources.decode_files(["a", "c"], source="src", contents=[jpeg(), jpeg(6)])
    np.testing.assert_array_equal(mixed[0], plain[0])
    assert mixed[1][:, -2:].mean() < 60 and mixed[1][:2].mean() > 60  # orientation 6: the top band on the right
