"""Finding image files and checking that each one decodes, in parallel, with a cached result.

Images are recognised by content (magic bytes), not by extension. The check decodes with
`decode.decode_native`, the decoder training and the exported SavedModel use, so "good" means "the pipeline can
read it". Decision on decodable files with a misleading name (a GIF named `.jpg`): they are good images
and are used; `check` lists them as a warning, because the name is wrong, not the content.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import os
import stat
import sys
from pathlib import Path

from pipeline.core import fileio
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


def _unreadable(error: OSError) -> str:
    return f"unreadable: {fileio.os_reason(error)}"


def check_image(path: os.PathLike, *, min_size: int = 8, placeholder_colours: int = 64) -> ImageCheck:
    """Reads and decodes one file.

    Args:
        min_size: images whose shorter side is below this are bad ("too small").
        placeholder_colours: a decodable RGB image with fewer distinct colours than this, at a 64x64
            thumbnail, gets a warning: real photos have hundreds; "image not found" placeholders a few.
    """
    import numpy as np
    import tensorflow as tf

    from pipeline.data import decode

    result = ImageCheck(str(path))
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO or device would block or never end
            result.reason = "not a regular file"
            return result
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        result.reason = _unreadable(error)
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
    try:
        # The decoder of every decode path, before its channel conversion: the native channel count.
        image = decode.decode_native(data).numpy()
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as error:
        message = str(error).split("\n")[0].split("}}")[-1].strip().split(" [Op:")[0]
        result.reason = f"truncated or corrupt {DECODABLE[kind]} ({message})"
        return result
    result.height, result.width, result.channels = (int(v) for v in image.shape)
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
        thumbnail = tf.image.resize(image[..., :3], (64, 64), method="nearest").numpy().reshape(-1, 3)
        # Colours packed into one 24-bit integer each: np.unique(axis=0) on the rows sorts them as
        # structured records, 6x slower (3 ms of a 500x375 JPEG's ~6 ms check).
        packed = thumbnail.astype(np.uint32) @ np.array([1 << 16, 1 << 8, 1], np.uint32)
        result.colours = int(len(np.unique(packed)))
        if result.colours < placeholder_colours:
            note = f"only {result.colours} colours: may be a placeholder, not a photo"
            result.warning = f"{result.warning}; {note}" if result.warning else note
    return result


def _grey_bmp_palette(data: bytes) -> bool:
    """True when a palette BMP's colour table is the identity grey ramp (index == grey level)."""
    header_size = int.from_bytes(data[14:18], "little")
    colours = int.from_bytes(data[46:50], "little") or 2 ** int.from_bytes(data[28:30], "little")
    table = data[14 + header_size : 14 + header_size + 4 * colours]
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
            errors.append((error.filename, _unreadable(error)))

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


def progress_bar(total: int, description: str, *, unit: str = "file", enabled: bool = True, stream=None):
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
    return tqdm(total=total, desc=description, file=stream, disable=not (enabled and total > 0), unit=unit, **options)


def _cache_key(path: Path) -> list | None:
    """Size, modification and status-change times: chmod changes the last, so a permission fix rescans."""
    try:
        info = path.stat()
        return [info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_mode]
    except OSError:
        return None


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
    """Checks many files in parallel (TensorFlow's decoder releases the GIL). Results come back in input
    order. With `cache_dir`, a file whose size and modification time are unchanged is not decoded again,
    so re-scanning a clean dataset costs a `stat` per file. `progress` draws a `progress_bar` on stderr
    (files actually decoded, with rate and time left) headed `description`."""
    paths = [Path(p) for p in paths]
    settings = f"{min_size}:{placeholder_colours}:oriented"  # a new suffix when what a check reports changes
    cache_file = None
    cache: dict = {}
    if cache_dir is not None:
        # abspath, not resolve(): resolving a symbolic-link loop raises.
        digest = hashlib.sha1(("\n".join(os.path.abspath(p) for p in paths) + settings).encode()).hexdigest()
        cache_file = Path(cache_dir) / f"scan-{digest[:16]}.json"
        try:
            cache = json.loads(cache_file.read_text())
        except (OSError, ValueError):
            cache = {}
    results: list[ImageCheck | None] = [None] * len(paths)
    todo = []
    for index, path in enumerate(paths):
        entry = cache.get(str(path))
        if entry is not None and entry["key"] == _cache_key(path):
            results[index] = ImageCheck(**entry["result"])
        else:
            todo.append(index)
    workers = workers or min(8, (os.cpu_count() or 2) * 2)
    with (
        progress_bar(len(todo), description, enabled=progress) as bar,
        concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool,
    ):
        futures = {
            pool.submit(check_image, paths[i], min_size=min_size, placeholder_colours=placeholder_colours): i
            for i in todo
        }
        for future in concurrent.futures.as_completed(futures):
            results[futures[future]] = future.result()
            bar.update()
    if cache_file is not None and todo:
        entries = {str(p): {"key": _cache_key(p), "result": dataclasses.asdict(r)} for p, r in zip(paths, results)}
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
                raise ValueError(
                    f"{root}: both {found[split].name}/ and {path.name}/ hold the {split} split; "
                    f"merge them into one folder"
                )
            found[split] = path
    return found
