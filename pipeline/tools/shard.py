"""`python -m pipeline data shard ROOT --out DIR`: a folder or file-list dataset as TFRecord shards.

ROOT is read as training reads it: `ROOT/<class>/...` or `ROOT/{train,val,test}/<class>/...`
(`folders.read_folder_tree`), or, with `--list`, list files of `relative/path label` lines
(`folders.read_file_lists`; a Food-101 style ROOT with meta/classes.txt is recognised without `--list`).
Every file is checked first (`image_files.scan_images`, cached beside DIR); bad ones are left out and
listed as `data check` lists them. The shard layout, record ids and readers: `pipeline/data/records.py`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pipeline.tools import common

HELP = "write a folder or file-list dataset as TFRecord shards with a manifest (dataset.name=tfrecord)"
DESCRIPTION = (
    "Checks every image of ROOT and writes the good ones as TFRecord shards of tf.train.Example "
    "(image bytes, label, class name, file name, size) per split, DIR/<split>-00000-of-000NN"
    ".tfrecord, with DIR/index.npz and DIR/manifest.json (classes, counts per split and class, "
    "sha256 of every file). Bad files are listed (`path: reason`) and left out. DIR is written "
    "whole or not at all."
)


def add_arguments(parser) -> None:
    """Adds ROOT, --out and the options of `data shard` to the sub-parser."""
    parser.description = DESCRIPTION
    parser.add_argument(
        "root",
        type=Path,
        metavar="ROOT",
        help="folder of class folders, or of train/ val/ test/ folders of class folders",
    )
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="shard directory to write")
    parser.add_argument(
        "--shards",
        type=int,
        metavar="N",
        help="shards per split (default: ~128 MB each, at least 8; never more than images)",
    )
    parser.add_argument(
        "--max-side",
        type=int,
        metavar="PX",
        help="shrink images whose longer side exceeds PX pixels to PX (re-encoded as JPEG "
        "quality 95); others keep their original bytes",
    )
    parser.add_argument("--workers", type=int, metavar="K", help="checking and encoding threads (default: CPUs)")
    parser.add_argument(
        "--list",
        dest="lists",
        action="append",
        default=[],
        metavar="SPLIT=FILE",
        help="a file-list dataset: `relative/path label` lines, paths relative to ROOT "
        "(repeatable; SPLIT is train, val or test; needs --classes)",
    )
    parser.add_argument("--classes", type=Path, metavar="FILE", help="class names, one per line (with --list)")
    parser.add_argument(
        "--min-size",
        type=int,
        default=8,
        metavar="N",
        help="images with a side shorter than N pixels are bad (default 8, as `data check`)",
    )
    parser.add_argument(
        "--skip-placeholders",
        action="store_true",
        help="also leave out images `data check` flags as possible placeholders "
        "(as dataset.skip_placeholders=true does in training)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the order records are spread over shards")
    parser.add_argument("--overwrite", action="store_true", help="replace the shards already in DIR")


def _parse_lists(entries: list[str]) -> dict:
    from pipeline.data import image_files

    lists = {}
    for entry in entries:
        split, separator, path = entry.partition("=")
        if not separator or split not in image_files.SPLIT_NAMES or not path:
            raise common.DataError(f"--list must be SPLIT=FILE with SPLIT train, val or test; received {entry!r}")
        lists[image_files.SPLIT_NAMES[split]] = path
    return lists


def _source(root: Path, lists: dict, classes):
    """The dataset at ROOT as a folders.FileDataset (paths + labels per split)."""
    from pipeline.data import folders

    if lists or (root / "meta" / "classes.txt").is_file():
        return folders.read_file_lists(root=str(root), lists=lists or None, classes=str(classes) if classes else None)
    if classes:
        raise common.DataError(
            "--classes goes with --list (a file-list dataset); a folder's classes are its sub-folder names"
        )
    return folders.read_folder_tree(root)


def run(args) -> int:
    """`data shard`: lists bad files and warnings, then a summary with the rate; 0 when the shards are written.

    Raises:
        common.DataError: bad arguments, ROOT unreadable, DIR inside ROOT or holding other files.
        folders.DatasetError, tfrecords.TFRecordError: the dataset cannot be read, DIR cannot be written.
    """
    from pipeline.data import record_writer as tfrecord_writer

    root = common.existing_folder(args.root)
    for flag, value in (
        ("--shards", args.shards),
        ("--max-side", args.max_side),
        ("--workers", args.workers),
        ("--min-size", args.min_size),
    ):
        if value is not None and value < 1:
            raise common.DataError(f"{flag} must be >= 1; received {value}")
    if common.inside(args.out, root):
        raise common.DataError(f"--out {args.out}: must be outside {root} (it would be read as a class folder)")
    data = _source(root, _parse_lists(args.lists), args.classes)
    result = tfrecord_writer.write_shards(
        data.splits,
        data.class_names,
        out_dir=args.out,
        source_root=data.root,
        num_shards=args.shards,
        max_side=args.max_side,
        workers=args.workers,
        min_size=args.min_size,
        skip_placeholders=args.skip_placeholders,
        seed=args.seed,
        overwrite=args.overwrite,
    )
    for entry in result.skipped:
        print(f"{entry['path']}: {entry['reason']}")
    for entry in result.warnings:
        print(f"warning: {entry['path']}: {entry['warning']}")
    manifest = result.manifest
    for name, split in manifest["splits"].items():
        empty = [c for c, n in split["per_class"].items() if n == 0]
        if empty and split["count"]:
            print(f"warning: {name}: no image of class(es) {', '.join(empty)}", file=sys.stderr)
    written = manifest["index"]["records"]
    seconds = result.scan_seconds + result.write_seconds
    counts = ", ".join(
        f"{name} {split['count']} in {len(split['shards'])} shards" for name, split in manifest["splits"].items()
    )
    print(
        f"wrote {written} records to {args.out} ({counts}); {len(result.skipped)} bad files left out; "
        f"{written / max(seconds, 1e-9):.1f} images/s overall (check {result.scan_seconds:.1f} s, "
        f"write {result.write_seconds:.1f} s)"
    )
    return 0
