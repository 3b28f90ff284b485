"""Atomic file writes: a reader (or a resumed run) sees the old file or the new one, never half of one.

Everything is written under a temporary name in the target's directory, fsynced, then moved into place
with `os.replace`, which is atomic on POSIX. A process killed mid-write leaves only a `.tmp-*` file.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from pipeline.core import errors

# "No space left on device", "File too large" (a file-size limit, `ulimit -f`), "Disk quota exceeded".
STORAGE_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
STORAGE_MESSAGES = ("No space left", "File too large", "Disk quota", "errno = 28", "errno = 27")


# The one wording of the common reasons a file or folder cannot be read or written (data check, training's
# scan, predict, the data tools); anything else falls back on the system's own message.
OS_REASONS = {
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOENT: "no such file (or a broken symbolic link)",
    errno.ELOOP: "symbolic link loop",
    errno.EISDIR: "is a directory",
}


def os_reason(error: OSError) -> str:
    """Why an OSError happened, in words for a user: "permission denied", "symbolic link loop", ..."""
    return OS_REASONS.get(getattr(error, "errno", None)) or str(getattr(error, "strerror", None) or error)


class StorageFullError(errors.UserError):
    """A write failed because the disk (or a quota or file-size limit) is full. Nothing was lost: the
    file being written stays as it was (atomic writes)."""

    def __init__(self, path, reason: str):
        super().__init__(
            f"cannot write {path}: {reason}. Nothing was lost (the previous version of the file "
            f"is intact); free some space, then run the same command again to resume."
        )
        self.path = path


class DamagedFileError(errors.UserError):
    """A file this pipeline wrote exists but cannot be read back: cut short (an interrupted copy, download or
    sync; our own writes are atomic) or altered. The message names it as damaged, never as missing."""

    def __init__(self, path, *, reason: str, remedy: str):
        super().__init__(f"{path}: damaged or truncated ({reason}). {remedy}")
        self.path = path


def check_zip(path: os.PathLike, *, remedy: str) -> None:
    """Raises `DamagedFileError` unless `path` is a complete zip archive whose members all pass their CRC
    check (a `.keras` file is a zip; a truncated one has lost its central directory, at the end). Reads the
    whole file once; a checkpoint is small next to what loading it costs."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        raise DamagedFileError(path, reason=f"not a complete zip archive: {error}", remedy=remedy) from None
    if bad is not None:
        raise DamagedFileError(path, reason=f"member {bad!r} fails its CRC check", remedy=remedy)


def storage_error(error: BaseException) -> str | None:
    """The reason ("No space left on device") when `error` is a full disk, quota or file-size limit;
    else None. HDF5 (Keras' weights files) wraps the OS error in its own text, so the message is read too."""
    if isinstance(error, OSError) and error.errno in STORAGE_ERRNOS:
        return os.strerror(error.errno)
    text = str(error)
    for marker in STORAGE_MESSAGES:
        if marker in text:
            return {"errno = 28": "No space left on device", "errno = 27": "File too large"}.get(marker, marker)
    return None


def atomic_write(path: os.PathLike, write: Callable[[str], None], suffix: str = "") -> None:
    """Calls `write(temporary_path)`, fsyncs it and renames it to `path`.

    Raises:
        StorageFullError: the disk, a quota or a file-size limit is full (the temporary file is removed).

    `suffix` keeps the extension Keras insists on (`.keras`, `.weights.h5`) on the temporary name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".tmp-{path.stem}-", suffix=suffix)
    os.close(handle)
    try:
        os.unlink(temporary)  # Keras refuses to overwrite without asking in some versions
        write(temporary)
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(temporary, path)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        reason = storage_error(error)
        if reason:
            raise StorageFullError(path, reason) from None
        raise


def atomic_write_text(path: os.PathLike, text: str) -> None:
    """Writes `text` as UTF-8 atomically; file names that are not UTF-8 (held by Python as surrogates, see
    os.fsdecode) are written as their original bytes, so list files name every file the folder holds."""

    def write(temporary):
        with open(temporary, "w", encoding="utf-8", errors="surrogateescape") as handle:
            handle.write(text)

    atomic_write(path, write)


def atomic_write_json(path: os.PathLike, data, *, indent: int | None = 2) -> None:
    """`data` as JSON, indented for people (`indent=None`: one compact line, for large machine-read files)."""
    text = json.dumps(data, indent=indent) if indent else json.dumps(data, separators=(",", ":"))
    atomic_write_text(path, text + "\n")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
