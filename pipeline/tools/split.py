"""`python -m pipeline data split ROOT --val 0.1 --test 0.1`: stratified train/val/test lists.

The lists (`relative/path label` lines) and classes.txt are what the `file_list` dataset reads.
"""

from __future__ import annotations

import collections
import math
import os
from pathlib import Path

from pipeline.data import image_files
from pipeline.tools import common

HELP = "stratified train/val/test lists + classes.txt"


def add_arguments(parser) -> None:
    """Adds ROOT, --val, --test, --seed and --out to the `data split` sub-parser."""
    parser.add_argument("root", type=Path, metavar="ROOT")
    parser.add_argument("--val", type=float, default=0.1, help="fraction per class (default 0.1)")
    parser.add_argument("--test", type=float, default=0.1, help="fraction per class (default 0.1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, metavar="DIR", help="default ROOT")


def split_counts(count: int, val: float, test: float) -> tuple[int, int]:
    """(val, test) image counts for a class of `count`: rounded fractions, but at least one image in
    each requested split when the class has enough images (one per split plus one for train)."""
    n_val, n_test = math.floor(count * val + 0.5), math.floor(count * test + 0.5)
    if count >= 1 + (val > 0) + (test > 0):
        n_val = max(n_val, 1) if val > 0 else 0
        n_test = max(n_test, 1) if test > 0 else 0
    while count and n_val + n_test > count - 1 and (n_val or n_test):  # train keeps at least one
        if n_val >= n_test:
            n_val -= 1
        else:
            n_test -= 1
    return n_val, n_test


def split(root, *, val: float = 0.1, test: float = 0.1, seed: int = 0, out=None) -> dict:
    """Stratified train/val/test lists (`relative/path label` lines) + classes.txt, written to `out`
    (default ROOT).

    Per class, the files are shuffled with `seed` and the first `round(n*test)` go to test, the next
    `round(n*val)` to val, the rest to train (the same per-class draw as datasets.stratified_split, with
    at least one image per split for classes of 3+ images). Disjoint, covering, and the same for the
    same seed and tree.

    Returns:
        {"train"|"val"|"test": [(path, label_index), ...], "class_names": [str, ...]}.
    Raises:
        DataError: a fraction outside [0, 1), fractions summing to 1 or more, ROOT not a class tree,
            or an output that cannot be written.
    """
    import numpy as np

    root = common.existing_folder(root)
    for name, value in (("--val", val), ("--test", test)):
        if not 0 <= value < 1:
            raise common.DataError(f"{name} must be in [0, 1); received {value}")
    if val + test >= 1:
        raise common.DataError(
            f"--val + --test must be below 1 (something must be left to train on); received {val} + {test}"
        )
    out = Path(out) if out is not None else root
    files, labels, class_names = common.class_tree(root)
    outputs = {os.path.abspath(out / name) for name in ("train.txt", "val.txt", "test.txt", "classes.txt")}
    kept = [(f, label) for f, label in zip(files, labels) if os.path.abspath(f) not in outputs]
    by_class = collections.defaultdict(list)
    for path, label_index in kept:
        by_class[label_index].append(path)
    rng = np.random.default_rng(seed)
    splits = {"train": [], "val": [], "test": []}
    for label_index in range(len(class_names)):
        members = by_class[label_index]
        order = rng.permutation(len(members))
        n_val, n_test = split_counts(len(members), val, test)
        for position, member in enumerate(order):
            name = "test" if position < n_test else "val" if position < n_test + n_val else "train"
            splits[name].append((members[member], label_index))
    texts = {}
    with image_files.progress_bar(len(kept), "writing lists") as bar:
        for name, entries in splits.items():
            entries.sort(key=lambda item: (item[1], str(item[0])))
            texts[out / f"{name}.txt"] = "".join(
                common.list_lines([p for p, _ in entries], [label for _, label in entries], root, bar)
            )
    texts[out / "classes.txt"] = "".join(f"{name}\n" for name in class_names)
    common.write_lists(texts)
    splits["class_names"] = class_names
    return splits


def run(args) -> int:
    """`data split`: writes the lists and prints a per-class count table; exit code 0."""
    result = split(args.root, val=args.val, test=args.test, seed=args.seed, out=args.out)
    out = Path(args.out) if args.out is not None else Path(args.root)
    class_names = result["class_names"]
    print(f"{'class':<24} {'train':>7} {'val':>7} {'test':>7}")
    for index, name in enumerate(class_names):
        counts = [sum(1 for _, label in result[s] if label == index) for s in ("train", "val", "test")]
        print(f"{name:<24} {counts[0]:>7} {counts[1]:>7} {counts[2]:>7}")
    print(f"{'total':<24} {len(result['train']):>7} {len(result['val']):>7} {len(result['test']):>7}")
    print(
        f"wrote {out}/train.txt, val.txt, test.txt, classes.txt (seed {args.seed}); use them with "
        f"dataset.name=file_list, dataset.root={args.root}"
    )
    return 0
