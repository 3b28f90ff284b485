"""Atomic file writes: a reader (or a resumed run) sees the old file or the new one, never half of one.

Everything is written under a temporary name in the target's directory, fsynced, then moved into place
with `os.replace`, which is atomic on POSIX. A process killed mid-write leaves only a `.tmp-*` file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable


def atomic_write(path: os.PathLike, write: Callable[[str], None], suffix: str = "") -> None:
    """Calls `write(temporary_path)`, fsyncs it and renames it to `path`.

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
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def atomic_write_text(path: os.PathLike, text: str) -> None:
    def write(temporary):
        with open(temporary, "w") as handle:
            handle.write(text)
    atomic_write(path, write)


def atomic_write_json(path: os.PathLike, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
