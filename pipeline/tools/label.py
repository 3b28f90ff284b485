"""`python -m pipeline data label ROOT [--out labels.txt]`: class folders -> `relative/path label` lines.

The list (and classes.txt beside it) is what the `file_list` dataset reads (`dataset.lists` +
`dataset.classes`, paths relative to `dataset.root`).
"""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.data import image_files
from pipeline.tools import common

HELP = "class folders -> `relative/path label` list + classes.txt"


def add_arguments(parser) -> None:
    """Adds ROOT and --out to the `data label` sub-parser."""
    parser.add_argument("root", type=Path, metavar="ROOT", help="folder holding one sub-folder per class")
    parser.add_argument("--out", type=Path, help="list file (default ROOT/labels.txt); classes.txt beside it")


def label(root, out=None) -> tuple[Path, Path, int]:
    """Writes `relative/path label_index` lines for ROOT/<class>/... and classes.txt beside them.

    Order: classes sorted by name, files sorted by path within a class, so the same tree always gives
    the same file. The command's own outputs are not listed (a rerun gives the same file).

    Returns:
        (labels file, classes file, number of lines written).
    Raises:
        DataError: ROOT is missing, unreadable, already split, or holds no class folder; or the outputs
            cannot be written.
    """
    root = common.existing_folder(root)
    out = Path(out) if out is not None else root / "labels.txt"
    files, labels, class_names = common.class_tree(root)
    skip = {os.path.abspath(out), os.path.abspath(out.parent / "classes.txt")}
    kept = [(f, label) for f, label in zip(files, labels) if os.path.abspath(f) not in skip]
    with image_files.progress_bar(len(kept), "labelling") as bar:
        lines = common.list_lines([f for f, _ in kept], [label for _, label in kept], root, bar)
    classes_file = out.parent / "classes.txt"
    common.write_lists({out: "".join(lines), classes_file: "".join(f"{name}\n" for name in class_names)})
    return out, classes_file, len(lines) - 1  # the header line is not an image


def run(args) -> int:
    """`data label`: writes the lists and prints where; exit code 0."""
    out, classes_file, count = label(args.root, args.out)
    print(f"wrote {count} lines to {out} and the class names to {classes_file}")
    return 0
