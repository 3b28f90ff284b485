"""Helpers shared by the data tools: the user-error class, folder checks, list writing, class trees.

Everything here is standard library plus `pipeline.data.image_files` (which imports TensorFlow only inside
its decoding functions), so a tool module can import it while the CLI is still parsing arguments.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

from pipeline.core import fileio
from pipeline.core.errors import UserError
from pipeline.core.fileio import atomic_write_text
from pipeline.data import image_files


class DataError(UserError):
    """A user error (missing folder, bad arguments, unwritable output): the CLI prints it, exit code 2."""


# Lists the tools themselves write into ROOT by default: `check` and `stats` do not treat them as images.
LIST_FILES = {"labels.txt", "classes.txt", "train.txt", "val.txt", "test.txt"}
# image_files.sniff_format's decodable formats -> the extension a file of that content is saved under.
FORMAT_EXTENSIONS = {"jpeg": ".jpg", "png": ".png", "gif": ".gif", "bmp": ".bmp", "webp": ".webp"}


def existing_folder(root, what: str = "folder") -> Path:
    """`root` as a Path once it is known to be a readable folder.

    Raises:
        DataError: it does not exist, is not a folder, or cannot be listed (the message names it).
    """
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: no such {what}")
    if not root.is_dir():
        raise DataError(f"{root}: not a {what}")
    try:
        with os.scandir(root) as entries:
            next(entries, None)
    except OSError as error:
        raise DataError(f"{root}: cannot read ({fileio.os_reason(error)})") from None
    return root


def write_lists(files: dict) -> None:
    """Writes {path: text} atomically, one file after the other.

    Raises:
        DataError: a file cannot be written (the message names it and suggests another --out).
    """
    for path, text in files.items():
        try:
            atomic_write_text(path, text)
        except OSError as error:
            raise DataError(f"cannot write {path} ({fileio.os_reason(error)}); choose another --out") from None


def relative(path: Path, root: Path) -> str:
    """`path` relative to `root`, with forward slashes (the form list files hold)."""
    return path.relative_to(root).as_posix()


def sibling(root: Path, suffix: str) -> Path:
    """ROOT/../<rootname><suffix>: outputs that must not land inside the data folder."""
    resolved = root.resolve()
    return resolved.parent / f"{resolved.name}{suffix}"


def inside(path: Path, folder: Path) -> bool:
    """True when `path` is `folder` or lies under it (compared as absolute paths, links not resolved)."""
    path, folder = Path(os.path.abspath(path)), Path(os.path.abspath(folder))
    return path == folder or folder in path.parents


def split_folders(root: Path) -> dict:
    """image_files.split_folders, with its ValueError (both val/ and validation/) as a DataError."""
    try:
        return image_files.split_folders(root)
    except ValueError as error:
        raise DataError(str(error)) from None


def class_tree(root: Path) -> tuple[list[Path], list[int], list[str]]:
    """image_files.list_class_folders, refusing an already split tree (train/ val/ test/ are not classes).

    Raises:
        DataError: ROOT holds split folders, or no class folder at all.
    """
    splits = split_folders(root)
    if splits:
        names = ", ".join(p.name + "/" for p in splits.values())
        raise DataError(
            f"{root}: holds {names}: it is already split into train/val/test; "
            f"run the command on one of them (e.g. {root / 'train'})"
        )
    files, labels, class_names = image_files.list_class_folders(root)
    if not class_names:
        raise DataError(f"{root}: no class folders found; expected {root}/<class>/<images>")
    kept = [(path, label) for path, label in zip(files, labels) if not os.path.isdir(path)]
    for path in sorted(set(files) - {path for path, _ in kept}):  # links to folders find_files did not walk
        print(f"warning: skipped {relative(path, root)}: {image_files.folder_link_reason(path)}", file=sys.stderr)
    return [path for path, _ in kept], [label for _, label in kept], class_names


# First line of every list file we write: says how to read the labels, so that class folders named
# 0..11 (sorted as 0, 1, 10, 11, 2, ...) read back as written (see pipeline/data/folders.py, read_file_lists).
LABELS_HEADER = "# labels: indices (0-based lines of classes.txt)\n"


def list_lines(files, labels, root: Path, bar) -> list[str]:
    """The header line, then `relative/path label_index\\n` lines; a name with a line break cannot be
    listed and is skipped with a warning on stderr. `bar` (a progress bar) advances once per file."""
    lines = [LABELS_HEADER]
    for path, label in zip(files, labels):
        name = relative(path, root)
        if "\n" in name or "\r" in name:
            print(f"warning: skipped {name!r}: a file name with a line break cannot be listed", file=sys.stderr)
        else:
            # A leading "#" would read back as a comment line: "./" keeps the path and its meaning.
            lines.append(f"{'./' + name if name.startswith('#') else name} {label}\n")
        bar.update()
    return lines


def special_file(path: Path) -> str | None:
    """The reason a path is not a regular file (a FIFO would block `open` forever), else None."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None  # check_image names the error (loop, broken link, permission)
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):  # a link to a folder image_files.find_files did not walk: a loop, or read already
        return image_files.folder_link_reason(path)
    kind = {
        stat.S_IFIFO: "named pipe",
        stat.S_IFSOCK: "socket",
        stat.S_IFCHR: "character device",
        stat.S_IFBLK: "block device",
    }.get(stat.S_IFMT(mode), "special file")
    return f"not a regular file ({kind})"
