"""The pre-training scan's fast path for JPEGs (issue 24): a reduced-scale decode that still reads every
coefficient, and the placeholder check's thumbnail without a TensorFlow op per file. `image_files.check_image`
uses it; any JPEG it does not vouch for is decoded by TensorFlow there.

Sources: ITU T.81 (JPEG) B.1.1.2 (fill bytes), B.2.2 (frame header), table B.1 (markers); libjpeg's DCT
scaling through Pillow's `Image.draft`.
"""

from __future__ import annotations

import dataclasses

from pipeline.data.image_header import jpeg_frame  # the one JPEG header reader

THUMBNAIL = 64  # side of the nearest-neighbour thumbnail whose colours the placeholder check counts
_JPEG_FAST_FRAMES = (0xC0, 0xC1, 0xC2)  # baseline, extended and progressive Huffman frames (T.81 table B.1)


@dataclasses.dataclass
class ReducedJpeg:
    full_size: tuple[int, int]  # (height, width) as stored, from the frame header
    channels: int
    pixels: object  # uint8 numpy [h, w, channels] at reduced scale, or None when no thumbnail was asked for


def decode(data: bytes, *, thumbnail: bool) -> ReducedJpeg | None:
    """Decodes a common JPEG with libjpeg's DCT scaling (Pillow's `draft`): every scan's entropy-coded data
    is still read, so truncation and corrupt coefficients are found as by a full decode, while the inverse
    DCT and colour conversion run on 1/4 to 1/64 of the pixels: 1.15 ms of CPU per 500x375 photo instead of
    1.71 ms through TensorFlow's full decode (`benchmarks/scan_speed.py`, RESULTS.md).

    Returns None, so that the caller decodes with TensorFlow (the verdict and its message then come from
    training's decoder), for anything this path does not vouch for: a file Pillow refuses, a frame other
    than 8-bit Huffman baseline/progressive with 1 or 3 components (arithmetic, lossless, 12-bit, CMYK),
    a height given later (DNL). Equal verdicts to TensorFlow's full decode on truncated and corrupted
    JPEGs are tested (tests/data/test_fast_scan.py).

    Args:
        thumbnail: keep the pixels at a scale with >= THUMBNAIL pixels on each side where the image has
            them (the placeholder check's thumbnail); False decodes at the smallest scale, 1/8.
    """
    frame = jpeg_frame(data)
    if frame is None or frame[0] not in _JPEG_FAST_FRAMES or frame[1] != 8 or frame[4] not in (1, 3):
        return None
    if frame[2] == 0 or frame[3] == 0:
        return None
    import io

    import numpy as np
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data), formats=["JPEG"]) as image:
            if image.mode not in ("L", "RGB") or image.size != (frame[3], frame[2]):
                return None
            image.draft(image.mode, (THUMBNAIL, THUMBNAIL) if thumbnail else (1, 1))
            image.load()  # OSError "image file is truncated" when the data ends early
            pixels = np.asarray(image).reshape(image.size[1], image.size[0], -1) if thumbnail else None
    except Exception:  # any refusal is re-checked by TensorFlow, which names the fault
        return None
    return ReducedJpeg((frame[2], frame[3]), frame[4], pixels)


def thumbnail(pixels):
    """uint8 [H, W, C] -> [THUMBNAIL, THUMBNAIL, C] by nearest neighbour at pixel centres (the sampling of
    `tf.image.resize(method="nearest")`), without a TensorFlow op per file."""
    import numpy as np

    height, width = pixels.shape[:2]
    rows = np.minimum(((np.arange(THUMBNAIL) + 0.5) * height / THUMBNAIL).astype(np.int64), height - 1)
    columns = np.minimum(((np.arange(THUMBNAIL) + 0.5) * width / THUMBNAIL).astype(np.int64), width - 1)
    return pixels[rows][:, columns]
