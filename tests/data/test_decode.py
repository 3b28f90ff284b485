"""Decoding as viewers show it (EXIF orientation) and at reduced scale, in graph ops only (pipeline/data/decode.py)."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageOps

from pipeline.data import decode

# The stored pixels for EXIF value n are the upright picture under the inverse of n's display transform.
INVERSE = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def upright(height=24, width=32) -> np.ndarray:
    """Smooth gradients (JPEG-friendly) with an asymmetric corner mark, so every orientation differs."""
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([y * 200 // height, x * 200 // width, (x + y) * 100 // (height + width)], -1)
    image[:6, :8] = [250, 250, 40]
    return image.astype(np.uint8)


def exif_bytes(orientation: int, endian: str = ">") -> bytes:
    exif = Image.Exif()
    exif.endian = endian  # Pillow writes big-endian (MM) unless told otherwise
    exif[0x0112] = orientation
    return exif.tobytes()


def encode(array: np.ndarray, fmt: str = "JPEG", orientation: int | None = None, endian: str = ">", **options) -> bytes:
    """`array` as it is displayed, stored the way a camera stores it: raw pixels + EXIF orientation."""
    image = Image.fromarray(array)
    if orientation is not None and INVERSE[orientation] is not None:
        image = image.transpose(INVERSE[orientation])
    if orientation is not None:
        options["exif"] = exif_bytes(orientation, endian)
    if fmt == "JPEG":
        options = {"quality": 100, "subsampling": 0, **options}
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("endian", ["<", ">"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_jpeg_orientation_matches_pillow_exif_transpose(orientation, endian):
    picture = upright()
    data = encode(picture, orientation=orientation, endian=endian)
    assert b"Exif\0\0" + (b"II*\0" if endian == "<" else b"MM\0*") in data[:64]  # after Pillow's JFIF APP0
    assert int(decode.exif_orientation(data)) == orientation
    ours = decode.decode_image(data, channels=3).numpy()
    # Exact: the same decoder's stored pixels, transposed by Pillow's own rule.
    stored = Image.fromarray(decode.decode_image(data, channels=3, orient=False).numpy())
    stored.info["exif"] = exif_bytes(orientation, endian)
    np.testing.assert_array_equal(ours, np.asarray(ImageOps.exif_transpose(stored)))
    # Against Pillow's whole path and the upright picture: JPEG decoders differ by a few levels
    # (TensorFlow's default integer DCT is the fast one, up to ~10 at sharp edges), orientations by ~100.
    shown = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))
    assert ours.shape == shown.shape == picture.shape
    assert np.abs(ours.astype(int) - shown).mean() < 3 and np.abs(ours.astype(int) - shown).max() <= 16
    assert np.abs(ours.astype(int) - picture).mean() < 3


def test_apply_orientation_covers_the_eight_exif_transforms():
    image = np.arange(2 * 3).reshape(2, 3, 1)
    expected = {
        1: image,
        2: image[:, ::-1],
        3: image[::-1, ::-1],
        4: image[::-1],
        5: image.transpose(1, 0, 2),
        6: np.rot90(image, -1),
        7: np.rot90(image, -1)[::-1],
        8: np.rot90(image, 1),
    }
    for orientation, want in expected.items():
        np.testing.assert_array_equal(decode.apply_orientation(image, orientation).numpy(), want)
    for invalid in (0, 9, -1, 65535):
        np.testing.assert_array_equal(decode.apply_orientation(image, invalid).numpy(), image)


def _decode_before_exif(data: bytes, channels) -> np.ndarray:
    """What the pipeline decoded before orientation: TensorFlow's decoder (JPEG with the accurate IDCT),
    alpha dropped, grey <-> RGB."""
    if data[:3] == b"\xff\xd8\xff":
        native = tf.io.decode_jpeg(data, channels=0, dct_method=decode.JPEG_DCT_METHOD)
    else:
        native = tf.io.decode_image(data, channels=0, expand_animations=False)
    return decode.convert_channels(native[..., :3] if native.shape[-1] >= 3 else native[..., :1], channels).numpy()


def test_png_exif_chunk_is_honoured_and_other_formats_decode_as_before():
    picture = upright()
    png = encode(picture, "PNG", orientation=6)
    assert b"eXIf" in png[: png.index(b"IDAT")]
    assert int(decode.exif_orientation(png)) == 6
    np.testing.assert_array_equal(decode.decode_image(png, channels=3).numpy(), picture)  # lossless: exact
    grey_alpha = np.dstack([picture[..., :1], np.full(picture.shape[:2] + (1,), 128, np.uint8)])
    rgba = np.dstack([picture, np.full(picture.shape[:2] + (1,), 7, np.uint8)])
    cases = [
        encode(picture, "PNG"),
        encode(picture[..., 0], "PNG"),
        encode(rgba, "PNG"),
        encode(grey_alpha, "PNG"),
        encode(picture, "BMP"),
        encode(picture, "GIF"),
        encode(picture, "JPEG"),
        encode(picture, "WEBP"),
    ]
    frames = [Image.fromarray(picture), Image.fromarray(255 - picture)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    cases.append(buffer.getvalue())
    for data in cases:
        assert int(decode.exif_orientation(data)) == 1
        for channels in (None, 1, 3):
            np.testing.assert_array_equal(
                decode.decode_image(data, channels=channels).numpy(), _decode_before_exif(data, channels)
            )


def test_webp_exif_is_left_alone_as_browsers_do():
    # WebP's EXIF chunk follows the image data; Firefox ignores it (Pillow reads it): not oriented.
    data = encode(upright(), "WEBP", orientation=6)
    assert int(decode.exif_orientation(data)) == 1
    assert decode.decode_image(data, channels=3).shape == (32, 24, 3)


def _segment(marker: int, payload: bytes) -> bytes:
    return b"\xff" + bytes([marker]) + struct.pack(">H", len(payload) + 2) + payload


def _tiff(entries: list[tuple[int, int, int, bytes]], endian: str = ">", ifd_offset: int = 8) -> bytes:
    head = (b"MM\x00*" if endian == ">" else b"II*\x00") + struct.pack(endian + "I", ifd_offset)
    body = struct.pack(endian + "H", len(entries))
    for tag, kind, count, value in entries:
        body += struct.pack(endian + "HHI", tag, kind, count) + value.ljust(4, b"\0")
    return head + b"\0" * (ifd_offset - 8) + body + b"\0\0\0\0"


def test_orientation_found_after_other_segments_and_in_unusual_layouts():
    jpeg = encode(upright(), orientation=None)
    rest = jpeg[2:]
    short6 = struct.pack(">H", 6)
    app1 = _segment(0xE1, b"Exif\0\0" + _tiff([(0x010F, 2, 4, b"abc\0"), (0x0112, 3, 1, short6)]))
    xmp = _segment(0xE1, b"http://ns.adobe.com/xap/1.0/\0<x/>")
    icc = _segment(0xE2, b"ICC_PROFILE\0" + b"\x01" * 3000)
    for layout in ([app1], [icc, xmp, app1], [b"\xff\xff", app1]):  # after others; after 0xFF fill bytes
        assert int(decode.exif_orientation(b"\xff\xd8" + b"".join(layout) + rest)) == 6
    variants = {
        "LONG value": _tiff([(0x0112, 4, 1, struct.pack(">I", 8))]),
        "little-endian, IFD at 40": _tiff([(0x0112, 3, 1, struct.pack("<H", 3))], "<", ifd_offset=40),
    }
    assert [
        int(decode.exif_orientation(b"\xff\xd8" + _segment(0xE1, b"Exif\0\0" + t) + rest)) for t in variants.values()
    ] == [8, 3]
    # The first Exif segment wins (as in Pillow); a tag after the scan starts is not a header.
    second = _segment(0xE1, b"Exif\0\0" + _tiff([(0x0112, 3, 1, struct.pack(">H", 3))]))
    assert int(decode.exif_orientation(b"\xff\xd8" + app1 + second + rest)) == 6
    assert int(decode.exif_orientation(jpeg + app1)) == 1


@tf.function(input_signature=[tf.TensorSpec([], tf.string)])
def _orientation_graph(data):
    return decode.exif_orientation(data)


def test_garbled_and_truncated_exif_never_raises():
    rest = encode(upright())[2:]
    bad_tiffs = [
        b"",
        b"MM",
        b"XX\0*\0\0\0\x08",
        b"MM\0*\xff\xff\xff\xff",  # bad magic, offset
        _tiff([(0x0112, 3, 1, struct.pack(">H", 6))])[:14],  # entry cut off
        _tiff([(0x0112, 3, 1, struct.pack(">H", 9))]),  # value out of range
        _tiff([(0x0112, 3, 2, struct.pack(">HH", 6, 6))]),  # count 2 (Pillow: a tuple)
        _tiff([(0x0112, 3, 1, struct.pack(">H", 6))], ifd_offset=4),  # IFD inside the header
    ]
    samples = [
        b"MM\0*\0\0\0\x08\xff\xff\x01\x12\0\x03\0\0\0\x01\0\x06\0\0",  # IFD count 65535
        b"",
        b"\xff",
        b"\xff\xd8",
        b"\xff\xd8\xff",
        b"\xff\xd8\xff\xe1",
        b"\xff\xd8\xff\xe1\x00",
        b"\xff\xd8\xff\xe1\x00\x01",
        b"\xff\xd8\xff\xe1\xff\xffExif\0\0MM",
        b"\x89PNG\r\n\x1a\n",
        b"\x89PNG\r\n\x1a\n\xff\xff\xff\xffeXIf",
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\x08eXIfMM\0*",
    ]
    rejected = [b"\xff\xd8" + _segment(0xE1, b"Exif\0\0" + tiff) + rest for tiff in bad_tiffs]
    samples += rejected
    good = encode(upright(), orientation=6)
    samples += [good[:cut] for cut in range(80)]
    rng = np.random.default_rng(0)
    for _ in range(100):  # random byte flips in the headers
        mutated = bytearray(good)
        for position in rng.integers(2, 60, size=3):
            mutated[position] = int(rng.integers(0, 256))
        samples.append(bytes(mutated))
    for data in samples:
        value = int(_orientation_graph(tf.constant(data)))
        assert 1 <= value <= 8, data
        assert decode.exif_orientation_of(data) == value  # the Python shortcut gives the same answers
    assert [int(_orientation_graph(tf.constant(data))) for data in rejected] == [1] * len(rejected)
    assert int(_orientation_graph(tf.constant(good[:60]))) == 6  # the headers alone are enough


@pytest.mark.slow  # 3-4 s on a 2-core AVX2 VM: make test must stay under 4 min there
def test_graph_mode_tf_data_and_saved_model(tmp_path):
    files = []
    for orientation in (1, 6, 8):
        path = tmp_path / f"o{orientation}.jpg"
        path.write_bytes(encode(upright(), orientation=orientation))
        files.append(str(path))
    eager = [decode.decode_image(tf.io.read_file(f), channels=3).numpy() for f in files]
    dataset = tf.data.Dataset.from_tensor_slices(files).map(
        lambda path: decode.decode_image(tf.io.read_file(path), channels=3)
    )
    for image, want in zip(dataset, eager):
        np.testing.assert_array_equal(image.numpy(), want)
    assert all(image.shape == (24, 32, 3) for image in eager)

    module = tf.Module()
    module.decode = tf.function(
        lambda data: decode.decode_image(data, channels=1), input_signature=[tf.TensorSpec([], tf.string)]
    )
    tf.saved_model.save(module, str(tmp_path / "saved"))
    restored = tf.saved_model.load(str(tmp_path / "saved"))
    for path, want in zip(files, eager):
        served = restored.decode(tf.io.read_file(path)).numpy()
        assert served.shape == (24, 32, 1)
        np.testing.assert_array_equal(served, decode.convert_channels(want, 1).numpy())


def test_channels_are_validated():
    with pytest.raises(ValueError, match="Received: channels=4"):
        decode.decode_image(encode(upright()), channels=4)


def _photo(height, width, seed=0):
    """A smooth synthetic photo: low-frequency colour waves, so JPEG scaling keeps its content."""
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    phases = np.random.default_rng(seed).uniform(0, 6, 3)
    return np.stack([127 + 100 * np.sin(7 * x + 5 * y + p) for p in phases], -1).astype(np.uint8)


def test_dct_scaled_decode_keeps_the_requested_size_once_oriented():
    data = encode(_photo(300, 400), orientation=6, quality=90)  # stored 400x300, displayed 300x400
    assert decode.decode_image_at_least(data, min_height=30, min_width=40, channels=3).shape == (38, 50, 3)
    # The displayed height is the stored width: 80 rows need 1/2 (1/4 gives 75; the stored 400 rows / 4
    # would have passed), 70 rows 1/4.
    assert decode.decode_image_at_least(data, min_height=80, min_width=40, channels=3).shape == (150, 200, 3)
    assert decode.decode_image_at_least(data, min_height=70, min_width=40, channels=3).shape == (75, 100, 3)
    assert decode.decode_image_at_least(data, min_height=300, min_width=400, channels=None).shape == (300, 400, 3)
    assert decode.decode_image_at_least(data, min_height=999, min_width=1, channels=1).shape == (300, 400, 1)
    png = encode(_photo(300, 400), "PNG")
    assert decode.decode_image_at_least(png, min_height=8, min_width=8, channels=3).shape == (300, 400, 3)
    for mode in ("L", "CMYK"):
        buffer = io.BytesIO()
        Image.fromarray(_photo(64, 80)).convert(mode).save(buffer, "JPEG")
        full = decode.decode_image(buffer.getvalue(), channels=3).numpy()
        half = decode.decode_image_at_least(buffer.getvalue(), min_height=32, min_width=32, channels=3).numpy()
        assert half.shape == (32, 40, 3) and np.abs(half.mean() - full.mean()) < 2


@pytest.mark.parametrize("crop, margin", [("none", 0), ("shorter_side", 0), ("square", 40)])
def test_working_image_is_small_and_close_to_full_decode_then_resize(crop, margin):
    data = encode(_photo(600, 800), orientation=8, quality=95)
    image, working_margin = decode.decode_working_image(data, image_size=(48, 64), crop=crop, margin=margin, channels=3)
    height, width, _ = image.shape
    assert height < 600 and width < 800 and abs(width / height - 800 / 600) < 0.02
    if crop == "square":
        assert min(height, width) - 2 * int(working_margin) == 64
        assert int(working_margin) == round(40 * 64 / (600 - 80))
    else:
        assert (height, width) == ((48, 64) if crop == "none" else (64, 85))
    reference = decode.resize_down(decode.decode_image(data, channels=3), height, width).numpy()
    assert np.abs(image.numpy().astype(int) - reference).mean() < 2.5


def test_working_size_rule():
    def size(*shape, **options):
        return tuple(int(v) for v in decode.working_size(*shape, **options))

    assert size(3000, 4000, image_size=(224, 224), crop="shorter_side") == (224, 299, 0)
    assert size(4000, 3000, image_size=(224, 100), crop="shorter_side") == (299, 224, 0)
    assert size(3000, 4000, image_size=(224, 100), crop="none") == (224, 299, 0)
    assert size(3000, 4000, image_size=(20, 400), crop="none") == (300, 400, 0)
    assert size(3000, 4000, image_size=(224, 224), crop="square", margin=8) == (226, 301, 1)
    assert size(3000, 4000, image_size=(100, 100), crop="square", margin=300) == (124, 165, 12)
    assert size(3000, 4000, image_size=(224, 224), crop="shorter_side", factor=1.5) == (336, 448, 0)
    assert size(3000, 4000, image_size=None, crop="square", margin=8) == (3000, 4000, 8)
    # Never upscaled; an image at or below its working size is kept as is (idempotent).
    assert size(100, 150, image_size=(224, 224), crop="none") == (100, 150, 0)
    assert size(240, 300, image_size=(224, 224), crop="square", margin=8) == (240, 300, 8)
    rng = np.random.default_rng(1)
    for _ in range(60):
        height, width = (int(v) for v in rng.integers(8, 5000, 2))
        target = tuple(int(v) for v in rng.integers(8, 300, 2))
        crop = ["none", "shorter_side", "square"][int(rng.integers(3))]
        margin = int(rng.integers(0, 20))
        factor = float(rng.choice([1.0, 1.15, 1.5]))
        once = size(height, width, image_size=target, crop=crop, margin=margin, factor=factor)
        assert once[0] <= height and once[1] <= width
        assert size(*once[:2], image_size=target, crop=crop, margin=once[2], factor=factor) == once
    with pytest.raises(ValueError, match="Received: crop='centre'"):
        decode.working_size(10, 10, image_size=(8, 8), crop="centre")
    with pytest.raises(ValueError, match="factor must be >= 1"):
        decode.working_size(10, 10, image_size=(8, 8), factor=0.5)


def test_image_scan_reports_the_displayed_size(tmp_path):
    from pipeline.data import image_files

    picture = _photo(24, 40)
    paths = []
    for orientation in (1, 6, 8, 3):
        paths.append(tmp_path / f"o{orientation}.jpg")
        paths[-1].write_bytes(encode(picture, orientation=orientation, quality=90))
    garbled = bytearray(encode(picture, orientation=6, quality=90))
    start = garbled.index(b"MM\0*")
    garbled[start : start + 4] = b"XX\0*"  # an unreadable EXIF: the picture is still good, as stored
    paths.append(tmp_path / "garbled.jpg")
    paths[-1].write_bytes(bytes(garbled))
    results = image_files.scan_images(paths, placeholder_colours=0, workers=2)
    assert [(r.ok, r.height, r.width) for r in results] == [(True, 24, 40)] * 4 + [(True, 40, 24)]


@pytest.mark.parametrize("subsampling", [0, 2])
def test_jpeg_pixels_match_pillow_exactly(subsampling):
    """The accurate IDCT (decode.JPEG_DCT_METHOD): every decode path gives Pillow's (libjpeg's default)
    pixels; TensorFlow's default fast IDCT differs by about a level per value on such images."""
    rng = np.random.default_rng(3)
    image = np.clip(rng.normal(128, 60, (40, 48, 3)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=75, subsampling=subsampling)
    data = buffer.getvalue()
    pillow = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    np.testing.assert_array_equal(decode.decode_image(tf.constant(data), channels=3).numpy(), pillow)
    scaled = decode.decode_image_at_least(tf.constant(data), min_height=40, min_width=48, channels=3)
    np.testing.assert_array_equal(scaled.numpy(), pillow)
    fast = tf.io.decode_image(data, channels=3).numpy()
    assert np.abs(fast.astype(int) - pillow).mean() > 0.1
