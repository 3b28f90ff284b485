"""Dataset tools for folders of image files: `python -m pipeline data {label,check,stats,split,gather}`.

    label  ROOT [--out labels.txt]             class folders -> `relative/path label` lines + classes.txt
    check  ROOT [--quarantine DIR] [--json]    decode every file; list (and optionally move away) bad ones
    stats  ROOT [--image-size H W]             class counts, per-channel mean/std, mean image (streaming)
    split  ROOT --val 0.1 --test 0.1           stratified train/val/test lists + classes.txt
    gather URLS.txt --out DIR                  download image URLs into class folders, skipping broken links

The lists written by `label` and `split` are what the `file_list` dataset reads (`dataset.lists` +
`dataset.classes`, paths relative to `dataset.root`). "Good" everywhere means what `image_files.check_image`
says: TensorFlow's decoder (the one training and serving use) reads it and it is not tiny. A decodable file
with a misleading name (a GIF named `.jpg`) is good: it is used, and `check` lists it as a warning.

Every output file is written atomically (temporary name, then rename): an interrupted command leaves the
previous file or none, never half of one.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import dataclasses
import errno
import json
import math
import os
import shutil
import stat
import sys
from pathlib import Path

from pipeline import image_files
from pipeline.fileio import atomic_write, atomic_write_json, atomic_write_text


class DataError(RuntimeError):
    """A user error (missing folder, bad arguments): the CLI prints it and exits with code 2."""


# Lists the tools themselves write into ROOT by default: `check` and `stats` do not treat them as images.
LIST_FILES = {"labels.txt", "classes.txt", "train.txt", "val.txt", "test.txt"}
FORMAT_EXTENSIONS = {"jpeg": ".jpg", "png": ".png", "gif": ".gif", "bmp": ".bmp", "webp": ".webp"}


def _existing_folder(root, what: str = "folder") -> Path:
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: no such {what}")
    if not root.is_dir():
        raise DataError(f"{root}: not a {what}")
    try:
        with os.scandir(root) as entries:
            next(entries, None)
    except OSError as error:
        raise DataError(f"{root}: cannot read ({error.strerror or error})") from None
    return root


def _write_lists(files: dict) -> None:
    """Writes {path: text} atomically; a failure is a user error naming the path."""
    for path, text in files.items():
        try:
            atomic_write_text(path, text)
        except OSError as error:
            raise DataError(f"cannot write {path} ({error.strerror or error}); choose another --out") from None


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _sibling(root: Path, suffix: str) -> Path:
    """ROOT/../<rootname><suffix>: outputs that must not land inside the data folder."""
    resolved = root.resolve()
    return resolved.parent / f"{resolved.name}{suffix}"


def _inside(path: Path, folder: Path) -> bool:
    path, folder = Path(os.path.abspath(path)), Path(os.path.abspath(folder))
    return path == folder or folder in path.parents


def _split_folders(root: Path) -> dict:
    try:
        return image_files.split_folders(root)
    except ValueError as error:
        raise DataError(str(error)) from None


def _class_tree(root: Path) -> tuple[list[Path], list[int], list[str]]:
    """list_class_folders, refusing an already split tree (train/ val/ test/ are not classes)."""
    splits = _split_folders(root)
    if splits:
        names = ", ".join(p.name + "/" for p in splits.values())
        raise DataError(f"{root}: holds {names}: it is already split into train/val/test; "
                        f"run the command on one of them (e.g. {root / 'train'})")
    files, labels, class_names = image_files.list_class_folders(root)
    if not class_names:
        raise DataError(f"{root}: no class folders found; expected {root}/<class>/<images>")
    return files, labels, class_names


def _list_lines(files, labels, root: Path, bar: image_files.Progress) -> list[str]:
    lines = []
    for path, label in zip(files, labels):
        relative = _relative(path, root)
        if "\n" in relative or "\r" in relative:
            print(f"warning: skipped {relative!r}: a file name with a line break cannot be listed",
                  file=sys.stderr)
        else:
            lines.append(f"{relative} {label}\n")
        bar.update()
    return lines


# --------------------------------------------------------------------------------------------------
# label
# --------------------------------------------------------------------------------------------------

def label(root, out=None) -> tuple[Path, Path, int]:
    """Writes `relative/path label_index` lines for ROOT/<class>/... and classes.txt beside them.

    Returns (labels file, classes file, number of lines). Order: classes sorted by name, files sorted by
    path within a class, so the same tree always gives the same file.
    """
    root = _existing_folder(root)
    out = Path(out) if out is not None else root / "labels.txt"
    files, labels, class_names = _class_tree(root)
    skip = {os.path.abspath(out), os.path.abspath(out.parent / "classes.txt")}
    kept = [(f, l) for f, l in zip(files, labels) if os.path.abspath(f) not in skip]
    lines = _list_lines([f for f, _ in kept], [l for _, l in kept], root,
                        image_files.Progress(len(kept), "labelling"))
    classes_file = out.parent / "classes.txt"
    _write_lists({out: "".join(lines), classes_file: "".join(f"{name}\n" for name in class_names)})
    return out, classes_file, len(lines)


def label_command(args) -> int:
    out, classes_file, count = label(args.root, args.out)
    print(f"wrote {count} lines to {out} and the class names to {classes_file}")
    return 0


# --------------------------------------------------------------------------------------------------
# check
# --------------------------------------------------------------------------------------------------

def _special_file(path: Path) -> str | None:
    """The reason a path is not a regular file (a FIFO would block `open` forever), else None."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None  # check_image names the error (loop, broken link, permission)
    if stat.S_ISREG(mode):
        return None
    kind = {stat.S_IFIFO: "named pipe", stat.S_IFSOCK: "socket", stat.S_IFCHR: "character device",
            stat.S_IFBLK: "block device"}.get(stat.S_IFMT(mode), "special file")
    return f"not a regular file ({kind})"


def _scan(paths: list[Path], *, min_size: int, workers, cache_dir) -> list[image_files.ImageCheck]:
    """scan_images, plus: special files are reported without being opened, and links that cannot be
    resolved (a loop) are checked on their own, uncached, since the cache hashes `Path.resolve()`,
    which raises RuntimeError on a symbolic link loop."""
    aside = {}
    for index, path in enumerate(paths):
        reason = _special_file(path)
        if reason is not None:
            aside[index] = image_files.ImageCheck(str(path), reason=reason)
        elif cache_dir is not None and path.is_symlink():
            try:
                path.resolve()
            except (RuntimeError, OSError):
                aside[index] = image_files.check_image(path, min_size=min_size)
    normal = [p for i, p in enumerate(paths) if i not in aside]
    scanned = iter(image_files.scan_images(normal, min_size=min_size, workers=workers, progress=True,
                                           cache_dir=cache_dir))
    return [aside[i] if i in aside else next(scanned) for i in range(len(paths))]


def _free_name(destination: Path) -> Path:
    """`destination`, or `name.1.ext`, `name.2.ext`, ... : the first name not taken (links count)."""
    candidate, number = destination, 0
    while os.path.lexists(candidate):
        number += 1
        candidate = destination.with_name(f"{destination.stem}.{number}{destination.suffix}")
    return candidate


def _move(source: Path, destination: Path) -> Path:
    """Moves a file, or a link as a link (a link loop cannot be opened), never overwriting anything."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination = _free_name(destination)
    try:
        os.rename(source, destination)
    except OSError as error:
        if error.errno != errno.EXDEV:
            raise
        shutil.move(source, destination)  # another file system: copies (links stay links), then removes
    return destination


@dataclasses.dataclass
class CheckReport:
    root: str
    files: int
    good: int
    bad: list[dict]
    warnings: list[dict]
    report: str
    quarantine: str | None = None
    min_size: int = 8

    def as_dict(self) -> dict:
        return {"root": self.root, "files": self.files, "good": self.good, "bad_count": len(self.bad),
                "warning_count": len(self.warnings), "min_size": self.min_size,
                "quarantine": self.quarantine, "bad": self.bad, "warnings": self.warnings,
                "note": "files with warnings decode and are used (counted as good); bad files are not"}


def check(root, *, quarantine=None, min_size: int = 8, report=None, workers=None,
          cache: bool = True) -> CheckReport:
    """Decodes every file under ROOT; moves bad ones to `quarantine` (same relative paths) if given.

    The report (every bad file with its reason, every warning) is written to `report` (default
    ROOT/../<rootname>-check.json). Results are cached beside the report, keyed by size and mtime.
    """
    root = _existing_folder(root)
    report = Path(report) if report is not None else _sibling(root, "-check.json")
    if quarantine is not None:
        quarantine = Path(quarantine)
        if _inside(quarantine, root):
            raise DataError(f"--quarantine {quarantine}: must be outside {root} (else it would be scanned, "
                            f"and read as a class folder)")
        if quarantine.exists() and not quarantine.is_dir():
            raise DataError(f"--quarantine {quarantine}: exists and is not a folder")
    if min_size < 1:
        raise DataError(f"--min-size must be >= 1; received {min_size}")
    skip = {os.path.abspath(report)}
    paths = [p for p in image_files.find_files(root)
             if os.path.abspath(p) not in skip and not (p.parent == root and p.name in LIST_FILES)]
    cache_dir = report.with_name(f".{report.stem}-cache") if cache else None
    results = _scan(paths, min_size=min_size, workers=workers, cache_dir=cache_dir)
    bad, warnings = [], []
    for path, result in zip(paths, results):
        relative = _relative(path, root)
        if not result.ok:
            bad.append({"path": relative, "reason": result.reason})
        elif result.warning:
            warnings.append({"path": relative, "warning": result.warning, "format": result.format})
    result = CheckReport(str(root), len(paths), len(paths) - len(bad), bad, warnings, str(report),
                         str(quarantine) if quarantine is not None else None, min_size)
    _write_report(report, result)  # before moving anything: an unwritable report stops here
    if quarantine is not None and bad:
        bar = image_files.Progress(len(bad), "quarantining")
        for entry in bad:
            try:
                entry["moved_to"] = str(_move(root / entry["path"], quarantine / entry["path"]))
            except OSError as error:
                entry["move_error"] = f"not moved: {error.strerror or error}"
            bar.update()
        _write_report(report, result)  # now with where each file went
    return result


def _write_report(report: Path, result: CheckReport) -> None:
    try:
        atomic_write_json(report, result.as_dict())
    except OSError as error:
        raise DataError(f"cannot write the report {report} ({error.strerror or error}); "
                        f"choose another place with --report") from None


def _check_summary(result: CheckReport) -> str:
    line = (f"{result.files} files, {result.good} good, {len(result.bad)} bad, "
            f"{len(result.warnings)} warnings")
    if result.quarantine is not None:
        moved = sum("moved_to" in entry for entry in result.bad)
        line += f"; {moved} bad moved to {result.quarantine}"
    return line + f"; report: {result.report}"


def check_command(args) -> int:
    result = check(args.root, quarantine=args.quarantine, min_size=args.min_size, report=args.report,
                   workers=args.workers, cache=not args.no_cache)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
        print(_check_summary(result), file=sys.stderr)
    else:
        for entry in result.bad:
            extra = f" (moved to {entry['moved_to']})" if "moved_to" in entry else ""
            extra += f" ({entry['move_error']})" if "move_error" in entry else ""
            print(f"{entry['path']}: {entry['reason']}{extra}")
        for entry in result.warnings:
            print(f"warning: {entry['path']}: {entry['warning']}")
        if result.warnings:
            print("note: files with warnings decode and are used for training (counted as good)")
        print(_check_summary(result))
    return 1 if result.bad else 0


# --------------------------------------------------------------------------------------------------
# stats
# --------------------------------------------------------------------------------------------------

def _stats_files(root: Path) -> tuple[list[Path], list[str | None], list[str] | None]:
    """(files, class name of each or None, class names or None) from class folders, split folders
    (train/<class>/..., classes merged over the splits) or, without folders, every file."""
    splits = _split_folders(root)
    if splits:
        files, names, classes = [], [], set()
        for directory in splits.values():
            found, labels, class_names = image_files.list_class_folders(directory)
            files += found
            names += [class_names[l] for l in labels]
            classes.update(class_names)
        return files, names, sorted(classes)
    files, labels, class_names = image_files.list_class_folders(root)
    if class_names:
        return files, [class_names[l] for l in labels], class_names
    files = [p for p in image_files.find_files(root) if not (p.parent == root and p.name in LIST_FILES)]
    return files, [None] * len(files), None


def _load_resized(path: Path, image_size, channels: int, min_size: int):
    """float32 [H, W, C] in 0..255, or None when the file is not a good image."""
    import tensorflow as tf
    from pipeline.preprocessing import convert_channels

    if _special_file(path):
        return None
    try:
        with open(path, "rb") as handle:
            data = handle.read()
        image = tf.io.decode_image(data, channels=0, expand_animations=False)
    except (OSError, tf.errors.InvalidArgumentError, tf.errors.UnknownError):
        return None
    if min(int(image.shape[0]), int(image.shape[1])) < min_size:
        return None
    image = convert_channels(image, channels)
    return tf.image.resize(image, image_size).numpy()


def stats(root, *, image_size=(64, 64), channels: int = 3, out=None, min_size: int = 8,
          workers: int | None = None) -> dict:
    """Class counts, per-channel mean/std and the mean image of ROOT's images, at `image_size`.

    Streaming: images are decoded (TensorFlow), converted to `channels` and resized a few at a time in
    threads and folded into float64 running sums (Chan's parallel mean/variance), so memory does not grow
    with the dataset. Bad files are skipped and listed. Writes stats.json, mean.png and mean.npy to `out`
    (default ROOT/../<rootname>-stats/) and returns the stats.json content.
    """
    import numpy as np

    root = _existing_folder(root)
    height, width = (int(v) for v in image_size)
    if height < 1 or width < 1:
        raise DataError(f"--image-size must be positive; received {height} {width}")
    if channels not in (1, 3):
        raise DataError(f"--channels must be 1 or 3; received {channels}")
    out = Path(out) if out is not None else _sibling(root, "-stats")
    files, names, class_names = _stats_files(root)
    count = 0
    mean = np.zeros(channels)
    m2 = np.zeros(channels)
    image_sum = np.zeros((height, width, channels))
    per_class = collections.Counter()
    skipped = []
    bar = image_files.Progress(len(files), "computing statistics")
    workers = workers or min(4, os.cpu_count() or 1)
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        pending = collections.deque()
        queue = iter(range(len(files)))

        def submit(limit):
            for index in queue:
                pending.append((index, pool.submit(_load_resized, files[index], (height, width), channels,
                                                   min_size)))
                if len(pending) >= limit:
                    return

        submit(2 * workers)
        while pending:
            index, future = pending.popleft()
            image = future.result()
            submit(2 * workers)
            bar.update()
            if image is None:
                reason = (_special_file(files[index]) or image_files.check_image(files[index], min_size=min_size).reason
                          or "cannot be decoded")
                skipped.append({"path": _relative(files[index], root), "reason": reason})
                continue
            pixels = image.astype(np.float64).reshape(-1, channels)
            n_b = len(pixels)
            mean_b = pixels.mean(axis=0)
            m2_b = np.square(pixels - mean_b).sum(axis=0)
            n_a = count * height * width
            delta = mean_b - mean
            total = n_a + n_b
            mean = mean + delta * n_b / total
            m2 = m2 + m2_b + np.square(delta) * n_a * n_b / total
            image_sum += image
            count += 1
            if names[index] is not None:
                per_class[names[index]] += 1
    if count == 0:
        raise DataError(f"{root}: no decodable images among {len(files)} files")
    std = np.sqrt(m2 / (count * height * width))
    mean_image = image_sum / count
    result = {
        "root": str(root),
        "images": count,
        "files": len(files),
        "image_size": [height, width],
        "channels": channels,
        "class_counts": {name: per_class[name] for name in class_names} if class_names is not None else None,
        "mean": mean.tolist(),
        "std": std.tolist(),
        "mean_unit": (mean / 255.0).tolist(),
        "std_unit": (std / 255.0).tolist(),
        "skipped": skipped,
        "note": "mean/std: per channel over every pixel of the resized images; 'mean'/'std' in 0..255, "
                "'*_unit' in 0..1 (for input.normalization: standardize, use the 0..255 values)",
    }
    import tensorflow as tf

    png = tf.io.encode_png(np.clip(np.round(mean_image), 0, 255).astype(np.uint8)).numpy()

    def write_png(temporary):
        with open(temporary, "wb") as handle:
            handle.write(png)

    try:
        atomic_write(out / "mean.npy", lambda temporary: np.save(temporary, mean_image.astype(np.float32)),
                     suffix=".npy")
        atomic_write(out / "mean.png", write_png, suffix=".png")
        atomic_write_json(out / "stats.json", result)
    except OSError as error:
        raise DataError(f"cannot write to {out} ({error.strerror or error}); choose another --out") from None
    return result


def stats_command(args) -> int:
    result = stats(args.root, image_size=args.image_size, channels=args.channels, out=args.out,
                   min_size=args.min_size)
    out = Path(args.out) if args.out is not None else _sibling(Path(args.root), "-stats")
    for entry in result["skipped"]:
        print(f"skipped {entry['path']}: {entry['reason']}")
    if result["class_counts"] is not None:
        for name, number in result["class_counts"].items():
            print(f"{name}: {number}")
    rounded = lambda values, digits: "[" + ", ".join(f"{v:.{digits}f}" for v in values) + "]"  # noqa: E731
    print(f"mean {rounded(result['mean'], 2)} std {rounded(result['std'], 2)} (0..255); "
          f"mean {rounded(result['mean_unit'], 4)} std {rounded(result['std_unit'], 4)} (0..1)")
    print(f"{result['images']} images, {len(result['skipped'])} skipped; wrote {out}/stats.json, mean.png, "
          f"mean.npy")
    return 0


# --------------------------------------------------------------------------------------------------
# split
# --------------------------------------------------------------------------------------------------

def _split_counts(count: int, val: float, test: float) -> tuple[int, int]:
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
    (default ROOT). Per class, the files are shuffled with `seed` and the first `round(n*test)` go to test,
    the next `round(n*val)` to val, the rest to train (the same per-class draw as
    datasets.stratified_split, with at least one image per split for classes of 3+ images). Disjoint,
    covering, and the same for the same seed and tree. Returns {split: [(path, label), ...]}."""
    import numpy as np

    root = _existing_folder(root)
    for name, value in (("--val", val), ("--test", test)):
        if not 0 <= value < 1:
            raise DataError(f"{name} must be in [0, 1); received {value}")
    if val + test >= 1:
        raise DataError(f"--val + --test must be below 1 (something must be left to train on); "
                        f"received {val} + {test}")
    out = Path(out) if out is not None else root
    files, labels, class_names = _class_tree(root)
    outputs = {os.path.abspath(out / name) for name in ("train.txt", "val.txt", "test.txt", "classes.txt")}
    kept = [(f, l) for f, l in zip(files, labels) if os.path.abspath(f) not in outputs]
    by_class = collections.defaultdict(list)
    for path, label_index in kept:
        by_class[label_index].append(path)
    rng = np.random.default_rng(seed)
    splits = {"train": [], "val": [], "test": []}
    for label_index in range(len(class_names)):
        members = by_class[label_index]
        order = rng.permutation(len(members))
        n_val, n_test = _split_counts(len(members), val, test)
        for position, member in enumerate(order):
            name = "test" if position < n_test else "val" if position < n_test + n_val else "train"
            splits[name].append((members[member], label_index))
    bar = image_files.Progress(len(kept), "writing lists")
    texts = {}
    for name, entries in splits.items():
        entries.sort(key=lambda item: (item[1], str(item[0])))
        texts[out / f"{name}.txt"] = "".join(_list_lines([p for p, _ in entries], [l for _, l in entries],
                                                         root, bar))
    texts[out / "classes.txt"] = "".join(f"{name}\n" for name in class_names)
    _write_lists(texts)
    splits["class_names"] = class_names
    return splits


def split_command(args) -> int:
    result = split(args.root, val=args.val, test=args.test, seed=args.seed, out=args.out)
    out = Path(args.out) if args.out is not None else Path(args.root)
    class_names = result["class_names"]
    print(f"{'class':<24} {'train':>7} {'val':>7} {'test':>7}")
    for index, name in enumerate(class_names):
        counts = [sum(1 for _, l in result[s] if l == index) for s in ("train", "val", "test")]
        print(f"{name:<24} {counts[0]:>7} {counts[1]:>7} {counts[2]:>7}")
    print(f"{'total':<24} {len(result['train']):>7} {len(result['val']):>7} {len(result['test']):>7}")
    print(f"wrote {out}/train.txt, val.txt, test.txt, classes.txt (seed {args.seed}); use them with "
          f"dataset.name=file_list, dataset.root={args.root}")
    return 0


# --------------------------------------------------------------------------------------------------
# Command line (wired into pipeline/cli.py)
# --------------------------------------------------------------------------------------------------

def add_parser(commands) -> None:
    """Adds `data {label,check,stats,split,gather}` to the CLI's subcommands."""
    data = commands.add_parser("data", help="dataset tools: label, check, stats, split, gather",
                               description=__doc__.splitlines()[0])
    tools = data.add_subparsers(dest="data_command", required=True, metavar="TOOL")

    label_parser = tools.add_parser("label", help="class folders -> `relative/path label` list + classes.txt")
    label_parser.add_argument("root", type=Path, metavar="ROOT", help="folder holding one sub-folder per class")
    label_parser.add_argument("--out", type=Path, help="list file (default ROOT/labels.txt); classes.txt beside it")

    check_parser = tools.add_parser(
        "check", help="decode every file; list bad ones (exit 1 if any), optionally move them away",
        description="Decodes every file under ROOT. Prints `path: reason` for each bad file, then "
                    "`warning: path: ...` for good but odd files (e.g. a GIF named .jpg: it decodes, so "
                    "it is GOOD and used; only its name is wrong), then a summary. Exit 0 when all files "
                    "are good, 1 when any is bad.")
    check_parser.add_argument("root", type=Path, metavar="ROOT")
    check_parser.add_argument("--quarantine", type=Path, metavar="DIR",
                              help="move bad files to DIR, keeping their paths relative to ROOT (never "
                                   "deletes, never overwrites)")
    check_parser.add_argument("--json", action="store_true", help="print the JSON report instead of lines")
    check_parser.add_argument("--min-size", type=int, default=8, metavar="N",
                              help="images with a side shorter than N pixels are bad (default 8)")
    check_parser.add_argument("--report", type=Path, metavar="FILE",
                              help="JSON report (default ROOT/../<rootname>-check.json)")
    check_parser.add_argument("--workers", type=int, help="decoding threads")
    check_parser.add_argument("--no-cache", action="store_true",
                              help="decode every file again (default: unchanged files reuse the last result)")

    stats_parser = tools.add_parser("stats", help="class counts, per-channel mean/std and the mean image")
    stats_parser.add_argument("root", type=Path, metavar="ROOT")
    stats_parser.add_argument("--image-size", type=int, nargs=2, default=[64, 64], metavar=("H", "W"))
    stats_parser.add_argument("--channels", type=int, choices=[1, 3], default=3)
    stats_parser.add_argument("--min-size", type=int, default=8, metavar="N",
                              help="skip images with a side shorter than N pixels (as `check` does)")
    stats_parser.add_argument("--out", type=Path, metavar="DIR", help="default ROOT/../<rootname>-stats/")

    split_parser = tools.add_parser("split", help="stratified train/val/test lists + classes.txt")
    split_parser.add_argument("root", type=Path, metavar="ROOT")
    split_parser.add_argument("--val", type=float, default=0.1, help="fraction per class (default 0.1)")
    split_parser.add_argument("--test", type=float, default=0.1, help="fraction per class (default 0.1)")
    split_parser.add_argument("--seed", type=int, default=0)
    split_parser.add_argument("--out", type=Path, metavar="DIR", help="default ROOT")

    gather_parser = tools.add_parser("gather", help="download image URLs into class folders")
    gather_parser.add_argument("urls", type=Path, metavar="URLS.txt",
                               help="lines `url` or `url<TAB>class`; blank lines and # comments ignored")
    gather_parser.add_argument("--out", type=Path, required=True, metavar="DIR")
    gather_parser.add_argument("--workers", type=int, default=8)
    gather_parser.add_argument("--timeout", type=float, default=30.0, metavar="S",
                               help="seconds to wait for the connection and for each read (default 30)")
    gather_parser.add_argument("--retries", type=int, default=2, metavar="N",
                               help="extra attempts after a timeout, HTTP 5xx or connection error (default 2)")


def _gather_command(args) -> int:
    from pipeline import gather  # the downloader lives in its own module; it imports this one

    return gather.gather_command(args)


def main(args: argparse.Namespace) -> int:
    """Runs a parsed `data ...` command; returns the exit code. Raises DataError on user errors."""
    commands = {"label": label_command, "check": check_command, "stats": stats_command,
                "split": split_command, "gather": _gather_command}
    return commands[args.data_command](args)

