"""Writing TFRecord shards (`python -m pipeline data shard`): check, encode in parallel, write atomically.

The layout, record ids and readers are described in `pipeline/data/records.py`. Everything is written into
a temporary sibling directory that is renamed into place when complete: an interrupted run leaves the
previous dataset (or none), and a killed one at most a `.tmp-*` folder. Files are checked with
`image_files.scan_images` (cached beside the output, `.<name>-scan-cache`), so bad files are left out
exactly as training leaves them out.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

from pipeline.core import fileio
from pipeline.data import records as tfrecords
from pipeline.data.records import INDEX, MANIFEST, SPLIT_ORDER, TFRecordError

TARGET_SHARD_BYTES = 128 * 2**20  # TF's tf.data performance guide: files of 100 MB or more read fastest
MIN_SHARDS = 8  # enough to spread over parallel reads and a few workers
JPEG_QUALITY = 95


@dataclasses.dataclass
class WriteResult:
    """What `write_shards` did: the manifest written, the files left out, and the time spent (seconds)."""

    manifest: dict
    skipped: list[dict]
    warnings: list[dict]
    scan_seconds: float
    write_seconds: float


def _relative(path: str, root: Path) -> str:
    return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(root))).as_posix()


@functools.cache
def _shrink_function(quality: int):
    """shrink(encoded bytes, height, width) -> JPEG bytes, as a tf.function traced once per process."""
    import tensorflow as tf

    from pipeline.data import decode

    # autograph=False: decode.py builds its control flow with tf.cond itself; autograph would re-read its
    # source from disk (and trace slower).
    @tf.function(
        input_signature=[tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int32)],
        autograph=False,
    )
    def shrink(encoded, height, width):
        # Oriented as training decodes it, since re-encoding drops the EXIF orientation tag; DCT-scaled
        # decoding where a JPEG allows it, then area averaging down to the exact size.
        image = decode.decode_image_at_least(encoded, min_height=height, min_width=width, channels=None)
        return tf.io.encode_jpeg(decode.resize_down(image, height, width), quality=quality)

    return shrink


def _stored_size(check, max_side) -> tuple[int, int]:
    """(height, width) of an image as stored: its displayed size, shrunk to `max_side` when larger."""
    height, width = check.height, check.width
    if max_side and max(height, width) > max_side:
        scale = max_side / max(height, width)
        height, width = max(1, round(height * scale)), max(1, round(width * scale))
    return height, width


def _encode_record(item, *, max_side, quality) -> bytes:
    """One serialized tf.train.Example from (record id, path, ImageCheck, label, class name, file name).

    Raises:
        TFRecordError: the file can no longer be read or decoded (it changed after the check).
    """
    import tensorflow as tf

    key, path, check, label, class_name, filename = item
    height, width, image_format = check.height, check.width, check.format  # as displayed (EXIF applied)
    try:
        with open(path, "rb") as handle:
            data = handle.read()
        if max_side and max(height, width) > max_side:
            height, width = _stored_size(check, max_side)
            data, image_format = _shrink_function(quality)(data, height, width).numpy(), "jpeg"
    except (OSError, tf.errors.OpError) as error:
        message = getattr(error, "message", None) or fileio.os_reason(error)
        raise TFRecordError(
            f"{path}: {message.splitlines()[0]}; it changed since it was checked: run the command again"
        ) from None
    feature = {
        "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[data])),
        "image/format": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image_format.encode()])),
        "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
        "image/class/text": tf.train.Feature(bytes_list=tf.train.BytesList(value=[class_name.encode()])),
        "image/filename": tf.train.Feature(bytes_list=tf.train.BytesList(value=[filename.encode()])),
        "image/height": tf.train.Feature(int64_list=tf.train.Int64List(value=[height])),
        "image/width": tf.train.Feature(int64_list=tf.train.Int64List(value=[width])),
        "image/id": tf.train.Feature(int64_list=tf.train.Int64List(value=[key])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _ordered_map(function, items, workers: int):
    """function(item) for each item on a thread pool, yielded in input order, at most 4 x workers ahead
    (an unbounded `pool.map` would hold every finished record of a slow-to-write run in memory)."""
    pending = collections.deque()
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        try:
            for item in items:
                pending.append(pool.submit(function, item))
                if len(pending) >= 4 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def _shard_count(sizes: list[int], longer_sides: list[int], max_side) -> int:
    """Enough shards for ~TARGET_SHARD_BYTES each (file sizes, scaled by the pixel area --max-side keeps),
    but at least MIN_SHARDS (fewer when there are fewer images)."""
    estimate = sum(
        size * min(1.0, (max_side / side) ** 2 if max_side else 1.0) for size, side in zip(sizes, longer_sides)
    )
    return max(1, min(len(sizes), max(MIN_SHARDS, math.ceil(estimate / TARGET_SHARD_BYTES))))


def _prepare_output(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not (out_dir.is_dir() and not any(out_dir.iterdir())):
        if not (out_dir / MANIFEST).is_file():
            raise TFRecordError(
                f"--out {out_dir}: exists and is not a shard directory (no {MANIFEST}); "
                f"choose another --out (nothing is ever deleted that this tool did not write)"
            )
        if not overwrite:
            raise TFRecordError(f"--out {out_dir}: already holds shards; pass --overwrite to replace them")
    out_dir.parent.mkdir(parents=True, exist_ok=True)


def write_shards(
    splits: dict,
    class_names: list[str],
    *,
    out_dir,
    source_root,
    num_shards: int | None = None,
    max_side: int | None = None,
    workers: int | None = None,
    min_size: int = 8,
    skip_placeholders: bool = False,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    jpeg_quality: int = JPEG_QUALITY,
) -> WriteResult:
    """Checks every file, then writes the good ones as TFRecord shards with index.npz and manifest.json.

    Args:
        splits: {"train" | "validation" | "test": (paths [N], int labels [N])}, in the source's order
            (`folders.FileDataset.splits`).
        class_names: label index -> class name.
        out_dir: the shard directory; written whole or not at all (see the module docstring).
        source_root: recorded in the manifest; file names are stored relative to it.
        num_shards: shards per split (fewer when a split has fewer images); None: `_shard_count`.
        max_side: images whose longer side (as displayed) exceeds this many pixels are shrunk to it and
            re-encoded as JPEG of `jpeg_quality`; others keep their bytes. None keeps every file's bytes.
        workers: threads checking and encoding (default: the CPU count).
        min_size, skip_placeholders: what counts as bad, as `dataset.min_image_size` and
            `dataset.skip_placeholders` decide for training.
        seed: the order records are spread over shards.
    Returns:
        WriteResult; `skipped` lists {"path" (relative), "reason"}, `warnings` {"path", "warning"}.
    Raises:
        TFRecordError: out_dir holds something else, or shards without `overwrite`, or cannot be written.
        ValueError: a split name other than train/validation/test, num_shards or max_side below 1.
    """
    from pipeline.data import image_files

    unknown = set(splits) - set(SPLIT_ORDER)
    if unknown:
        raise ValueError(f"splits must be among {', '.join(SPLIT_ORDER)}. Received: {', '.join(sorted(unknown))}")
    for name, value in (("num_shards", num_shards), ("max_side", max_side)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1 or None. Received: {name}={value}")
    out_dir, source_root = Path(out_dir), Path(source_root)
    workers = workers or os.cpu_count() or 2
    _prepare_output(out_dir, overwrite)

    started = time.perf_counter()
    every = [str(path) for name in SPLIT_ORDER if name in splits for path in splits[name][0]]
    checks = dict(
        zip(
            every,
            image_files.scan_images(
                every,
                min_size=min_size,
                workers=workers,
                progress=progress,
                description=f"checking {len(every)} images",
                cache_dir=out_dir.parent / f".{out_dir.name}-scan-cache",
            ),
        )
    )
    skipped, warnings, plan = [], [], []
    for name in (n for n in SPLIT_ORDER if n in splits):
        good = []
        for path, label in zip(*splits[name]):
            check = checks[str(path)]
            reason = check.reason or (
                check.warning if skip_placeholders and check.warning and "placeholder" in check.warning else None
            )
            if reason:
                skipped.append({"split": name, "path": _relative(path, source_root), "reason": reason})
                continue
            if check.warning:
                warnings.append({"split": name, "path": _relative(path, source_root), "warning": check.warning})
            good.append((str(path), int(label), check))
        plan.append((name, good))
    scan_seconds = time.perf_counter() - started

    try:
        temporary = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".tmp-{out_dir.name}-"))
    except OSError as error:
        raise TFRecordError(f"--out {out_dir}: cannot create a folder beside it ({fileio.os_reason(error)})") from None
    try:
        manifest = _write_all(
            plan,
            class_names,
            temporary,
            source_root=source_root,
            num_shards=num_shards,
            max_side=max_side,
            workers=workers,
            seed=seed,
            progress=progress,
            quality=jpeg_quality,
        )
        manifest.update(min_size=min_size, skip_placeholders=skip_placeholders, skipped=skipped)
        with open(temporary / MANIFEST, "w") as handle:
            json.dump(manifest, handle, indent=2)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        _move_into_place(temporary, out_dir)
    except OSError as error:  # disk full, permissions: nothing half-written stays behind
        shutil.rmtree(temporary, ignore_errors=True)
        raise TFRecordError(f"writing {out_dir} failed ({error}); nothing was written") from None
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return WriteResult(manifest, skipped, warnings, scan_seconds, time.perf_counter() - started - scan_seconds)


def _write_all(
    plan, class_names, directory: Path, *, source_root, num_shards, max_side, workers, seed, progress, quality
) -> dict:
    """Writes every split's shards and index.npz into `directory`; returns the manifest (less settings)."""
    import numpy as np
    import tensorflow as tf

    from pipeline.data import image_files

    total = sum(len(good) for _, good in plan)
    manifest = {
        "format": tfrecords.FORMAT,
        "classes": list(class_names),
        "source_root": str(source_root.resolve()),
        "max_side": max_side,
        "jpeg_quality": quality,
        "shard_seed": seed,
        "splits": {},
    }
    labels = np.zeros(total, np.int64)
    shard_of, offsets, lengths = np.zeros(total, np.int32), np.zeros(total, np.int64), np.zeros(total, np.int64)
    heights, widths = np.zeros(total, np.int32), np.zeros(total, np.int32)  # as stored: `input.cache: auto` sizes
    filenames: list[bytes] = [b""] * total
    shard_files: list[str] = []
    first_id = 0
    with image_files.progress_bar(total, f"writing {total} records", enabled=progress) as bar:
        for split_number, (name, good) in enumerate(plan):
            ids = np.arange(first_id, first_id + len(good))
            count = (
                0
                if not good
                else min(
                    len(good),
                    num_shards
                    or _shard_count(
                        [os.path.getsize(p) for p, _, _ in good], [max(c.height, c.width) for _, _, c in good], max_side
                    ),
                )
            )
            order = np.random.default_rng([seed, split_number]).permutation(len(good))
            chunks = np.array_split(order, count) if count else []
            items = (
                (
                    int(ids[i]),
                    good[i][0],
                    good[i][2],
                    good[i][1],
                    class_names[good[i][1]],
                    _relative(good[i][0], source_root),
                )
                for chunk in chunks
                for i in chunk
            )
            records = _ordered_map(
                functools.partial(_encode_record, max_side=max_side, quality=quality), items, workers
            )
            shards = []
            for shard_index, chunk in enumerate(chunks):
                filename = tfrecords.shard_name(name, shard_index, count)
                position = 0
                with tf.io.TFRecordWriter(str(directory / filename)) as writer:
                    for local in chunk:
                        record, key = next(records), int(ids[local])
                        writer.write(record)
                        labels[key], shard_of[key] = good[local][1], len(shard_files)
                        offsets[key], lengths[key] = position + tfrecords.HEADER_BYTES, len(record)
                        heights[key], widths[key] = _stored_size(good[local][2], max_side)
                        filenames[key] = _relative(good[local][0], source_root).encode()
                        position += tfrecords.HEADER_BYTES + len(record) + tfrecords.FOOTER_BYTES
                        bar.update()
                shard_files.append(filename)
                shards.append(
                    {
                        "file": filename,
                        "records": len(chunk),
                        "bytes": position,
                        "sha256": tfrecords.file_sha256(directory / filename, fsync=True),
                    }
                )
            per_class = collections.Counter(label for _, label, _ in good)
            manifest["splits"][name] = {
                "count": len(good),
                "first_id": int(first_id),
                "per_class": {class_name: per_class.get(i, 0) for i, class_name in enumerate(class_names)},
                "shards": shards,
            }
            first_id += len(good)
    blob = np.frombuffer(b"".join(filenames), np.uint8)
    ends = np.cumsum([len(f) for f in filenames], dtype=np.int64)
    np.savez(
        directory / INDEX,
        label=labels,
        shard=shard_of,
        offset=offsets,
        length=lengths,
        height=heights,
        width=widths,
        shard_files=np.asarray(shard_files, dtype=str),
        filename_bytes=blob,
        filename_ends=ends,
    )
    manifest["index"] = {
        "file": INDEX,
        "records": total,
        "sha256": tfrecords.file_sha256(directory / INDEX, fsync=True),
    }
    return manifest


def _move_into_place(temporary: Path, out_dir: Path) -> None:
    """Renames the finished directory to out_dir; an old shard directory is moved aside first, then removed."""
    if out_dir.exists() and any(out_dir.iterdir()):
        old = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".old-{out_dir.name}-"))
        os.replace(out_dir, old)
        os.replace(temporary, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(temporary, out_dir)  # an empty directory is replaced atomically
