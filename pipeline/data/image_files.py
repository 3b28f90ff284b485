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
from pipeline.data import image_header, reduced_jpeg, scan_worker

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

    def fields(self) -> dict:
        """Everything but the path, as a dict (what a scan worker sends and the scan cache keeps):
        `dataclasses.asdict` deep-copies each field, 4 s of a 100,000-file scan."""
        fields = dict(vars(self))
        del fields["path"]
        return fields


def _unreadable(error: OSError) -> str:
    return f"unreadable: {fileio.os_reason(error)}"


def check_image(
    path: os.PathLike,
    *,
    min_size: int = 8,
    placeholder_colours: int = 64,
    max_pixels: int = image_header.DEFAULT_MAX_PIXELS,
) -> ImageCheck:
    """Reads and decodes one file.

    Args:
        max_pixels: an image whose header promises more pixels (width x height) is bad ("too many pixels")
            and is not decoded (a decompression bomb would cost gigabytes); 0: no limit.
        min_size: images whose shorter side is below this are bad ("too small").
        placeholder_colours: a decodable RGB image with fewer distinct colours than this, at a 64x64
            thumbnail, gets a warning: real photos have hundreds; "image not found" placeholders a few.
    """
    import numpy as np

    result = ImageCheck(str(path))
    try:
        if os.path.isdir(path):  # find_files lists a link to a folder it does not walk
            result.reason = folder_link_reason(path)
            return result
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
    result.reason = image_header.too_many_pixels(data[: image_header.HEADER_BYTES], max_pixels=max_pixels)
    if result.reason:
        return result
    # JPEGs: a reduced-scale decode (`reduced_jpeg.decode`), which reads every coefficient as the full decode
    # does; a file it refuses is decoded by TensorFlow below, so every "bad" verdict and its message come
    # from the decoder training uses.
    image = reduced_jpeg.decode(data, thumbnail=bool(placeholder_colours)) if kind == "jpeg" else None
    if image is not None:
        result.height, result.width = image.full_size
        result.channels = image.channels
        pixels = image.pixels
    else:
        import tensorflow as tf

        from pipeline.data import decode

        try:
            # The decoder of every decode path, before its channel conversion: the native channel count.
            pixels = decode.decode_native(data).numpy()
        except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as error:
            message = str(error).split("\n")[0].split("}}")[-1].strip().split(" [Op:")[0]
            result.reason = f"truncated or corrupt {DECODABLE[kind]} ({message})"
            return result
        result.height, result.width, result.channels = (int(v) for v in pixels.shape)
    # TensorFlow is imported only for files that may carry the tag: scan workers (`scan_worker`) of a plain
    # JPEG folder never load it.
    if image_header.may_hold_orientation(data):
        from pipeline.data import decode

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
        rgb = pixels[..., :3]
        # Nearest-neighbour sampling up to the thumbnail's size takes every pixel of a smaller image at least
        # once: its own pixels have the same colours, without the sampling (a third of a tiny JPEG's check).
        small = rgb.shape[0] <= reduced_jpeg.THUMBNAIL and rgb.shape[1] <= reduced_jpeg.THUMBNAIL
        thumbnail = (rgb if small else reduced_jpeg.thumbnail(rgb)).reshape(-1, 3)
        # Colours packed into one 24-bit integer each: np.unique(axis=0) on the rows sorts them as
        # structured records, 6x slower (3 ms of a 500x375 JPEG's ~6 ms check).
        # Then sorted and the changes counted: numpy 2's hashing `np.unique` takes 0.7 ms for these 4,096 values.
        packed = np.sort(thumbnail.astype(np.uint32) @ np.array([1 << 16, 1 << 8, 1], np.uint32))
        result.colours = 1 + int(np.count_nonzero(packed[1:] != packed[:-1]))
        if result.colours < placeholder_colours:
            note = f"only {result.colours} colours: may be a placeholder, not a photo"
            result.warning = f"{result.warning}; {note}" if result.warning else note
    return result


def check_fields(path: str, **options) -> dict:
    """`check_image`'s result as a dict without the path: what a scan worker (`scan_worker`) sends back."""
    return check_image(path, **options).fields()


def _grey_bmp_palette(data: bytes) -> bool:
    """True when a palette BMP's colour table is the identity grey ramp (index == grey level)."""
    header_size = int.from_bytes(data[14:18], "little")
    colours = int.from_bytes(data[46:50], "little") or 2 ** int.from_bytes(data[28:30], "little")
    table = data[14 + header_size : 14 + header_size + 4 * colours]
    return all(table[4 * i] == table[4 * i + 1] == table[4 * i + 2] == i for i in range(len(table) // 4))


def find_files(root: os.PathLike, errors: list | None = None) -> list[Path]:
    """Every non-hidden file under `root`, recursively, sorted: the one walk behind training, the data tools
    and `predict`, so that all of them see the same files.

    Symbolic links to folders are followed (people assemble class folders from other disks with links:
    keras-team/keras#4657, pytorch/vision#1580), except a link back to a folder it sits in (a loop, which
    would never end) and a second link to a folder already walked (its files would count twice): such a
    link is listed itself, as a path, and `check_image` gives the reason it is not used. Links to files,
    broken links and special files are listed too, for `check_image` to judge.

    Args:
        root: a folder, or a file (returned alone).
        errors: when a list, folders that cannot be read are appended as (path, reason).

    Returns:
        Paths under `root` as reached (links not resolved), sorted.
    """
    root = Path(root)
    if root.is_file():
        return [root]
    found, links = [], []
    walked = set()  # (device, inode) of every folder walked: a second way into one is not taken

    def walk(directory: str):
        try:
            with os.scandir(directory) as scanned:
                entries = sorted(scanned, key=lambda entry: entry.name)
        except OSError as error:
            if errors is not None:
                errors.append((error.filename or directory, fileio.os_reason(error)))
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                info = os.stat(entry.path) if entry.is_dir() else None  # is_dir follows links
            except OSError:
                info = None  # a broken link or a loop of links: check_image names it
            if info is None:
                found.append(Path(entry.path))
            elif entry.is_symlink():
                links.append((entry.path, (info.st_dev, info.st_ino)))  # after the real folders: see below
            elif (info.st_dev, info.st_ino) not in walked:
                walked.add((info.st_dev, info.st_ino))
                walk(entry.path)

    try:
        info = os.stat(root)
    except OSError as error:
        if errors is not None:
            errors.append((str(root), fileio.os_reason(error)))
        return []
    walked.add((info.st_dev, info.st_ino))
    walk(str(root))
    # Links to folders last, in name order: a folder reached both by its own path and by a link is read by
    # its own path, and a link to a folder walked already (an ancestor: a loop) is listed, not walked.
    while links:
        links.sort()
        path, identity = links.pop(0)
        if identity in walked:
            found.append(Path(path))  # check_image: "symbolic link loop" or "already included"
        else:
            walked.add(identity)
            walk(path)
    return sorted(found)


def folder_link_reason(path: os.PathLike) -> str:
    """Why `find_files` listed a link to a folder instead of walking it: a loop, or a folder read already."""
    real, parent = os.path.realpath(path), os.path.realpath(os.path.dirname(os.path.abspath(path)))
    if parent == real or parent.startswith(real.rstrip(os.sep) + os.sep):
        return f"symbolic link loop: links to {real}, a folder it is inside (not followed)"
    return f"link to a folder already included ({real}): its files are read once"


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


def _cache_key(path: os.PathLike) -> list | None:
    """Size, modification time and mode: an edited file (new size or mtime) and a permission fix (new mode)
    are checked again. Not the status-change time nor the inode: `mv`, `cp -a` and `rsync -a` keep size, mtime
    and mode but not those, and a moved or copied dataset should not be decoded again."""
    try:
        info = os.stat(path)
        return [info.st_size, info.st_mtime_ns, info.st_mode]
    except OSError:
        return None


def _cache_names(paths: list[Path]) -> list[str]:
    """Each path relative to the folder that holds them all, so a dataset moved elsewhere keeps its cache."""
    texts = [os.fspath(p) for p in paths]
    if not texts:
        return []
    # abspath, not resolve(): resolving a link loop raises. `find_files` gives normalised absolute paths:
    # those are kept as they are (abspath and relpath cost 6 s of a 100,000-file folder's cached scan).
    normal = all(t.startswith(os.sep) and f"{os.sep}." not in t and os.sep * 2 not in t for t in texts)
    absolute = texts if normal else [os.path.abspath(t) for t in texts]
    # The common folder: the common prefix of the first and last names in sort order (which all the others
    # share) cut after its last separator; os.path.commonpath splits every path (1 s for 100,000).
    if len(absolute) > 1:
        common = os.path.commonprefix([min(absolute), max(absolute)])
        prefix = common[: common.rfind(os.sep) + 1]
    else:
        prefix = os.path.dirname(absolute[0]).rstrip(os.sep) + os.sep
    return [p[len(prefix) :] for p in absolute]


def _cached_result(entry, path: Path, key: list | None) -> ImageCheck | None:
    """The scan cache's verdict on `path` when its `_cache_key` is still `key` and the entry is well-formed,
    else None."""
    try:
        if entry["key"] == key:
            return ImageCheck(**dict(entry["result"], path=str(path)))
    except (KeyError, TypeError):
        pass  # an entry of another form (edited, or another version's): decode the file again
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
    max_pixels: int = image_header.DEFAULT_MAX_PIXELS,
) -> list[ImageCheck]:
    """Checks many files in parallel: in a worker process a core (`scan_worker`) when at least
    `scan_worker.MIN_FILES` need checking, else in threads (libjpeg and TensorFlow's decoders release the
    GIL; the rest of the check does not). `workers`: threads, and the most processes; 1 checks in this
    process only. Results come back in input order.

    With `cache_dir`, a file is not decoded again while its path relative to the folder holding all
    `paths`, its size, modification time and mode are unchanged (`_cache_key`), so re-scanning a clean
    dataset costs a `stat` per file, also after the dataset was moved or copied with its times kept
    (`cp -a`, `rsync -a`); an edited file is checked again. The cache file is named after those relative
    paths and the check's settings. `progress` draws a `progress_bar` on stderr (files actually decoded,
    with rate and time left) headed `description`. `max_pixels` as in `check_image`."""
    paths = list(paths)  # str or Path, as given: no Path object per file (100,000 of them cost seconds)
    # a new suffix when what a check reports changes
    settings = f"{min_size}:{placeholder_colours}:oriented:{max_pixels}:reduced"
    names = _cache_names(paths)
    cache_file = None
    cache: dict = {}
    if cache_dir is not None:
        digest = hashlib.sha1(("\n".join(names) + settings).encode(errors="surrogateescape")).hexdigest()
        cache_file = Path(cache_dir) / f"scan-{digest[:16]}.json"
        try:
            cache = json.loads(cache_file.read_text())
        except (OSError, ValueError):
            cache = {}  # a cut-short or garbled cache only costs this scan its speed: it is rewritten whole
        if not isinstance(cache, dict):
            cache = {}
    results: list[ImageCheck | None] = [None] * len(paths)
    keys = [_cache_key(path) for path in paths] if cache_file is not None else [None] * len(paths)
    todo = []
    for index, path in enumerate(paths):
        entry = cache.get(names[index])
        results[index] = _cached_result(entry, path, keys[index]) if entry is not None else None
        if results[index] is None:
            todo.append(index)
    decoded_any = bool(todo)
    options = {"min_size": min_size, "placeholder_colours": placeholder_colours, "max_pixels": max_pixels}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    with progress_bar(len(todo), description, enabled=progress) as bar:
        if len(todo) >= scan_worker.MIN_FILES and cores > 1 and workers != 1:
            # A process a core for large folders (the per-file Python holds the GIL: `scan_worker`); what the
            # workers leave unanswered is checked by the threads below.
            answered, left = scan_worker.map_in_processes(
                f"{__name__}:check_fields",
                [paths[i] for i in todo],
                options,
                processes=min(workers or cores, cores),
                on_chunk=bar.update,
            )
            for position, fields in answered.items():
                results[todo[position]] = ImageCheck(path=str(paths[todo[position]]), **fields)
            todo = [todo[position] for position in left]
        # Two threads a core: while one reads a file, another decodes. More only add GIL contention.
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers or min(8, cores * 2))
        try:
            futures = {pool.submit(check_image, paths[i], **options): i for i in todo}
            for future in concurrent.futures.as_completed(futures):
                results[futures[future]] = future.result()
                bar.update()
        finally:
            # Ctrl-C or SIGTERM: the files not started are dropped (`with pool` would decode them all first).
            pool.shutdown(wait=True, cancel_futures=True)
    if cache_file is not None and decoded_any:
        entries = {name: {"key": key, "result": result.fields()} for name, key, result in zip(names, keys, results)}
        try:
            atomic_write_json(cache_file, entries, indent=None)  # one line: indenting 100,000 entries took 2 s
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
