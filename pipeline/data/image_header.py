"""Decompression bombs refused before decoding: the pixel count an image's header promises, read from its
first bytes. Standard library only, so every decode path (the scan, the data tools, `predict`) checks the same
way before TensorFlow allocates anything.

A PNG of a few hundred kilobytes can declare 30,000 x 30,000 pixels: 2.7 GB once decoded to RGB. Pillow
refuses images over `Image.MAX_IMAGE_PIXELS` (89,478,485: "a quarter of a gigabyte" of 24-bit pixels) for
this reason (CVE-2014-9601 and its kin); TensorFlow's decoders allocate whatever the header says. The same
default here; `dataset.max_image_pixels` changes it for training.

Sizes are read as the decoders read them: JPEG's frame header (SOFn), PNG's IHDR, GIF's logical screen,
BMP's info header, WebP's VP8/VP8L/VP8X header.
"""

from __future__ import annotations

import struct

DEFAULT_MAX_PIXELS = 89_478_485  # PIL.Image.MAX_IMAGE_PIXELS (Pillow 13), as a number: no Pillow import
HEADER_BYTES = 1 << 16  # enough for every header above; a JPEG's SOF may follow tens of KB of EXIF/ICC
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_MAX_JPEG_SEGMENTS = 256


def dimensions(head: bytes) -> tuple[int, int] | None:
    """(width, height) as an image's header states it, or None when the format is not one we decode or
    the header is cut short (the decoder then reports the file as corrupt).

    Args:
        head: the file's first bytes (`HEADER_BYTES` suffice; a JPEG whose metadata is longer gives None).
    """
    try:
        if head.startswith(b"\xff\xd8"):
            return _jpeg(head)
        if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
            return struct.unpack(">II", head[16:24])
        if head[:6] in (b"GIF87a", b"GIF89a"):
            return struct.unpack("<HH", head[6:10])
        if head.startswith(b"BM"):
            if struct.unpack("<I", head[14:18])[0] == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
                return struct.unpack("<HH", head[18:22])
            width, height = struct.unpack("<ii", head[18:26])
            return abs(width), abs(height)  # a negative height is a top-down bitmap
        if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
            return _webp(head)
    except struct.error:
        return None
    return None


def jpeg_frame(head: bytes) -> tuple[int, int, int, int, int] | None:
    """(SOF marker, sample precision, height, width, components) from a JPEG's frame header (ITU T.81
    B.2.2), or None when the headers end, break or reach the scan before a frame header. Fill bytes
    (B.1.1.2) and markers without a length (SOI, TEM, RSTn) are stepped over."""
    position, size = 2, len(head)
    for _ in range(_MAX_JPEG_SEGMENTS):
        if position + 4 > size or head[position] != 0xFF:
            return None
        marker = head[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            position += 2
            continue
        if marker in (0xDA, 0xD9):  # the scan or the end came first
            return None
        length = struct.unpack(">H", head[position + 2 : position + 4])[0]
        if marker in _JPEG_SOF:
            if length < 8 or position + 10 > size:
                return None
            frame = head[position + 4 : position + 10]
            return marker, frame[0], int.from_bytes(frame[1:3], "big"), int.from_bytes(frame[3:5], "big"), frame[5]
        if length < 2:
            return None
        position += 2 + length
    return None


def _jpeg(head: bytes) -> tuple[int, int] | None:
    frame = jpeg_frame(head)
    return None if frame is None else (frame[3], frame[2])  # (width, height)


def _webp(head: bytes) -> tuple[int, int] | None:
    chunk = head[12:16]
    if chunk == b"VP8X":  # extended: 24-bit canvas size minus one
        return int.from_bytes(head[24:27], "little") + 1, int.from_bytes(head[27:30], "little") + 1
    if chunk == b"VP8L":  # lossless: 14-bit sizes minus one, after the 0x2f signature
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 ":  # lossy: 14-bit sizes after the key frame's start code
        width, height = struct.unpack("<HH", head[26:30])
        return width & 0x3FFF, height & 0x3FFF
    return None


def too_many_pixels(
    head: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, key: str = "dataset.max_image_pixels"
) -> str | None:
    """The reason an image must not be decoded (its header promises more than `max_pixels` pixels), or None.

    Args:
        head: the file's first bytes (at least `HEADER_BYTES` when the file is that long).
        max_pixels: the limit (width x height); None or 0: no limit.
        key: the setting that raises the limit, named in the reason.
    """
    size = dimensions(head) if max_pixels else None
    if size is None or size[0] * size[1] <= max_pixels:
        return None
    width, height = size
    return (
        f"too many pixels: its header promises {width}x{height} = {width * height / 1e6:,.1f} megapixels, over "
        f"the limit of {max_pixels / 1e6:,.1f} megapixels (a decompression bomb? else raise {key}); not decoded"
    )


def may_hold_orientation(data: bytes) -> bool:
    """False when a file cannot carry an EXIF orientation tag: a JPEG without the bytes "Exif\\0\\0", a PNG
    without an "eXIf" chunk name anywhere, any other format (most photos outside phones and cameras). The
    scan then needs no TensorFlow for the orientation (`decode.exif_orientation_of` reads the tag)."""
    return (data[:3] == b"\xff\xd8\xff" and b"Exif\0\0" in data) or (
        data[:8] == b"\x89PNG\r\n\x1a\n" and b"eXIf" in data
    )
