"""Finding image files and checking that each one decodes, in parallel, with a cached result.

Images are recognised by content (magic bytes), not by extension. The check decodes with
`decode.decode_native`, the decoder training and the exported SavedModel use, so "good" means "the pipeline can
read it". Decision on decodable files with a misleading name (a GIF named `.jpg`): they are good images
and are used; `check` lists them as a warning, because the name is wrong, not the content.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import errno
import hashlib
import json
import os
import stat
import sys
from pathlib import Path

from pipeline.core.fileio import atomic_write_json

DECODABLE = {"jpeg": "JPEG", "png": "PNG", "gif": "GIF", "bmp": "BMP", "webp": "WebP"}
EXTENSIONS = {".jpg": "jpeg", ".jpeg": "jpeg", ".png": "png", ".gif": "gif", ".bmp": "bmp", ".webp": "webp"}


def sniff_format(head: bytes) -> str | None:
    """The image format named by a file's first bytes: a DECODABLE key, another format's name, or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head.startswith(b"BM"):
        return "bmp"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if head[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypavif"):
        return "HEIC/AVIF"
    if head[:4] == b"\x00\x00\x01\x00":
        return "ICO"
    if head.startswith((b"\xff\x0a", b"\x00\x00\x00\x0cJXL \r\n\x87\n")):  # codestream, container
        return "JPEG XL"
    if head[:4] == b"8BPS":
        return "PSD"
    if head[:4] == b"%PDF":
        return "PDF"
    return None


def _describe_non_image(head: bytes) -> str:
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in text[:512]:
        return "not an image (HTML page)"
    if text.startswith(b"<svg") or b"<svg" in text[:512]:
        return "unsupported format (SVG)"
    try:
        head.decode("utf-8")
        return "not an image (text)"
    except UnicodeDecodeError:
        return "not an image (unknown binary format)"


@dataclasses.dataclass
class ImageCheck:
    """Result of checking one file. `reason` is None for a good image; `warning` flags a good but odd one."""

    path: str
    reason: str | None = None
    format: str | None = None
    height: int = 0
    width: int = 0
    channels: int = 0
    colours: int = 0
    warning: str | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None


def _os_reason(error: OSError) -> str:
    if error.errno == errno.ELOOP:
        return "unreadable: symbolic link loop"
    if error.errno == errno.ENOENT:
        return "unreadable: broken symbolic link or missing file"
    if error.errno in (errno.EACCES, errno.EPERM):
        return "unreadable: permission denied"
    if error.errno == errno.EISDIR:
        return "unreadable: is a directory"
    return f"unreadable: {error.strerror or error}"


def check_image(path: os.PathLike, *, min_size: int = 8, placeholder_colours: int = 64) -> ImageCheck:
    """Reads and decodes one file.

    Args:
        min_size: images whose shorter side is below this are bad ("too small").
        placeholder_colours: a decodable RGB image with fewer distinct colours than this, at a 64x64
            thumbnail, gets a warning: real photos have hundreds; "image not found" placeholders a few.
    """
    import numpy as np

    from pipeline.data import decode

    result = ImageCheck(str(path))
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO or device would block or never end
            result.reason = "not a regular file"
            return result
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        result.reason = _os_reason(error)
        return result
    if not data:
        result.reason = "empty file (0 bytes)"
        return result
    kind = sniff_format(data[:64])
    if kind is None:
        result.reason = _describe_non_image(data[:1024])
        return result
    if kind not in DECODABLE:
        result.reason = f"unsupported format ({kind})"
        return result
    result.format = kind
    if kind == "bmp" and len(data) > 30 and int.from_bytes(data[28:30], "little") <= 8 and not _grey_bmp_palette(data):
        # TensorFlow's BMP decoder ignores the colour table and returns palette indices as grey levels.
        result.reason = "unsupported format (palette BMP: its colours would be misread; convert it to PNG)"
        return result
    # JPEGs: a reduced-scale decode (`_decode_jpeg_reduced`), which reads every coefficient as the full decode
    # does; a file it refuses is decoded by TensorFlow below, so every "bad" verdict and its message come
    # from the decoder training uses.
    image = _decode_jpeg_reduced(data, thumbnail=bool(placeholder_colours)) if kind == "jpeg" else None
    if image is not None:
        result.height, result.width = image.full_size
        result.channels = image.channels
        pixels = image.pixels
    else:
        import tensorflow as tf

        try:
            # The decoder of every decode path, before its channel conversion: the native channel count.
            pixels = decode.decode_native(data).numpy()
        except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as error:
            message = str(error).split("\n")[0].split("}}")[-1].strip().split(" [Op:")[0]
            result.reason = f"truncated or corrupt {DECODABLE[kind]} ({message})"
            return result
        result.height, result.width, result.channels = (int(v) for v in pixels.shape)
    if decode.exif_orientation_of(data) >= 5:
        # The size as displayed (EXIF orientation 5-8); the pixels need not be turned for this check.
        result.height, result.width = result.width, result.height
    if min(result.height, result.width) < min_size:
        result.reason = f"too small ({result.width}x{result.height} pixels; the shorter side must be >= {min_size})"
        return result
    extension = EXTENSIONS.get(Path(path).suffix.lower())
    if extension and extension != kind:
        result.warning = f"{DECODABLE[kind]} content named {Path(path).suffix} (used as {DECODABLE[kind]})"
    if result.channels >= 3 and placeholder_colours:
        thumbnail = _thumbnail(pixels[..., :3]).reshape(-1, 3)
        # Colours packed into one 24-bit integer each: np.unique(axis=0) on the rows sorts them as
        # structured records, 6x slower (3 ms of a 500x375 JPEG's ~6 ms check).
        # Then sorted and the changes counted: numpy 2's hashing `np.unique` takes 0.7 ms for these 4,096 values.
        packed = np.sort(thumbnail.astype(np.uint32) @ np.array([1 << 16, 1 << 8, 1], np.uint32))
        result.colours = 1 + int(np.count_nonzero(packed[1:] != packed[:-1]))
        if result.colours < placeholder_colours:
            note = f"only {result.colours} colours: may be a placeholder, not a photo"
            result.warning = f"{result.warning}; {note}" if result.warning else note
    return result


THUMBNAIL = 64  # side of the nearest-neighbour thumbnail whose colours the placeholder check counts
_JPEG_FAST_FRAMES = (0xC0, 0xC1, 0xC2)  # baseline, extended and progressive Huffman frames (T.81 table B.1)
_MAX_JPEG_SEGMENTS = 256  # header segments walked before the frame header (cameras write ~10)


def _jpeg_frame(data: bytes) -> tuple[int, int, int, int, int] | None:
    """(SOF marker, sample precision, height, width, components) from a JPEG's frame header (ITU T.81
    B.2.2), or None when the headers end, break or hold no frame header before the scan."""
    position, size = 2, len(data)
    for _ in range(_MAX_JPEG_SEGMENTS):
        if position + 4 > size or data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte (B.1.1.2)
            position += 1
            continue
        if marker in (0xDA, 0xD9):  # the scan or the end came first
            return None
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if length < 8 or position + 10 > size:
                return None
            frame = data[position + 4 : position + 10]
            return marker, frame[0], int.from_bytes(frame[1:3], "big"), int.from_bytes(frame[3:5], "big"), frame[5]
        if length < 2:
            return None
        position += 2 + length
    return None


@dataclasses.dataclass
class _ReducedJpeg:
    full_size: tuple[int, int]  # (height, width) as stored, from the frame header
    channels: int
    pixels: object  # uint8 numpy [h, w, channels] at reduced scale, or None when no thumbnail was asked for


def _decode_jpeg_reduced(data: bytes, *, thumbnail: bool) -> _ReducedJpeg | None:
    """Decodes a common JPEG with libjpeg's DCT scaling (Pillow's `draft`): every scan's entropy-coded data
    is still read, so truncation and corrupt coefficients are found as by a full decode, while the inverse
    DCT and colour conversion run on 1/4 to 1/64 of the pixels: 1.15 ms of CPU per 500x375 photo instead of
    1.71 ms through TensorFlow's full decode (`benchmarks/scan_speed.py`, RESULTS.md).

    Returns None, so that the caller decodes with TensorFlow (the verdict and its message then come from
    training's decoder), for anything this path does not vouch for: a file Pillow refuses, a frame other
    than 8-bit Huffman baseline/progressive with 1 or 3 components (arithmetic, lossless, 12-bit, CMYK),
    a height given later (DNL). Equal verdicts to TensorFlow's full decode on truncated and corrupted
    JPEGs are tested (tests/test_fast_scan.py).

    Args:
        thumbnail: keep the pixels at a scale with >= THUMBNAIL pixels on each side where the image has
            them (the placeholder check's thumbnail); False decodes at the smallest scale, 1/8.
    """
    frame = _jpeg_frame(data)
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
    return _ReducedJpeg((frame[2], frame[3]), frame[4], pixels)


def _thumbnail(pixels):
    """uint8 [H, W, C] -> [THUMBNAIL, THUMBNAIL, C] by nearest neighbour at pixel centres (the sampling of
    `tf.image.resize(method="nearest")`), without a TensorFlow op per file."""
    import numpy as np

    height, width = pixels.shape[:2]
    rows = np.minimum(((np.arange(THUMBNAIL) + 0.5) * height / THUMBNAIL).astype(np.int64), height - 1)
    columns = np.minimum(((np.arange(THUMBNAIL) + 0.5) * width / THUMBNAIL).astype(np.int64), width - 1)
    return pixels[rows][:, columns]


def _grey_bmp_palette(data: bytes) -> bool:
    """True when a palette BMP's colour table is the identity grey ramp (index == grey level)."""
    header_size = int.from_bytes(data[14:18], "little")
    colours = int.from_bytes(data[46:50], "little") or 2 ** int.from_bytes(data[28:30], "little")
    table = data[14 + header_size: 14 + header_size + 4 * colours]
    return all(table[4 * i] == table[4 * i + 1] == table[4 * i + 2] == i for i in range(len(table) // 4))


def find_files(root: os.PathLike, errors: list | None = None) -> list[Path]:
    """Every non-hidden file under `root`, recursively, sorted. Symbolic links to directories are not
    followed (a link loop would never end); links to files are listed and checked like files.
    Folders that cannot be read are appended to `errors` as (path, reason) when a list is given."""
    root = Path(root)
    if root.is_file():
        return [root]
    found = []

    def unreadable(error: OSError):
        if errors is not None:
            errors.append((error.filename, _os_reason(error)))

    for directory, subdirectories, files in os.walk(root, onerror=unreadable):
        subdirectories[:] = sorted(d for d in subdirectories if not d.startswith("."))
        found.extend(Path(directory) / name for name in files if not name.startswith("."))
    return sorted(found)


# Seconds between two redraws of a progress bar when stderr is not a terminal (a log file, a CI job,
# a pipe). tqdm redraws every 0.1 s by default, which is right for a terminal (the line is overwritten
# in place) but would append hundreds of `\r`-separated states per minute to a log. We keep tqdm's
# default on a terminal and, elsewhere, draw the first state, one every 30 s (`mininterval`; the same
# `maxinterval` stops tqdm's monitor thread from forcing more) and the last. We do not use
# `disable=None` (no bar at all off a terminal): a long `data check` in a CI log would then show no
# sign of life for minutes.
LOG_REFRESH_S = 30.0


def progress_bar(total: int, description: str, *, unit: str = "file", enabled: bool = True,
                 stream=None):
    """A tqdm progress bar on stderr: count, rate and time left. Use it as a context manager (or call
    `close()`) so that the final state and the newline are written.

    Args:
        total: number of steps (files); a bar for 0 steps is never drawn.
        description: the text before the bar, e.g. "checking images".
        unit: what one step is, for the rate ("file/s").
        enabled: False gives a silent bar (same methods, draws nothing).
        stream: where to draw (default sys.stderr, looked up at call time so tests can capture it).
    """
    from tqdm import tqdm  # a plain library, but only the commands that draw a bar need it

    stream = stream if stream is not None else sys.stderr
    terminal = hasattr(stream, "isatty") and stream.isatty()
    if terminal:
        options = {"dynamic_ncols": True}  # follows a resized window
    else:
        options = {"mininterval": LOG_REFRESH_S, "maxinterval": LOG_REFRESH_S}
    return tqdm(total=total, desc=description, file=stream, disable=not (enabled and total > 0),
                unit=unit, **options)


def _cache_key(path: Path) -> list | None:
    """Size, modification time and mode: an edited file (new size or mtime) and a permission fix (new mode)
    are checked again. Not the status-change time nor the inode: `mv`, `cp -a` and `rsync -a` keep size, mtime
    and mode but not those, and a moved or copied dataset should not be decoded again."""
    try:
        info = path.stat()
        return [info.st_size, info.st_mtime_ns, info.st_mode]
    except OSError:
        return None


def _cache_names(paths: list[Path]) -> list[str]:
    """Each path relative to the folder that holds them all, so a dataset moved elsewhere keeps its cache."""
    absolute = [os.path.abspath(p) for p in paths]  # abspath, not resolve(): resolving a link loop raises
    if not absolute:
        return []
    common = os.path.commonpath(absolute)
    if len(absolute) == 1:
        common = os.path.dirname(common)
    return [os.path.relpath(p, common) for p in absolute]


def scan_images(
    paths,
    *,
    min_size: int = 8,
    placeholder_colours: int = 64,
    workers: int | None = None,
    cache_dir: os.PathLike | None = None,
    progress: bool = False,
    description: str = "checking images",
) -> list[ImageCheck]:
    """Checks many files in parallel threads (libjpeg and TensorFlow's decoders release the GIL). Results
    come back in input order.

    With `cache_dir`, a file is not decoded again while its path relative to the folder holding all
    `paths`, its size, modification time and mode are unchanged (`_cache_key`), so re-scanning a clean
    dataset costs a `stat` per file, also after the dataset was moved or copied with its times kept
    (`cp -a`, `rsync -a`); an edited file is checked again. The cache file is named after those relative
    paths and the check's settings. `progress` draws a `progress_bar` on stderr (files actually decoded,
    with rate and time left) headed `description`."""
    paths = [Path(p) for p in paths]
    settings = f"{min_size}:{placeholder_colours}:oriented:reduced"  # a new suffix when what a check reports changes
    names = _cache_names(paths)
    cache_file = None
    cache: dict = {}
    if cache_dir is not None:
        digest = hashlib.sha1(("\n".join(names) + settings).encode()).hexdigest()
        cache_file = Path(cache_dir) / f"scan-{digest[:16]}.json"
        try:
            cache = json.loads(cache_file.read_text())
        except (OSError, ValueError):
            cache = {}
    results: list[ImageCheck | None] = [None] * len(paths)
    keys = [_cache_key(path) for path in paths] if cache_file is not None else []
    todo = []
    for index, path in enumerate(paths):
        entry = cache.get(names[index])
        if entry is not None and entry["key"] == keys[index]:
            results[index] = ImageCheck(**dict(entry["result"], path=str(path)))
        else:
            todo.append(index)
    # Two threads a core: while one reads a file, another decodes. More only add GIL contention.
    workers = workers or min(8, (os.cpu_count() or 2) * 2)
    with (
        progress_bar(len(todo), description, enabled=progress) as bar,
        concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool,
    ):
        checks = pool.map(
            lambda i: check_image(paths[i], min_size=min_size, placeholder_colours=placeholder_colours), todo
        )
        for index, check in zip(todo, checks):
            results[index] = check
            bar.update()
    if cache_file is not None and todo:
        entries = {
            name: {"key": key, "result": dataclasses.asdict(result)} for name, key, result in zip(names, keys, results)
        }
        try:
            atomic_write_json(cache_file, entries)
        except OSError:
            pass  # a read-only data dir only costs the next scan its speed
    return results


SPLIT_NAMES = {"train": "train", "val": "validation", "validation": "validation", "test": "test"}


def list_class_folders(root: os.PathLike) -> tuple[list[Path], list[int], list[str]]:
    """Files under `root/<class>/...` (recursive): (files, labels, class_names), deterministic order.

    Class index = position of the class folder's name in sorted order. Files directly in `root` are
    ignored (they belong to no class).
    """
    root = Path(root)
    class_names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    files, labels = [], []
    for index, name in enumerate(class_names):
        found = find_files(root / name)
        files.extend(found)
        labels.extend([index] * len(found))
    return files, labels, class_names


def split_folders(root: os.PathLike) -> dict[str, Path]:
    """`train/`, `val/` or `validation/`, `test/` sub-folders of `root` (canonical split name -> path).

    Raises:
        ValueError: both `val/` and `validation/` exist (one would be silently ignored).
    """
    root = Path(root)
    if not root.is_dir():
        return {}
    found: dict[str, Path] = {}
    for path in sorted(root.iterdir()):
        if path.is_dir() and path.name in SPLIT_NAMES:
            split = SPLIT_NAMES[path.name]
            if split in found:
                raise ValueError(f"{root}: both {found[split].name}/ and {path.name}/ hold the {split} split; "
                                 f"merge them into one folder")
            found[split] = path
    return found
