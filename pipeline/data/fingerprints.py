"""Image fingerprints for the data audit: exact-pixel keys, perceptual hashes and a few statistics.

Images are decoded the way training decodes them (`decode.decode_image`: EXIF orientation, the accurate
JPEG IDCT, grey and RGBA brought to RGB), so "exact duplicate" means the same pixels the model would
see, whatever the file format or name. Per image only a few numbers and a small grey thumbnail are kept
(four 64-bit hashes, an exact key, size and brightness statistics, 32x32 grey pixels), never the decoded
image: 100,000 images take ~110 MB.

Near duplicates: the DCT perceptual hash (pHash, `imagehash.phash`: the signs of the 8x8 lowest DCT
frequencies of a 32x32 grey thumbnail, relative to their median; Zauner, "Implementation and
Benchmarking of Perceptual Image Hash Functions", 2010) is unchanged by JPEG recompression, resizing and
moderate brightness changes, and moves a few bits under a small crop; the difference hash (dHash, the
signs of horizontal gradients of a 9x8 thumbnail) is a second, different opinion. Both are also taken of
the image's centre (`CENTRE` of each side), which a crop of the image matches better. Two images are
candidate near duplicates when their hashes are close (`NEAR_THRESHOLD`, `DHASH_THRESHOLD` for images of
one size); `near_duplicates` searches the pairs and verifies them on the grey thumbnails.
"""

from __future__ import annotations

import dataclasses

import numpy as np

THUMBNAIL = 64  # side of the RGB thumbnail the hashes are computed from (imagehash resizes it to 32 or 9)
GREY_SIDE = 32  # side of the grey thumbnail kept per image for the verification (1 KB: 100 MB per 100,000 images)
CENTRE = 0.9  # the centre crop hashed as well (its side over the image's): crops of up to 10% match it
NEAR_THRESHOLD = 10  # pHash bits of 64, images of one size (benchmarks/audit_quality.py sweeps it)
DHASH_THRESHOLD = 16  # dHash bits of 64, checked together with the pHash (cuts chance matches)


@dataclasses.dataclass
class Fingerprints:
    """One row per image that decoded; `failed` holds (index, reason) of those that did not.

    Attributes (arrays of length N, in input order of the decodable images):
        index: int64, the position of the image in the input.
        exact: uint64, farmhash64 of the decoded pixels (same key and same shape = same pixels).
        phash, dhash: uint64, 64-bit perceptual hashes.
        phash_centre, dhash_centre: uint64, the same hashes of the image's centre (CENTRE of each side).
        grey: uint8 [N, GREY_SIDE, GREY_SIDE], grey thumbnail (area-averaged) for `near_duplicates.verify`.
        height, width: int32, the image as displayed.
        brightness: float32, mean grey level 0..255 (ITU-R BT.601 weights).
        contrast: float32, standard deviation of the grey levels.
    """

    index: np.ndarray
    exact: np.ndarray
    phash: np.ndarray
    dhash: np.ndarray
    phash_centre: np.ndarray
    dhash_centre: np.ndarray
    grey: np.ndarray
    height: np.ndarray
    width: np.ndarray
    brightness: np.ndarray
    contrast: np.ndarray
    failed: list


def _hashes(thumbnail: np.ndarray) -> tuple[int, int]:
    """(pHash, dHash) of a uint8 RGB thumbnail, as unsigned 64-bit integers."""
    import imagehash
    from PIL import Image

    image = Image.fromarray(thumbnail)
    return (
        int(str(imagehash.phash(image)), 16),
        int(str(imagehash.dhash(image)), 16),
    )


def _thumbnail(image, side: int):
    """float32 [H, W, C] -> uint8 [side, side, C], area-averaged (every pixel counts: no aliasing)."""
    import tensorflow as tf

    thumbnail = tf.image.resize(image, [side, side], method="area", antialias=True)
    return tf.cast(tf.round(tf.clip_by_value(thumbnail, 0.0, 255.0)), tf.uint8)


def _summary(image):
    """uint8 [H, W, 3] -> (exact key, height, width, brightness, contrast, thumbnail [64, 64, 3] uint8,
    centre thumbnail [64, 64, 3] uint8, grey thumbnail [GREY_SIDE, GREY_SIDE] uint8)."""
    import tensorflow as tf

    shape = tf.shape(image)
    key = tf.fingerprint(tf.reshape(image, [1, -1]))[0]  # farmhash64 of the pixel bytes, uint8 [8]
    pixels = tf.cast(image, tf.float32)
    grey = tf.image.rgb_to_grayscale(pixels)
    centre = tf.image.central_crop(pixels, CENTRE)
    return (
        key,
        shape[0],
        shape[1],
        tf.reduce_mean(grey),
        tf.math.reduce_std(grey),
        _thumbnail(pixels, THUMBNAIL),
        _thumbnail(centre, THUMBNAIL),
        _thumbnail(grey, GREY_SIDE)[..., 0],
    )


def _collect(dataset, count: int, progress) -> Fingerprints:
    """Runs a tf.data pipeline of (index, summary...) and hashes each thumbnail in Python."""
    names = ("index", "exact", "phash", "dhash", "phash_centre", "dhash_centre", "grey", "height", "width")
    rows = {name: [] for name in (*names, "brightness", "contrast")}
    for index, key, height, width, brightness, contrast, thumbnail, centre, grey in dataset.as_numpy_iterator():
        phash, dhash = _hashes(thumbnail)
        phash_centre, dhash_centre = _hashes(centre)
        rows["index"].append(int(index))
        rows["exact"].append(int.from_bytes(key.tobytes(), "little"))
        rows["phash"].append(phash)
        rows["dhash"].append(dhash)
        rows["phash_centre"].append(phash_centre)
        rows["dhash_centre"].append(dhash_centre)
        rows["grey"].append(grey)
        rows["height"].append(int(height))
        rows["width"].append(int(width))
        rows["brightness"].append(float(brightness))
        rows["contrast"].append(float(contrast))
        if progress is not None:
            progress.update()
    decoded = set(rows["index"])
    failed = [(i, "cannot be decoded") for i in range(count) if i not in decoded]
    dtypes = dict.fromkeys(("exact", "phash", "dhash", "phash_centre", "dhash_centre"), np.uint64)
    dtypes.update(index=np.int64, height=np.int32, width=np.int32, grey=np.uint8)
    arrays = {name: np.asarray(values, dtypes.get(name, np.float32)) for name, values in rows.items()}
    arrays["grey"] = arrays["grey"].reshape(-1, GREY_SIDE, GREY_SIDE)  # also when nothing decoded
    return Fingerprints(**arrays, failed=failed)


def fingerprint_files(paths, *, progress=None) -> Fingerprints:
    """Fingerprints of image files, decoded as training decodes them, in parallel (tf.data).

    Args:
        paths: file paths (str or Path).
        progress: an object with `update()` called once per decoded image, or None.
    Returns:
        Fingerprints; files that do not decode are listed in `failed`, not raised.
    """
    import tensorflow as tf

    from pipeline.data import decode

    paths = [str(p) for p in paths]

    def load(index, path):
        image = decode.decode_image(tf.io.read_file(path), channels=3)
        return (index, *_summary(image))

    # An empty list has no dtype to infer: give the string tensor one.
    dataset = tf.data.Dataset.from_tensor_slices(
        (tf.range(len(paths), dtype=tf.int64), tf.constant(paths, dtype=tf.string, shape=[len(paths)]))
    )
    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.ignore_errors().prefetch(tf.data.AUTOTUNE)  # a bad file drops out; its index shows it
    return _collect(dataset, len(paths), progress)


def fingerprint_arrays(images: np.ndarray, *, progress=None) -> Fingerprints:
    """Fingerprints of in-memory images uint8 [N, H, W] or [N, H, W, C] (C 1 or 3), as `fingerprint_files`."""
    import tensorflow as tf

    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    grey = images.shape[-1] == 1  # known here, so no run-time channel test is needed

    def load(index, image):
        return (index, *_summary(tf.image.grayscale_to_rgb(image) if grey else image))

    dataset = tf.data.Dataset.from_tensor_slices((np.arange(len(images), dtype=np.int64), images))
    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    return _collect(dataset, len(images), progress)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bits that differ between uint64 hashes (broadcasting), int."""
    return np.bitwise_count(np.bitwise_xor(a, b))


def group(count: int, pairs) -> list[list[int]]:
    """Connected components (union-find) of `count` items joined by `pairs` ((i, j, ...) rows); only
    components of two or more, each sorted, largest first."""
    parent = list(range(count))

    def root(item):
        while parent[item] != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return item

    for i, j, *_ in pairs:
        a, b = root(int(i)), root(int(j))
        if a != b:
            parent[max(a, b)] = min(a, b)
    components: dict[int, list[int]] = {}
    for item in range(count):
        components.setdefault(root(item), []).append(item)
    return sorted((c for c in components.values() if len(c) > 1), key=lambda c: (-len(c), c[0]))


def exact_pairs(exact: np.ndarray, height: np.ndarray, width: np.ndarray) -> np.ndarray:
    """Pairs (first, other) of images with the same pixel key and shape: [P, 2] int64 (chains, not all pairs)."""
    order = np.lexsort((width, height, exact))
    same = (exact[order][1:] == exact[order][:-1]) & (height[order][1:] == height[order][:-1])
    same &= width[order][1:] == width[order][:-1]
    return np.stack([order[:-1][same], order[1:][same]], axis=1).astype(np.int64)
