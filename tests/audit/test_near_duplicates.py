"""Near-duplicate candidates and their verification (`pipeline.data.near_duplicates`), on synthetic pictures.

No TensorFlow: the fingerprints are made here with Pillow (box-filtered thumbnails, imagehash through
`fingerprints._hashes`), so these tests take well under a second each.
"""

from __future__ import annotations

import hashlib
import io
import types

import numpy as np
import pytest

from pipeline.data import fingerprints, near_duplicates


def photo(seed: int, size: int = 96):
    """A PIL RGB picture: a 12x12 random colour field enlarged bicubically (smooth, like a photo)."""
    from PIL import Image

    field = np.random.default_rng(seed).integers(0, 256, (12, 12, 3), np.uint8)
    return Image.fromarray(field).resize((size, size), Image.BICUBIC)


def garment(stripes: str, size: int = 28):
    """A PIL picture like Fashion-MNIST's: one bright outline on black for every call, with vertical or
    horizontal stripes (period 4 px) as its detail."""
    from PIL import Image

    pixels = np.zeros((size, size), np.float32)
    rows, columns = np.mgrid[0:22, 0:12]
    wave = np.sign(np.sin(2 * np.pi * (columns if stripes == "vertical" else rows) / 4))
    pixels[3:25, 8:20] = 150.0 + 40.0 * wave
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).convert("RGB")


def recompressed(image, quality: int):
    from PIL import Image

    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def prints_of(images) -> types.SimpleNamespace:
    """What `fingerprints._collect` keeps, computed with Pillow instead of the tf.data decode."""
    from PIL import Image

    names = ("phash", "dhash", "phash_centre", "dhash_centre", "grey", "height", "width", "exact")
    rows = {name: [] for name in names}
    for image in images:
        width, height = image.size
        side = round(fingerprints.CENTRE * width), round(fingerprints.CENTRE * height)
        left, top = (width - side[0]) // 2, (height - side[1]) // 2
        centre = image.crop((left, top, left + side[0], top + side[1]))
        thumbnail = np.asarray(image.resize((fingerprints.THUMBNAIL,) * 2, Image.BOX))
        phash, dhash = fingerprints._hashes(thumbnail)
        phash_centre, dhash_centre = fingerprints._hashes(np.asarray(centre.resize((fingerprints.THUMBNAIL,) * 2)))
        grey = image.convert("L").resize((fingerprints.GREY_SIDE,) * 2, Image.BOX)
        exact = int.from_bytes(hashlib.blake2b(np.asarray(image).tobytes(), digest_size=8).digest(), "little")
        values = (phash, dhash, phash_centre, dhash_centre, np.asarray(grey), height, width, exact)
        for name, value in zip(rows, values):
            rows[name].append(value)
    arrays = {name: np.asarray(values) for name, values in rows.items()}
    for name in ("phash", "dhash", "phash_centre", "dhash_centre", "exact"):
        arrays[name] = arrays[name].astype(np.uint64)
    return types.SimpleNamespace(**arrays)


def correlation(first, second) -> float:
    prints = prints_of([first, second])
    return float(near_duplicates.verify(prints.grey, prints.height, prints.width, np.array([[0, 1]]))[0])


def test_copies_correlate_whatever_the_brightness_compression_or_size():
    from PIL import ImageEnhance

    original = photo(1)
    assert correlation(original, ImageEnhance.Brightness(original).enhance(0.8)) > 0.97
    assert correlation(original, ImageEnhance.Contrast(original).enhance(1.3)) > 0.97
    assert correlation(original, recompressed(original, 60)) > 0.97
    assert correlation(original, original.resize((48, 48))) > 0.97  # compared at the smaller image's side
    assert correlation(original, photo(2)) < 0.5


def test_a_crop_is_found_by_trying_crops_and_only_for_different_sizes():
    original = photo(3)
    cropped = original.crop((9, 0, 96, 90))  # 9% off the left, 6% off the bottom
    assert correlation(original, cropped) >= near_duplicates.VERIFY_LADDER[-2]
    # The same picture cut and stretched back to the original size is compared as it is (no crop search).
    assert correlation(original, cropped.resize((96, 96))) < near_duplicates.VERIFY_LADDER[-2]


def test_same_outline_with_other_detail_is_not_a_near_duplicate():
    """The Fashion-MNIST case: two garments of one outline correlate by their silhouette, not by their detail."""
    first, second = garment("vertical"), garment("horizontal")
    prints = prints_of([first, second, recompressed(first, 70)])
    plain = [np.asarray(image.convert("L"), np.float32).ravel() for image in (first, second)]
    assert np.corrcoef(plain)[0, 1] > 0.9  # the pixels as they are: alike
    scores = near_duplicates.verify(prints.grey, prints.height, prints.width, np.array([[0, 1], [0, 2]]))
    assert scores[0] < 0.85 and scores[1] > 0.99  # the detail: another garment, and a recompressed copy


def test_find_keeps_the_verified_candidates_and_raises_its_threshold_for_look_alikes(monkeypatch):
    monkeypatch.setattr(fingerprints, "DHASH_THRESHOLD", 64)  # with pHash <= 64: all same-size pairs are candidates
    monkeypatch.setattr(near_duplicates, "LOOK_ALIKE_MIN", 0)  # the share alone decides, even for a few images
    pictures = [photo(seed) for seed in range(6, 46)]
    pictures += [recompressed(pictures[0], 65), garment("vertical"), garment("horizontal")]
    pairs, kept, search = near_duplicates.find(prints_of(pictures), threshold=64)
    assert search["candidates"] >= 40 * 39 // 2 + 1 and search["min_correlation"] == near_duplicates.VERIFY_LADDER[0]
    assert pairs[:, :2].tolist() == [[0, 40], [41, 42]] and kept[0] > 0.97 and 0.7 <= kept[1] < 0.8
    # Four images: any pair holds over 10% of them, so the threshold climbs to the top of the ladder.
    few = prints_of(pictures[:1] + pictures[40:])
    pairs, _, search = near_duplicates.find(few, threshold=64)
    assert search["min_correlation"] == near_duplicates.VERIFY_LADDER[-1] and pairs[:, :2].tolist() == [[0, 1]]
    pairs, _, search = near_duplicates.find(few, threshold=64, min_correlation=0.5)  # given: not raised
    assert search["min_correlation"] == 0.5 and pairs[:, :2].tolist() == [[0, 1], [2, 3]]
    copies = prints_of(pictures[:1] * 3 + pictures[1:3])  # exact copies do not count as look-alikes
    assert near_duplicates.find(copies)[2]["min_correlation"] == near_duplicates.VERIFY_LADDER[0]


def test_candidates_of_different_sizes_are_matched_on_the_centre_crop_hash_too():
    from PIL import Image

    field = np.random.default_rng(4).integers(0, 256, (8, 8, 3), np.uint8)
    original = Image.fromarray(field).resize((128, 128), Image.BICUBIC)
    cropped = original.crop((6, 6, 122, 122))  # 4.7% off every side: the centre crop of the original
    prints = prints_of([original, cropped])
    whole = int(fingerprints.hamming(prints.phash[0], prints.phash[1]))
    crossed = int(fingerprints.hamming(prints.phash_centre[0], prints.phash[1]))
    assert crossed < whole
    assert near_duplicates.candidates(prints).tolist() == [[0, 1, crossed]]  # the closer way it matched


def test_a_uniform_picture_correlates_with_nothing():
    from PIL import Image

    grey = Image.new("RGB", (32, 32), (120, 120, 120))
    assert correlation(grey, grey) == pytest.approx(0.0, abs=1e-4)
    assert near_duplicates.verify(
        np.zeros((0, 32, 32), np.uint8), np.zeros(0), np.zeros(0), np.zeros((0, 3))
    ).shape == (0,)
