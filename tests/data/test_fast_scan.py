"""The fast pre-training scan (issue 24): JPEGs checked by a reduced-scale decode give TensorFlow's full decode's
verdicts on intact, truncated and corrupted files; the scan cache survives a moved or copied dataset and
re-checks an edited file."""

from __future__ import annotations

import io
import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from pipeline.data import decode, image_files, image_header, reduced_jpeg


def jpeg_bytes(height: int, width: int, seed: int, *, mode: str = "RGB", **options) -> bytes:
    rng = np.random.default_rng(seed)
    rows, cols = np.meshgrid(np.linspace(0, 150, height), np.linspace(0, 90, width), indexing="ij")
    pixels = np.clip((rows + cols)[..., None] + rng.normal(0, 20, (height, width, 3)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, format="JPEG", quality=90, **options)
    return buffer.getvalue()


def tensorflow_accepts(data: bytes) -> bool:
    try:
        decode.decode_native(data)
        return True
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError):
        return False


def test_reduced_jpeg_decode_gives_the_full_decodes_verdicts(tmp_path, monkeypatch):
    """Intact (baseline, progressive, grey), truncated anywhere in the scan data, and with random bytes
    overwritten: the scan's verdict is TensorFlow's full decode's, file by file, and intact JPEGs are not
    decoded by TensorFlow at all (the fast path served them)."""
    rng = random.Random(0)
    intact = [
        jpeg_bytes(120, 160, 1),
        jpeg_bytes(97, 131, 2, progressive=True),
        jpeg_bytes(80, 64, 3, mode="L"),
        jpeg_bytes(150, 200, 4, subsampling=0),
    ]
    files = {}
    for index, data in enumerate(intact):
        files[f"intact_{index}.jpg"] = data
        scan = data.find(b"\xff\xda")
        for cut in range(6):
            files[f"cut_{index}_{cut}.jpg"] = data[: rng.randrange(scan + 4, len(data) - 2)]
        for flip in range(10):
            damaged = bytearray(data)
            for _ in range(16):
                damaged[rng.randrange(scan + 20, len(data) - 2)] = rng.randrange(256)
            files[f"flip_{index}_{flip}.jpg"] = bytes(damaged)
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    expected = {name: tensorflow_accepts(data) for name, data in files.items()}
    decoded_by_tensorflow = []
    real = decode.decode_native
    monkeypatch.setattr(decode, "decode_native", lambda data: decoded_by_tensorflow.append(data) or real(data))
    checks = image_files.scan_images([tmp_path / name for name in files], min_size=1, workers=2)
    assert {name: check.ok for name, check in zip(files, checks)} == expected
    assert sum(not ok for ok in expected.values()) >= 24 + 4  # every cut, and some of the flips, are bad
    for name, check in zip(files, checks):
        if name.startswith("cut_"):
            assert check.reason.startswith("truncated or corrupt JPEG ("), check.reason
        if name.startswith("intact_"):
            data = files[name]
            shape = tf.io.extract_jpeg_shape(data).numpy()
            assert (check.height, check.width, check.channels) == tuple(int(v) for v in shape)
            assert (check.colours > 200 or check.channels == 1) and check.warning is None
    # Every bad verdict is TensorFlow's; intact files never reach it (a damaged file Pillow refuses but
    # TensorFlow decodes may: it is then good, as TensorFlow says).
    assert all(files[name] in decoded_by_tensorflow for name, ok in expected.items() if not ok)
    assert not any(files[name] in decoded_by_tensorflow for name in files if name.startswith("intact_"))


def test_reduced_jpeg_still_flags_a_flat_placeholder(tmp_path):
    flat = np.zeros((300, 400, 3), np.uint8)
    flat[:100], flat[100:200], flat[200:] = (240, 240, 240), (200, 30, 30), (90, 90, 90)
    Image.fromarray(flat).save(tmp_path / "unavailable.jpg", quality=95)
    check = image_files.check_image(tmp_path / "unavailable.jpg")
    assert check.ok and check.colours < 64 and "placeholder" in check.warning
    assert (check.height, check.width) == (300, 400)


def test_jpeg_frame_reads_the_size_from_the_headers():
    data = jpeg_bytes(37, 53, 5, progressive=True)
    assert image_header.jpeg_frame(data) == (0xC2, 8, 37, 53, 3)
    assert image_header.jpeg_frame(data[: data.find(b"\xff\xc2")]) is None  # headers end before the frame
    assert image_header.jpeg_frame(b"\xff\xd8\xff\xda\x00\x08") is None


def write_tree(root: Path) -> list[Path]:
    paths = []
    for index in range(6):
        path = root / "ab"[index % 2] / f"p{index}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(jpeg_bytes(40, 48, index))
        paths.append(path)
    (root / "a" / "broken.jpg").write_text("<html>not found</html>")
    return sorted(paths + [root / "a" / "broken.jpg"])


def spy_on_checks(monkeypatch) -> list[str]:
    checked = []
    real = image_files.check_image
    monkeypatch.setattr(
        image_files, "check_image", lambda path, **kw: checked.append(Path(path).name) or real(path, **kw)
    )
    return checked


def test_scan_cache_follows_a_moved_or_copied_dataset_and_rechecks_an_edited_file(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first_root = tmp_path / "first" / "photos"
    paths = write_tree(first_root)
    checked = spy_on_checks(monkeypatch)
    before = image_files.scan_images(paths, cache_dir=cache)
    assert len(checked) == 7 and [c.ok for c in before].count(False) == 1
    # Moved (rename keeps size, mtime and mode): nothing decoded again, results name the new paths.
    moved_root = tmp_path / "elsewhere" / "photos"
    moved_root.parent.mkdir()
    os.rename(first_root, moved_root)
    moved = sorted(moved_root.rglob("*.jpg"))
    checked.clear()
    after = image_files.scan_images(moved, cache_dir=cache)
    assert checked == []
    assert [c.path for c in after] == [str(p) for p in moved]
    assert [(c.reason, c.height, c.width, c.colours) for c in after] == [
        (c.reason, c.height, c.width, c.colours) for c in before
    ]
    # Copied with times kept (cp -a): not decoded again either.
    copied_root = tmp_path / "copy" / "photos"
    shutil.copytree(moved_root, copied_root, copy_function=shutil.copy2)
    copied = sorted(copied_root.rglob("*.jpg"))
    image_files.scan_images(copied, cache_dir=cache)
    assert checked == []
    # An edited file is checked again (new content, new size and time), and a chmod too; the others are not.
    edited, made_readable = copied[1], copied[2]
    edited.write_bytes(jpeg_bytes(44, 52, 99))
    os.chmod(made_readable, 0o600)
    results = image_files.scan_images(copied, cache_dir=cache)
    assert sorted(checked) == sorted([edited.name, made_readable.name])
    assert results[1].ok and (results[1].height, results[1].width) == (44, 52)


@pytest.mark.parametrize("placeholder_colours", [0, 64])
def test_reduced_decode_skips_pixels_when_no_colours_are_counted(tmp_path, placeholder_colours):
    (tmp_path / "photo.jpg").write_bytes(jpeg_bytes(64, 80, 6))
    check = image_files.check_image(tmp_path / "photo.jpg", placeholder_colours=placeholder_colours)
    assert check.ok and (check.height, check.width, check.channels) == (64, 80, 3)
    assert (check.colours > 0) == bool(placeholder_colours)


@pytest.mark.parametrize("shape", [(100, 130), (47, 63), (64, 64), (300, 17)])
def test_thumbnail_samples_as_tensorflow_nearest_resize(shape):
    """The placeholder thumbnail (numpy, no TensorFlow op per file) picks the pixels tf.image.resize's
    nearest neighbour picks, so PNG/GIF/BMP/WebP colour counts are those of the scan before issue 24."""
    pixels = np.random.default_rng(1).integers(0, 256, (*shape, 3), dtype=np.uint8)
    expected = tf.image.resize(pixels, (64, 64), method="nearest").numpy()
    np.testing.assert_array_equal(reduced_jpeg.thumbnail(pixels), expected)


@pytest.mark.parametrize("shape", [(47, 63), (64, 64), (1, 64), (64, 9), (3, 2)])
def test_an_image_within_the_thumbnail_has_the_thumbnails_colours(shape):
    """The check counts a small image's own colours instead of its thumbnail's: nearest-neighbour sampling
    up to 64x64 takes every pixel of it, so the two sets are equal."""
    pixels = np.random.default_rng(2).integers(0, 256, (*shape, 3), dtype=np.uint8)
    own = {tuple(p) for p in pixels.reshape(-1, 3)}
    assert {tuple(p) for p in reduced_jpeg.thumbnail(pixels).reshape(-1, 3)} == own


def test_the_scan_cache_is_one_compact_line_without_paths(tmp_path):
    paths = write_tree(tmp_path / "photos")
    results = image_files.scan_images(paths, cache_dir=tmp_path / "cache")
    (cache_file,) = (tmp_path / "cache").iterdir()
    text = cache_file.read_text()
    assert text.count("\n") == 1 and ": " not in text and str(tmp_path) not in text
    assert all(result.fields() == {k: v for k, v in vars(result).items() if k != "path"} for result in results)
