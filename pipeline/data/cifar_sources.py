"""CIFAR-10's source formats, read into uint8 arrays: JPEG class folders, the same in a tar (the
mirror's `cifar10-jpg.tar.gz`), and the official pickle batches. `datasets.cifar10` picks the source and
caches the arrays.
"""

from __future__ import annotations

import pickle
import tarfile
from pathlib import Path

import numpy as np

from pipeline.data import image_files, image_header
from pipeline.data.folders import DatasetError, FileDataset

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def decode_files(paths: list[str], *, source: str, contents: list[bytes] | None = None) -> np.ndarray:
    """Decodes equally sized image files into one uint8 array [N, H, W, C], with TensorFlow (the decoder
    the exported serving graph uses, so training pixels match served pixels).

    A tf.data pipeline decodes in parallel in graph mode (3.2x the eager, thread-per-file loop on 2 cores:
    6,000 CIFAR-10 JPEGs in 2.4 s against 7.6 s, the same pixels); when a file fails or the sizes differ,
    the files are decoded one by one to name the one at fault.

    Args:
        paths: the files, or with `contents` only their names (an archive's members), in order.
        source: the dataset's folder or archive, named in errors.
        contents: the files' bytes when they are in memory already, one per path.

    Raises:
        DatasetError: a file that is not a readable image, or images of several sizes.
    """
    import tensorflow as tf

    from pipeline.data import decode as decoding

    if contents is None:
        encoded = tf.data.Dataset.from_tensor_slices([str(path) for path in paths]).map(tf.io.read_file)
    else:
        encoded = tf.data.Dataset.from_tensor_slices(tf.constant(contents, tf.string))
    # Bytes in hand that cannot hold an EXIF orientation (`may_hold_orientation`; CIFAR-10's JPEGs) are
    # decoded without the in-graph orientation read, which is 3/4 of a 32x32 JPEG's decode (13,700 against
    # 3,100 images/s on 2 cores); the pixels are the same, as their orientation is 1.
    orient = contents is None or any(image_header.may_hold_orientation(data) for data in contents)
    dataset = encoded.map(
        lambda data: decoding.decode_image(data, channels=3, orient=orient),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    try:
        return np.concatenate(list(dataset.batch(1024).as_numpy_iterator()))
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError, ValueError):
        return _decode_files_one_by_one(paths, source=source, contents=contents)


def _decode_files_one_by_one(paths: list[str], *, source: str, contents: list[bytes] | None) -> np.ndarray:
    """`decode_files`' slow path, which names the file at fault."""
    import tensorflow as tf

    from pipeline.data import decode as decoding

    images = []
    for index, path in enumerate(paths):
        try:
            data = tf.io.read_file(str(path)) if contents is None else tf.constant(contents[index])
            images.append(decoding.decode_image(data, channels=3).numpy())
        except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as error:
            raise DatasetError(f"{source}: {path} is not a readable image ({error.message.splitlines()[0]})") from None
    shapes = {image.shape for image in images}
    if len(shapes) != 1:
        raise DatasetError(f"{source}: images of several sizes {sorted(shapes)[:3]}; expected one size")
    return np.stack(images)


def _check_layout(source, class_names: list[str], splits) -> None:
    if class_names != CIFAR10_CLASSES or not {"train", "test"} <= set(splits):
        raise DatasetError(
            f"{source}: expected train/ and test/ folders with classes "
            f"{', '.join(CIFAR10_CLASSES)}; found splits {', '.join(splits)} and classes "
            f"{', '.join(class_names)}"
        )


def from_folders(tree: FileDataset) -> dict:
    """CIFAR-10 as JPEG class folders (the mirror's form), read with the `folder` dataset's reader."""
    _check_layout(tree.root, tree.class_names, tree.splits)
    return {
        split: (decode_files(tree.splits[split][0], source=str(tree.root)), tree.splits[split][1])
        for split in ("train", "test")
    }


def from_archive(archive: Path) -> dict:
    """CIFAR-10 as JPEG class folders in a tar (the mirror's `cifar10-jpg.tar.gz`), decoded from the archive
    in memory: the same files, order and pixels as extracting it and reading the folders with the `folder`
    reader (tested), without writing 60,000 small files first. On the 2-core CI VM the extraction was 2/3
    of the first load (35 s of file creation of a 51 s load).

    Layout: `[top/]{train,test}/<class>/<file>`; hidden files and folders (`.DS_Store`, `__MACOSX/`) are
    skipped, as the folder walk skips them.
    """
    entries = []  # (path parts, bytes)
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                parts = [part for part in member.name.split("/") if part not in ("", ".")]
                if member.isfile() and not any(part.startswith((".", "__MACOSX")) for part in parts):
                    entries.append((parts, tar.extractfile(member).read()))
    except (OSError, tarfile.TarError, EOFError) as error:
        raise DatasetError(f"{archive}: cannot read ({error})") from None
    # one folder wrapping everything (cifar10/) is stepped into, as single_top_folder does
    tops = {parts[0] for parts, _ in entries}
    if len(tops) == 1 and not tops & set(image_files.SPLIT_NAMES):
        entries = [(parts[1:], data) for parts, data in entries]
    by_split: dict[str, list] = {}
    for parts, data in entries:
        if len(parts) >= 3 and parts[0] in image_files.SPLIT_NAMES:
            by_split.setdefault(image_files.SPLIT_NAMES[parts[0]], []).append((parts[1:], data))
    train_classes = sorted({parts[0] for parts, _ in by_split.get("train", [])})
    _check_layout(archive, train_classes, by_split)
    splits = {}
    for split in ("train", "test"):
        found = sorted(by_split[split], key=lambda item: item[0])
        unknown = sorted({parts[0] for parts, _ in found} - set(CIFAR10_CLASSES))
        if unknown:
            raise DatasetError(f"{archive}: {split}/ has class folders {', '.join(unknown)} that train/ lacks")
        names = ["/".join((split, *parts)) for parts, _ in found]
        images = decode_files(names, source=str(archive), contents=[data for _, data in found])
        splits[split] = (images, np.asarray([CIFAR10_CLASSES.index(parts[0]) for parts, _ in found], np.int64))
    return splits


def from_pickles(directory: Path) -> dict:
    def load(name):
        try:
            with open(directory / name, "rb") as handle:
                batch = pickle.load(handle, encoding="bytes")
        except (OSError, pickle.UnpicklingError, EOFError) as error:
            raise DatasetError(f"{directory / name}: unreadable CIFAR-10 batch ({error})") from None
        images = np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return images, np.asarray(batch[b"labels"], np.int64)

    train = [load(f"data_batch_{index}") for index in range(1, 6)]
    return {
        "train": (np.concatenate([t[0] for t in train]), np.concatenate([t[1] for t in train])),
        "test": load("test_batch"),
    }
