"""tf.data's disk cache (`input.cache: <path>`) made safe to kill: one owner per cache, leftovers recovered.

`Dataset.cache(prefix)` writes `<prefix>_<shard>.lockfile` and partial `<prefix>_<shard>.*` files during its
first pass and merges them into `<prefix>.index` + `<prefix>.data-*` at the end. A process that dies in that
pass (kill -9, OOM, power) never removes the lockfile, and every later iterator on the prefix fails with
AlreadyExistsError "There appears to be a concurrent caching iterator running" (tensorflow/tensorflow#28798;
TF's own fix, PR #30825, runs when an iterator is destroyed, which a kill never does).

TF cannot tell a dead writer from a live one; we can: a process that uses a prefix holds an exclusive `flock`
on `<prefix>.owner` (released by the kernel when the process dies, however it dies). Whoever gets that lock
knows no live process writes the prefix, so an unfinished first pass's files are stale and are removed; one
that cannot get it is told which path is in use, instead of TF's error one epoch later.
"""

from __future__ import annotations

import fcntl
import re
from pathlib import Path

from pipeline.core import fileio
from pipeline.core.errors import UserError


class DiskCacheInUseError(UserError):
    """Another running process uses the same `input.cache` path."""


_OWNED: dict[str, object] = {}  # prefix -> the open file whose flock this process holds, for its lifetime


def claim(prefix: str) -> list[str]:
    """Takes ownership of the disk cache `prefix` for this process and removes what a killed first pass left.

    Args:
        prefix: the path given to `tf.data.Dataset.cache` (its folder is created).

    Returns:
        The names of the stale files removed (TF's lockfile, partial shards), [] when there were none.

    Raises:
        DiskCacheInUseError: another live process holds the cache (two runs given the same path).
        UserError: the cache's folder cannot be created or written (the message names it).
    """
    if prefix in _OWNED:
        return []
    path = Path(prefix)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(f"{prefix}.owner", "a")  # noqa: SIM115  (held open: the lock lives as long as the process)
    except OSError as error:
        raise UserError(f"input.cache: cannot write the disk cache {prefix} ({fileio.os_reason(error)})") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise DiskCacheInUseError(
            f"input.cache: {prefix} is in use by another running process; give each run its own "
            f"input.cache path (or wait for the other one to finish)"
        ) from None
    _OWNED[prefix] = handle
    if path.with_name(path.name + ".index").exists():
        return []  # a complete cache: TF reads it
    # No index: the first pass never finished. Its lockfile and partial files (`<prefix>_<shard>.lockfile`,
    # `<prefix>_<shard>.index/.data-*`, and the merge's `<prefix>.data-*` when the kill came during the
    # merge) are of a dead process: remove them, so TF writes the cache afresh.
    pattern = re.compile(
        re.escape(path.name) + r"(_\d+(\.lockfile|\.index.*|\.data-.*)|\.data-.*|\.index\.tempstate.*)"
    )
    removed = []
    for leftover in sorted(path.parent.iterdir()):
        if pattern.fullmatch(leftover.name):
            leftover.unlink(missing_ok=True)
            removed.append(leftover.name)
    return removed


def release_all() -> None:
    """Gives up every cache this process owns (tests; a process's end does it anyway)."""
    while _OWNED:
        _OWNED.popitem()[1].close()
