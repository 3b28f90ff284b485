"""`python -m pipeline data check ROOT [--quarantine DIR] [--json]`: decode every file, list bad ones.

"Good" means what `image_files.check_image` says: TensorFlow's decoder (the one training and serving
use) reads it and it is not tiny. A decodable file with a misleading name (a GIF named `.jpg`) is good:
it is used, and `check` lists it as a warning. The JSON report is written atomically.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import sys
from pathlib import Path

from pipeline.core import fileio
from pipeline.core.fileio import atomic_write_json
from pipeline.data import image_files
from pipeline.tools import common

HELP = "decode every file; list bad ones (exit 1 if any), optionally move them away"
DESCRIPTION = (
    "Decodes every file under ROOT. Prints `path: reason` for each bad file, then "
    "`warning: path: ...` for good but odd files (e.g. a GIF named .jpg: it decodes, so it is "
    "GOOD and used; only its name is wrong), then a summary. Exit 0 when all files are good, 1 "
    "when any is bad."
)


def add_arguments(parser) -> None:
    """Adds ROOT and the options of `data check` (and its long description) to the sub-parser."""
    parser.description = DESCRIPTION
    parser.add_argument("root", type=Path, metavar="ROOT")
    parser.add_argument(
        "--quarantine",
        type=Path,
        metavar="DIR",
        help="move bad files to DIR, keeping their paths relative to ROOT (never deletes, never overwrites)",
    )
    parser.add_argument("--json", action="store_true", help="print the JSON report instead of lines")
    parser.add_argument(
        "--min-size",
        type=int,
        default=8,
        metavar="N",
        help="images with a side shorter than N pixels are bad (default 8)",
    )
    parser.add_argument(
        "--report", type=Path, metavar="FILE", help="JSON report (default ROOT/../<rootname>-check.json)"
    )
    parser.add_argument("--workers", type=int, help="decoding threads")
    parser.add_argument(
        "--no-cache",
        action="store_true",
        help="decode every file again (default: unchanged files reuse the last result)",
    )


def _scan(paths: list[Path], *, min_size: int, workers, cache_dir) -> list[image_files.ImageCheck]:
    """scan_images, plus: special files are reported without being opened, and links that cannot be
    resolved (a loop) are checked on their own, uncached, since the cache hashes `Path.resolve()`,
    which raises RuntimeError on a symbolic link loop."""
    aside = {}
    for index, path in enumerate(paths):
        reason = common.special_file(path)
        if reason is not None:
            aside[index] = image_files.ImageCheck(str(path), reason=reason)
        elif cache_dir is not None and path.is_symlink():
            try:
                path.resolve()
            except (RuntimeError, OSError):
                aside[index] = image_files.check_image(path, min_size=min_size)
    normal = [p for i, p in enumerate(paths) if i not in aside]
    scanned = iter(
        image_files.scan_images(normal, min_size=min_size, workers=workers, progress=True, cache_dir=cache_dir)
    )
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
    """What `check` found: counts, every bad file {path, reason[, moved_to|move_error]}, every warning
    {path, warning, format}; paths relative to `root`."""

    root: str
    files: int
    good: int
    bad: list[dict]
    warnings: list[dict]
    report: str
    quarantine: str | None = None
    min_size: int = 8

    def as_dict(self) -> dict:
        return {
            "root": self.root,
            "files": self.files,
            "good": self.good,
            "bad_count": len(self.bad),
            "warning_count": len(self.warnings),
            "min_size": self.min_size,
            "quarantine": self.quarantine,
            "bad": self.bad,
            "warnings": self.warnings,
            "note": "files with warnings decode and are used (counted as good); bad files are not",
        }


def check(root, *, quarantine=None, min_size: int = 8, report=None, workers=None, cache: bool = True) -> CheckReport:
    """Decodes every file under ROOT; moves bad ones to `quarantine` (same relative paths) if given.

    The report (every bad file with its reason, every warning) is written to `report` (default
    ROOT/../<rootname>-check.json). Results are cached beside the report, keyed by size and mtime.

    Raises:
        DataError: ROOT missing or unreadable, a quarantine inside ROOT or not a folder, min_size < 1,
            or a report that cannot be written.
    """
    root = common.existing_folder(root)
    report = Path(report) if report is not None else common.sibling(root, "-check.json")
    if quarantine is not None:
        quarantine = Path(quarantine)
        if common.inside(quarantine, root):
            raise common.DataError(
                f"--quarantine {quarantine}: must be outside {root} (else it would be "
                f"scanned, and read as a class folder)"
            )
        if quarantine.exists() and not quarantine.is_dir():
            raise common.DataError(f"--quarantine {quarantine}: exists and is not a folder")
    if min_size < 1:
        raise common.DataError(f"--min-size must be >= 1; received {min_size}")
    skip = {os.path.abspath(report)}
    paths = [
        p
        for p in image_files.find_files(root)
        if os.path.abspath(p) not in skip and not (p.parent == root and p.name in common.LIST_FILES)
    ]
    cache_dir = report.with_name(f".{report.stem}-cache") if cache else None
    results = _scan(paths, min_size=min_size, workers=workers, cache_dir=cache_dir)
    bad, warnings = [], []
    for path, result in zip(paths, results):
        name = common.relative(path, root)
        if not result.ok:
            bad.append({"path": name, "reason": result.reason})
        elif result.warning:
            warnings.append({"path": name, "warning": result.warning, "format": result.format})
    result = CheckReport(
        str(root),
        len(paths),
        len(paths) - len(bad),
        bad,
        warnings,
        str(report),
        str(quarantine) if quarantine is not None else None,
        min_size,
    )
    _write_report(report, result)  # before moving anything: an unwritable report stops here
    if quarantine is not None and bad:
        with image_files.progress_bar(len(bad), "quarantining") as bar:
            for entry in bad:
                try:
                    entry["moved_to"] = str(_move(root / entry["path"], quarantine / entry["path"]))
                except OSError as error:
                    entry["move_error"] = f"not moved: {fileio.os_reason(error)}"
                bar.update()
        _write_report(report, result)  # now with where each file went
    return result


def _write_report(report: Path, result: CheckReport) -> None:
    try:
        atomic_write_json(report, result.as_dict())
    except OSError as error:
        raise common.DataError(
            f"cannot write the report {report} ({fileio.os_reason(error)}); choose another place with --report"
        ) from None


def _summary(result: CheckReport) -> str:
    line = f"{result.files} files, {result.good} good, {len(result.bad)} bad, {len(result.warnings)} warnings"
    if result.quarantine is not None:
        moved = sum("moved_to" in entry for entry in result.bad)
        line += f"; {moved} bad moved to {result.quarantine}"
    return line + f"; report: {result.report}"


def run(args) -> int:
    """`data check`: prints bad files, warnings and a summary (or the JSON report); 1 if any is bad."""
    result = check(
        args.root,
        quarantine=args.quarantine,
        min_size=args.min_size,
        report=args.report,
        workers=args.workers,
        cache=not args.no_cache,
    )
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
        print(_summary(result), file=sys.stderr)
    else:
        for entry in result.bad:
            extra = f" (moved to {entry['moved_to']})" if "moved_to" in entry else ""
            extra += f" ({entry['move_error']})" if "move_error" in entry else ""
            print(f"{entry['path']}: {entry['reason']}{extra}")
        for entry in result.warnings:
            print(f"warning: {entry['path']}: {entry['warning']}")
        if result.warnings:
            print("note: files with warnings decode and are used for training (counted as good)")
        print(_summary(result))
    return 1 if result.bad else 0
