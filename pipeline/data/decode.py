"""Decoding encoded image bytes, the way viewers show them, in TensorFlow graph ops only.

Every decode path (the pre-training scan, training, evaluation, `predict` and the SavedModel's
`image_bytes` signature) decodes through this module, so they agree on two things TensorFlow's decoders
leave out:

- EXIF orientation (tensorflow/tensorflow#49834: `tf.io.decode_image` ignores it, so a phone photo
  stored as sensor pixels + Orientation=6 is used sideways). It is read with string/byte ops only, no
  `py_function`, so it runs inside tf.data and TF Serving. Honoured where browsers and Pillow's
  `ImageOps.exif_transpose` agree: the first APP1 "Exif" segment of a JPEG, and a PNG `eXIf` chunk that
  comes before the image data (the CSS images spec ignores a late one; Pillow reads it anyway).
  WebP is not oriented: its EXIF chunk follows the image data and browsers disagree on it (Firefox
  ignores it). GIF and BMP carry no EXIF.
- Reduced-scale decoding for large photos (`decode_image_at_least`, `decode_working_image`): a JPEG is
  decoded with DCT scaling (1/2, 1/4, 1/8) when that still leaves enough pixels, then brought down to
  the working size of `working_size`, so memory follows the training resolution, not the file.
- The accurate JPEG IDCT (`JPEG_DCT_METHOD`, libjpeg's JDCT_ISLOW, Pillow's and OpenCV's): TensorFlow's
  default fast one is 0.98 levels per value off on the mirror's CIFAR-10 (Pillow is matched exactly).

Sources: JPEG markers, ITU T.81 annex B; Exif 2.32 (CIPA DC-008) 4.5 (APP1, TIFF header, IFD0, tag
0x0112) and 4.6.4 table 4 (orientation values); PNG 3rd edition 11.3.3.6 (eXIf).
"""

from __future__ import annotations

import tensorflow as tf

from pipeline.data import image_header

ORIENTATION_TAG = 0x0112
_MAX_JPEG_MARKERS = 32  # segments scanned before giving up (phones write 2-6 before the image data)
_MAX_PNG_CHUNKS = 32
_MAX_IFD_ENTRIES = 64  # IFD0 entries read (cameras write ~10-20; tags are sorted, 0x0112 comes early)
_JPEG_RATIOS = (1, 2, 4, 8)
JPEG_DCT_METHOD = "INTEGER_ACCURATE"  # decoded-array caches record it (datasets.cifar10) and rebuild on change


def _bytes_at(data: tf.Tensor, size: tf.Tensor, position: tf.Tensor, count: int) -> tf.Tensor:
    """`count` bytes of `data` from `position` as int64 [count]; zeros past the end or outside the data.

    Never fails: `tf.strings.substr` raises for a position past the end, so it is clamped first, and
    `decode_raw(fixed_length=)` zero-pads a short read.
    """
    inside = (position >= 0) & (position <= size)
    start = tf.clip_by_value(position, 0, size)
    raw = tf.io.decode_raw(tf.strings.substr(data, start, tf.constant(count, tf.int64)), tf.uint8, fixed_length=count)
    return tf.where(inside, tf.cast(raw, tf.int64), tf.zeros([count], tf.int64))


def _big_endian(values: tf.Tensor) -> tf.Tensor:
    """Bytes [..., n] (int64) -> unsigned big-endian integers [...]."""
    n = values.shape[-1]
    weights = tf.constant([256 ** (n - 1 - i) for i in range(n)], tf.int64)
    return tf.reduce_sum(values * weights, axis=-1)


def _little_endian(values: tf.Tensor) -> tf.Tensor:
    return _big_endian(tf.reverse(values, [-1]))


def _equals(values: tf.Tensor, text: bytes) -> tf.Tensor:
    return tf.reduce_all(tf.equal(values, tf.constant(list(text), tf.int64)))


def _contains(data: tf.Tensor, needle: bytes) -> tf.Tensor:
    """True when the bytes `needle` occur in the string scalar `data` (one split at the first occurrence)."""
    return tf.size(tf.strings.split(data, sep=needle, maxsplit=1)) > 1


def _jpeg_exif_payload(data, size):
    """(start, length) of the TIFF data in the first APP1 "Exif\\0\\0" segment before the scan; start -1 if none."""

    def scan(index, position, start, length):
        head = _bytes_at(data, size, position, 10)  # 0xFF, marker, length (2 bytes, big-endian), "Exif\0\0"
        is_marker = tf.equal(head[0], 0xFF)
        marker, segment = head[1], _big_endian(head[2:4])
        fill = is_marker & tf.equal(marker, 0xFF)  # T.81 B.1.1.2: any marker may be preceded by 0xFF fill bytes
        # The start of scan (0xDA) ends the headers; EOI, a non-marker or a length below 2 means garbage.
        stop = ~is_marker | tf.equal(marker, 0xDA) | tf.equal(marker, 0xD9) | (position + 4 > size)
        stop |= ~fill & (segment < 2)
        found = ~stop & ~fill & tf.equal(marker, 0xE1) & (segment >= 8) & _equals(head[4:10], b"Exif\0\0")
        following = tf.where(fill, position + 1, position + 2 + segment)
        return (
            index + 1,
            tf.where(stop | found, tf.constant(-1, tf.int64), following),
            tf.where(found, position + 10, start),
            tf.where(found, segment - 8, length),
        )

    _, _, start, length = tf.while_loop(
        lambda index, position, start, length: (index < _MAX_JPEG_MARKERS) & (position >= 0),
        scan,
        (tf.constant(0), tf.constant(2, tf.int64), tf.constant(-1, tf.int64), tf.constant(0, tf.int64)),
    )
    return start, length


def _png_exif_payload(data, size):
    """(start, length) of the first `eXIf` chunk's data before IDAT; start -1 if none."""

    def scan(index, position, start, length):
        head = _bytes_at(data, size, position, 8)  # length (4 bytes, big-endian), chunk type
        chunk_length, kind = _big_endian(head[:4]), head[4:8]
        stop = (position + 8 > size) | _equals(kind, b"IDAT") | _equals(kind, b"IEND")
        found = ~stop & _equals(kind, b"eXIf")
        following = position + 12 + chunk_length  # length, type, data, CRC
        return (
            index + 1,
            tf.where(stop | found, tf.constant(-1, tf.int64), following),
            tf.where(found, position + 8, start),
            tf.where(found, chunk_length, length),
        )

    _, _, start, length = tf.while_loop(
        lambda index, position, start, length: (index < _MAX_PNG_CHUNKS) & (position >= 0),
        scan,
        (tf.constant(0), tf.constant(8, tf.int64), tf.constant(-1, tf.int64), tf.constant(0, tf.int64)),
    )
    # Pillow's Exif.load accepts an optional "Exif\0\0" before the TIFF header in any container.
    prefixed = _equals(_bytes_at(data, size, start, 6), b"Exif\0\0") & (start >= 0)
    return tf.where(prefixed, start + 6, start), tf.where(prefixed, length - 6, length)


def _tiff_orientation(data, size, start, length):
    """Tag 0x0112 of IFD0 of the TIFF structure at data[start:start + length]; 1 when absent or invalid."""
    end = tf.minimum(start + length, size)  # a truncated segment: read what is there
    header = _bytes_at(data, size, start, 8)
    little = _equals(header[:4], b"II*\0")
    valid = (start >= 0) & (start + 8 <= end) & (little | _equals(header[:4], b"MM\0*"))

    def number(values):
        return tf.where(little, _little_endian(values), _big_endian(values))

    ifd = start + number(header[4:8])
    count = number(_bytes_at(data, size, ifd, 2))
    valid &= (ifd + 2 <= end) & (number(header[4:8]) >= 8)
    entries = tf.reshape(_bytes_at(data, size, ifd + 2, 12 * _MAX_IFD_ENTRIES), [_MAX_IFD_ENTRIES, 12])
    index = tf.range(_MAX_IFD_ENTRIES, dtype=tf.int64)
    present = (index < count) & (ifd + 2 + 12 * (index + 1) <= end)
    tag, kind, values = number(entries[:, 0:2]), number(entries[:, 2:4]), number(entries[:, 4:8])
    # A SHORT is left-justified in the 4-byte value field (TIFF 6.0 p. 15); a few writers use LONG.
    value = tf.where(tf.equal(kind, 3), number(entries[:, 8:10]), number(entries[:, 8:12]))
    match = present & tf.equal(tag, ORIENTATION_TAG) & (tf.equal(kind, 3) | tf.equal(kind, 4)) & tf.equal(values, 1)
    first = tf.argmax(tf.cast(match, tf.int32), output_type=tf.int64)
    orientation = tf.where(valid & tf.reduce_any(match), value[first], 1)
    return tf.cast(tf.where((orientation >= 1) & (orientation <= 8), orientation, 1), tf.int32)


# A traced function: eagerly (the scan of image files) the loops would otherwise run op by op (~100 ms
# a file instead of ~1 ms); inside tf.data or a SavedModel it is one function call.
# No AutoGraph: the loops and branches are written as tf.while_loop / tf.cond already, and converting the
# call tree took 3 s of every training start (py-spy, 100,000-file folder).
@tf.function(input_signature=[tf.TensorSpec([], tf.string)], autograph=False)
def exif_orientation(encoded: tf.Tensor) -> tf.Tensor:
    """The EXIF orientation of encoded image bytes: int32 scalar in 1..8.

    1 (stored upright) for formats without EXIF, files without the tag, and any malformed or truncated
    EXIF: hostile bytes never raise. Graph-safe (tf.data, tf.function, SavedModel: no py_function),
    cheap (reads under 1 KB, wherever the file's segments put it).

    Args:
        encoded: tf.string scalar, the whole file.
    Returns:
        int32 scalar: 1 upright, 2 mirrored, 3 rotated 180, 4 flipped, 5 transposed, 6 stored rotated
        90 CCW (display rotates it 90 CW), 7 transversed, 8 stored rotated 90 CW (Exif 2.32 table 4).
    """
    size = tf.cast(tf.strings.length(encoded), tf.int64)
    magic = _bytes_at(encoded, size, tf.constant(0, tf.int64), 8)
    # As in `exif_orientation_of`: a JPEG without "Exif\0\0" or a PNG without "eXIf" anywhere cannot hold the
    # tag, and one byte search spares the segment walk (a loop of small ops, ~0.3 ms of CPU an image, 70% of
    # a served LeNet request's graph: benchmarks/RESULTS.md, "Serving over HTTP", second round).
    is_jpeg = _equals(magic[:3], b"\xff\xd8\xff") & _contains(encoded, b"Exif\0\0")
    is_png = _equals(magic, b"\x89PNG\r\n\x1a\n") & _contains(encoded, b"eXIf")

    def tiff_of(locate):
        return lambda: _tiff_orientation(encoded, size, *locate(encoded, size))

    return tf.cond(
        is_jpeg,
        tiff_of(_jpeg_exif_payload),
        lambda: tf.cond(is_png, tiff_of(_png_exif_payload), lambda: tf.constant(1, tf.int32)),
    )


def exif_orientation_of(data: bytes) -> int:
    """`exif_orientation` for Python bytes (eager callers such as the image scan), 1..8.

    The same answer, without running TensorFlow for files that cannot hold the tag: a JPEG without the
    bytes "Exif\\0\\0" or a PNG without an "eXIf" chunk name anywhere is upright (most photos outside
    phones and cameras), and other formats are not oriented.
    """
    if image_header.may_hold_orientation(data):
        return int(exif_orientation(tf.constant(data)))
    return 1


def swaps_axes(orientation) -> tf.Tensor:
    """True for orientations 5-8, whose displayed height is the stored width."""
    return tf.convert_to_tensor(orientation) >= 5


def apply_orientation(image: tf.Tensor, orientation) -> tf.Tensor:
    """Turns stored pixels into the picture as displayed, as `PIL.ImageOps.exif_transpose` does.

    Args:
        image: [H, W, C] tensor of any dtype.
        orientation: int scalar (tensor or int) 1..8 from `exif_orientation`; other values leave it as is.
    Returns:
        [H, W, C], or [W, H, C] for orientations 5-8.
    """
    orientation = tf.convert_to_tensor(orientation, tf.int32)
    image = tf.convert_to_tensor(image)

    def transform():
        # Every orientation is an optional transpose followed by optional flips (Exif 2.32 table 4).
        transposed = tf.cond(orientation >= 5, lambda: tf.transpose(image, [1, 0, 2]), lambda: image)
        flip_rows = tf.reduce_any(tf.equal(orientation, [3, 4, 7, 8]))
        flip_columns = tf.reduce_any(tf.equal(orientation, [2, 3, 6, 7]))
        axes = tf.boolean_mask(tf.constant([0, 1]), tf.stack([flip_rows, flip_columns]))
        return tf.reverse(transposed, axes)

    channels = image.shape[-1]
    oriented = tf.cond((orientation > 1) & (orientation <= 8), transform, lambda: image)
    return tf.ensure_shape(oriented, [None, None, channels])


def convert_channels(image: tf.Tensor, channels: int | None) -> tf.Tensor:
    """[..., H, W, C] with C in 1..4 -> [..., H, W, channels]: grey <-> RGB, alpha dropped. The one channel
    conversion: decoded files, the eval transform, serving signatures that accept any channel count.

    channels None keeps grey or RGB (dropping alpha). RGB -> grey uses `tf.image.rgb_to_grayscale`'s
    weights (ITU-R BT.601), computed in float and rounded back for integer dtypes. When C is known
    statically the conversion is decided now (the input itself is returned when nothing changes);
    otherwise at run time (`tf.cond`).

    Raises:
        ValueError: channels is not None, 1 or 3 (an image of unknown rank is taken as [H, W, C]).
    """
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be None, 1 or 3. Received: channels={channels!r}")
    image = tf.convert_to_tensor(image)
    if image.shape.rank is not None and image.shape[-1] is not None:
        return _convert_known_channels(image, image.shape[-1], channels)
    if image.shape.rank is None:
        image = tf.ensure_shape(image, [None, None, None])
    known = [None] * (image.shape.rank - 1)
    has_colour = tf.shape(image)[-1] >= 3
    # Slices inside the branches: in eager mode both sides of a cond are not built, only the taken one.
    colour = lambda: tf.ensure_shape(image[..., :3], known + [3])
    grey = lambda: tf.ensure_shape(image[..., :1], known + [1])
    if channels == 1:
        dtype = image.dtype

        def to_grey():
            converted = tf.image.rgb_to_grayscale(tf.cast(colour(), tf.float32))
            return tf.cast(tf.round(converted), dtype) if dtype.is_integer else converted

        return tf.cond(has_colour, to_grey, grey)
    if channels == 3:
        return tf.cond(has_colour, colour, lambda: tf.image.grayscale_to_rgb(grey()))
    return tf.cond(has_colour, colour, grey)


def _convert_known_channels(image: tf.Tensor, source: int, channels: int | None) -> tf.Tensor:
    """`convert_channels` for a channel count `source` known when the graph is built."""
    if source in (2, 4):  # grey+alpha or RGBA: drop alpha
        image, source = image[..., : source - 1], source - 1
    if channels is None or source == channels:
        return image
    if source == 1:
        return tf.image.grayscale_to_rgb(image)
    dtype = image.dtype
    grey = tf.image.rgb_to_grayscale(tf.cast(image, tf.float32))
    return tf.cast(tf.round(grey), dtype) if dtype.is_integer else grey


def decode_image(encoded: tf.Tensor, *, channels: int | None, orient: bool = True) -> tf.Tensor:
    """Encoded JPEG/PNG/GIF/BMP/WebP bytes -> uint8 [H, W, channels], oriented as viewers show it.

    The first frame of an animated GIF; 16-bit PNGs scaled to 8 bits; alpha dropped (see
    `convert_channels`). Works on unknown shapes inside tf.data, tf.function and SavedModels.

    Args:
        encoded: tf.string scalar, the whole file.
        channels: 1, 3, or None to keep grey or RGB.
        orient: apply the EXIF orientation (`exif_orientation`); False decodes the stored pixels.
    Raises:
        tf.errors.InvalidArgumentError (when run): the bytes are not a decodable image.
    """
    image = convert_channels(decode_native(encoded), channels)
    return apply_orientation(image, exif_orientation(encoded)) if orient else image


def decode_native(encoded) -> tf.Tensor:
    """Encoded bytes -> uint8 [H, W, C] as stored (the file's channels, not oriented): the one decoder
    behind every path (JPEG with `JPEG_DCT_METHOD`). Raises as `decode_image`."""
    encoded = tf.convert_to_tensor(encoded, tf.string)
    return tf.cond(_is_jpeg(encoded), lambda: _decode_jpeg(encoded), lambda: _decode_other(encoded))


def _is_jpeg(encoded: tf.Tensor) -> tf.Tensor:
    return tf.equal(tf.strings.substr(encoded, 0, 3), b"\xff\xd8\xff")


def _decode_jpeg(encoded: tf.Tensor, ratio: int = 1) -> tf.Tensor:
    return tf.ensure_shape(tf.io.decode_jpeg(encoded, ratio=ratio, dct_method=JPEG_DCT_METHOD), [None, None, None])


def _decode_other(encoded: tf.Tensor) -> tf.Tensor:
    return tf.ensure_shape(tf.io.decode_image(encoded, channels=0, expand_animations=False), [None, None, None])


def _decode_scaled(encoded, min_height, min_width, orientation):
    """(stored pixels, DCT ratio): JPEGs at the largest ratio keeping >= the minimum size once oriented."""
    encoded = tf.convert_to_tensor(encoded, tf.string)

    def jpeg():
        shape = tf.io.extract_jpeg_shape(encoded)
        # Orientations 5-8 display the stored width as the height.
        need_height = tf.where(swaps_axes(orientation), min_width, min_height)
        need_width = tf.where(swaps_axes(orientation), min_height, min_width)
        # libjpeg's scaled output is ceil(size / ratio) on each side (jdiv_round_up in jdmaster.c).
        index = tf.constant(0)
        for position, ratio in enumerate(_JPEG_RATIOS[1:], start=1):
            fits = ((shape[0] + ratio - 1) // ratio >= need_height) & ((shape[1] + ratio - 1) // ratio >= need_width)
            index = tf.where(fits, position, index)
        branches = [lambda ratio=ratio: _decode_jpeg(encoded, ratio) for ratio in _JPEG_RATIOS]
        return tf.switch_case(index, branches), tf.gather(tf.constant(_JPEG_RATIOS), index)

    def other():
        return _decode_other(encoded), tf.constant(1)

    return tf.cond(_is_jpeg(encoded), jpeg, other)


def decode_image_at_least(
    encoded: tf.Tensor, *, min_height, min_width, channels: int | None, orient: bool = True
) -> tf.Tensor:
    """Like `decode_image`, but a JPEG is decoded at 1/2, 1/4 or 1/8 scale (DCT scaling) when the result,
    once oriented, still has >= min_height rows and >= min_width columns; other formats at full size.

    A 4000x3000 photo needed at 224 pixels decodes at 1/8 (500x375x3, 0.5 MiB instead of 34 MiB) in
    about a quarter of the time (`benchmarks/jpeg_scaled_decode.py`: 183 ms vs 746 ms on a loaded 2-core
    machine; peak RSS +8 MiB vs +148 MiB).

    Args: encoded, a tf.string scalar; min_height, min_width: ints (or int32 scalar tensors), the size
        needed as displayed; channels, orient: as in `decode_image`.
    Returns:
        uint8 [H, W, channels] with H >= min(min_height, full height), W likewise.
    """
    orientation = exif_orientation(encoded) if orient else tf.constant(1)
    image, _ = _decode_scaled(encoded, tf.cast(min_height, tf.int32), tf.cast(min_width, tf.int32), orientation)
    return apply_orientation(convert_channels(image, channels), orientation)


def working_size(height, width, *, image_size, crop: str = "none", margin=0, factor: float = 1.0):
    """The smallest size an image can be brought down to before caching and shuffling, keeping what
    the training crop needs. A pure function of its arguments.

    Rule (T = ceil(target * factor), never upscaled, aspect ratio kept up to rounding):
    - crop "none" (whole image resized to image_size): both sides stay >= (T_height, T_width); the
      binding side becomes exactly its T.
    - crop "shorter_side" (shorter side resized to max(image_size), then a random window): the shorter
      side becomes T = ceil(max(image_size) * factor).
    - crop "square" (random square of side min(H, W) - 2 * margin, then resized): that square's side
      becomes T = ceil(max(image_size) * factor); the margin scales with the image (rounded), and the
      returned margin is the one to crop the working image with.
    - image_size None: nothing to bring down to; the size is kept.
    With factor 1 the crop is taken at exactly the resolution the model sees, so the later resize to
    image_size is an identity; augmentation (flip, shift, rotation, zoom) runs after it, at image_size.
    An image already at or below its working size is returned unchanged (so the rule is idempotent and
    small datasets see exactly today's pipeline).

    Args:
        height, width: the image as displayed (ints or int scalar tensors).
        image_size: (height, width) of the model input, or None.
        crop: "none", "square" or "shorter_side" (`input.crop.mode`).
        margin: the square crop's margin in this image's pixels (may be fractional after DCT scaling).
        factor: >= 1, headroom above the model resolution.
    Returns:
        (height, width, margin) as int32 scalar tensors.
    Raises:
        ValueError: unknown crop mode or factor < 1.
    """
    if crop not in ("none", "square", "shorter_side"):
        raise ValueError(f"crop must be none, square or shorter_side. Received: crop={crop!r}")
    if factor < 1:
        raise ValueError(f"factor must be >= 1 (never below the model resolution). Received: factor={factor}")
    height, width = tf.cast(height, tf.float64), tf.cast(width, tf.float64)
    margin = tf.cast(margin, tf.float64)
    unchanged = tuple(tf.cast(tf.round(v), tf.int32) for v in (height, width, margin))
    if image_size is None:
        return unchanged
    needed = [tf.constant(-(-int(side) * factor // 1), tf.float64) for side in image_size]  # ceil(side * factor)
    if crop == "none":
        scale = tf.maximum(needed[0] / height, needed[1] / width)
        by_height = needed[0] / height >= needed[1] / width
        new_height = tf.where(by_height, needed[0], tf.maximum(needed[0], tf.round(height * scale)))
        new_width = tf.where(by_height, tf.maximum(needed[1], tf.round(width * scale)), needed[1])
        new_margin = margin
    else:
        side = tf.maximum(needed[0], needed[1])
        shorter, longer = tf.minimum(height, width), tf.maximum(height, width)
        if crop == "shorter_side":
            scale = side / shorter
            new_margin = margin
            new_shorter = side
        else:
            cropped = tf.maximum(shorter - 2 * margin, 1.0)
            scale = side / cropped
            new_margin = tf.round(margin * scale)
            new_shorter = side + 2 * new_margin
        new_longer = tf.maximum(new_shorter, tf.round(longer * new_shorter / shorter))
        new_height = tf.where(height <= width, new_shorter, new_longer)
        new_width = tf.where(height <= width, new_longer, new_shorter)
    reduced = tuple(tf.cast(v, tf.int32) for v in (new_height, new_width, new_margin))
    keep = scale >= 1.0
    return tuple(tf.where(keep, old, new) for old, new in zip(unchanged, reduced))


def resize_down(image: tf.Tensor, height, width) -> tf.Tensor:
    """uint8 [H, W, C] -> uint8 [height, width, C] by area averaging (antialiased); unchanged if same size."""
    shape = tf.shape(image)
    same = tf.equal(shape[0], height) & tf.equal(shape[1], width)

    def shrink():
        # float input: oneDNN logs an error line for uint8 resizes on CPUs without AVX-512
        resized = tf.image.resize(tf.cast(image, tf.float32), tf.stack([height, width]), method="area")
        return tf.cast(tf.round(tf.clip_by_value(resized, 0.0, 255.0)), image.dtype)

    return tf.ensure_shape(tf.cond(same, lambda: image, shrink), [None, None, image.shape[-1]])


def decode_working_image(
    encoded: tf.Tensor,
    *,
    image_size,
    crop: str = "none",
    margin: int = 0,
    channels: int | None,
    factor: float = 1.0,
    orient: bool = True,
):
    """Decodes at reduced scale where possible and brings the image down to its `working_size`.

    What the training pipeline caches and shuffles: memory per image follows image_size, not the file.

    Args: encoded, a tf.string scalar; image_size, crop, margin, factor: as in `working_size` (margin in
        the file's pixels); channels, orient: as in `decode_image`.
    Returns:
        (image, margin): uint8 [h, w, channels] at the working size, and the int32 scalar margin to give
        the square crop on that image (the file's margin scaled with the image).
    """
    if image_size is None:
        return decode_image(encoded, channels=channels, orient=orient), tf.constant(int(margin), tf.int32)
    orientation = exif_orientation(encoded) if orient else tf.constant(1)
    side = -(-max(int(v) for v in image_size) * factor // 1)
    if crop == "none":
        minimum = [int(-(-int(v) * factor // 1)) for v in image_size]
    elif crop == "shorter_side":
        minimum = [int(side)] * 2
    else:  # the margin shrinks with the image: keeping it whole is a safe lower bound at any ratio
        minimum = [int(side) + 2 * int(margin)] * 2
    image, ratio = _decode_scaled(encoded, minimum[0], minimum[1], orientation)
    image = apply_orientation(convert_channels(image, channels), orientation)
    shape = tf.shape(image)
    height, width, new_margin = working_size(
        shape[0],
        shape[1],
        image_size=image_size,
        crop=crop,
        margin=tf.cast(margin, tf.float64) / tf.cast(ratio, tf.float64),
        factor=factor,
    )
    return resize_down(image, height, width), new_margin
