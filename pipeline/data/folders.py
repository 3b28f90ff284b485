"""Image folders, archives of them and list files: reading them into `FileDataset`s (paths + labels).

Below the dataset registry (pipeline/data/datasets.py), which registers the `folder`, `file_list` and
`hymenoptera` sources on top of these readers. No TensorFlow.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import glob
import os
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from pipeline.config import PROJECT_ROOT
from pipeline.core import errors, fileio
from pipeline.data import image_files


class DatasetError(errors.UserError):
    """A dataset is missing, unreadable or corrupt. The message names the file and what to do."""


@dataclasses.dataclass
class FileDataset:
    """Image files of any size and format, with integer labels, per split.

    `splits` maps "train" and optionally "validation" and "test" to (paths, labels). Missing splits are
    carved from train by the caller (stratified, seeded).
    """

    splits: dict[str, tuple[list[str], np.ndarray]]
    class_names: list[str]
    root: Path


def resolve_data_dir(data_dir: str) -> Path:
    path = Path(data_dir).expanduser()
    return path if path.is_absolute() else PROJECT_ROOT / path


# --------------------------------------------------------------------------------------------------
# Image folders and file lists (any size, any format TensorFlow decodes)
# --------------------------------------------------------------------------------------------------

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")
# List and class files read as written on any OS: a UTF-8 byte-order mark (Notepad) is dropped, CRLF ends
# lines (splitlines), and file names that are not UTF-8 keep their bytes (surrogateescape, as os.fsdecode
# reads them and `fileio.atomic_write_text` writes them back), whatever this machine's locale.
LIST_ENCODING = {"encoding": "utf-8-sig", "errors": "surrogateescape"}
# Photos barely compress (JPEG and PNG are compressed already): an archive that expands to more than this
# many times its size is a decompression bomb (a few kilobytes of zeros declaring gigabytes), not images.
MAX_EXPANSION_RATIO = 100
MIN_BOMB_BYTES = 1 << 30  # below 1 GiB expanded, no ratio is worth refusing (a tar of text lists expands a lot)


def check_expansion(archive: Path, *, expanded: int, target_dir: Path) -> None:
    """Refuses an archive, before anything is written, whose members add up to more than
    `MAX_EXPANSION_RATIO` times its size (and over `MIN_BOMB_BYTES`), or to more than the free space where it
    would be extracted (a full disk would be met half-way, after minutes of work).

    Raises:
        DatasetError: naming the archive, its size, what it expands to and the limit.
    """
    size = max(archive.stat().st_size, 1)
    if expanded > MIN_BOMB_BYTES and expanded > MAX_EXPANSION_RATIO * size:
        raise DatasetError(
            f"{archive}: refused: {size:,} bytes that expand to {expanded:,} bytes ({expanded / size:,.0f} times "
            f"its size; image archives expand less than {MAX_EXPANSION_RATIO} times): a decompression bomb, or "
            f"not an archive of images. Extract it yourself if you trust it, and set dataset.root to the folder."
        )
    free = shutil.disk_usage(target_dir).free
    if expanded > free:
        raise DatasetError(
            f"{archive}: expands to {expanded / 2**30:,.2f} GiB, more than the {free / 2**30:,.2f} GiB free in "
            f"{target_dir}; free some space or set dataset.data_dir to a disk with room. Nothing was extracted."
        )


def resolve_root(root: str | os.PathLike | None, *, dataset: str) -> Path:
    if not root:
        raise DatasetError(f"dataset {dataset!r} needs dataset.root: the folder (or archive) holding the images")
    path = Path(root).expanduser()
    if not path.is_absolute() and not path.exists():
        path = PROJECT_ROOT / path
    if not path.exists():
        raise DatasetError(f"dataset.root: {root} does not exist (looked at {path})")
    return path


def extract_archive(archive: Path, data_dir: str) -> Path:
    """Extracts a .tar(.gz)/.zip once into data/<name>/ and returns that folder.

    Extraction goes to a temporary folder that is renamed when complete, so an interrupted extraction
    is never mistaken for a dataset.
    """
    name = archive.name
    for suffix in ARCHIVE_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    target = resolve_data_dir(data_dir) / name
    # The stamp names the archive it came from: another archive of the same name, or a newer copy of this
    # one, is extracted afresh instead of silently reusing the old tree.
    info = archive.stat()
    stamp = f"{archive.resolve()}\n{info.st_size}\n{info.st_mtime_ns}\n"
    stamp_file = target / ".extracted-from"
    if target.is_dir():
        if stamp_file.is_file() and stamp_file.read_text() == stamp:
            return target
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # One extraction at a time (the lock dies with its process), so the temporary folders of an extraction
    # that was killed (kill -9, power) are known to be dead and are removed here.
    with _extraction_lock(target):
        if stamp_file.is_file() and stamp_file.read_text() == stamp:
            return target  # another process extracted it while this one waited
        for leftover in target.parent.glob(f".tmp-{glob.escape(name)}-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        temporary = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".tmp-{name}-"))
        try:
            if archive.name.endswith(".zip"):
                with zipfile.ZipFile(archive) as handle:
                    check_expansion(
                        archive, expanded=sum(m.file_size for m in handle.infolist()), target_dir=target.parent
                    )
                    handle.extractall(temporary)
            else:
                with tarfile.open(archive, "r:*") as handle:
                    check_expansion(
                        archive, expanded=sum(m.size for m in handle.getmembers()), target_dir=target.parent
                    )
                    handle.extractall(temporary, filter="data")
            (temporary / ".extracted-from").write_text(stamp)
            # Archives often wrap everything in one folder (hymenoptera/): remember it now, so files that
            # tools later write beside it (reports, statistics) never change what the dataset root is.
            (temporary / ".dataset-root").write_text(
                single_top_folder(temporary).name if single_top_folder(temporary) != temporary else "."
            )
            try:
                os.replace(temporary, target)
            except OSError:
                # Another process extracted the same archive meanwhile (renaming onto its non-empty folder
                # fails): use that one if it is of this archive.
                if not (stamp_file.is_file() and stamp_file.read_text() == stamp):
                    raise
                shutil.rmtree(temporary, ignore_errors=True)
        except (OSError, tarfile.TarError, zipfile.BadZipFile) as error:
            shutil.rmtree(temporary, ignore_errors=True)
            raise DatasetError(f"{archive}: cannot extract ({error})") from None
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise
    return target


@contextlib.contextmanager
def _extraction_lock(target: Path):
    # The lock is on the data folder itself (as rundir.exclusive locks a run directory): no lock file to
    # leave behind; extractions into one data folder wait for each other, which is rare and short.
    handle = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)  # blocks while another process extracts into this folder
        yield
    finally:
        os.close(handle)


def single_top_folder(root: Path) -> Path:
    """Archives often wrap everything in one folder (hymenoptera/, hymenoptera_data/): step into it."""
    entries = [p for p in root.iterdir() if not p.name.startswith((".", "__MACOSX"))]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else root


def read_folder_tree(root: Path) -> FileDataset:
    """`root/<class>/...` or `root/{train,val|validation,test}/<class>/...`; classes = sorted folder names."""
    if root.is_file() and root.name.endswith(ARCHIVE_SUFFIXES):
        raise DatasetError(f"{root}: archives are extracted by the dataset loader; this is a bug")
    try:
        split_dirs = image_files.split_folders(root)
    except ValueError as error:
        raise DatasetError(str(error)) from None
    if not split_dirs:
        files, labels, class_names = image_files.list_class_folders(root)
        if not class_names:
            raise DatasetError(
                f"{root}: no class folders found; expected {root}/<class>/<images> or {root}/train/<class>/<images>"
            )
        return FileDataset({"train": ([str(f) for f in files], np.asarray(labels, np.int64))}, class_names, root)
    if "train" not in split_dirs:
        raise DatasetError(f"{root}: has {', '.join(p.name for p in split_dirs.values())}/ but no train/ folder")
    _, _, class_names = image_files.list_class_folders(split_dirs["train"])
    splits = {}
    for split, directory in split_dirs.items():
        files, labels, names = image_files.list_class_folders(directory)
        unknown = sorted(set(names) - set(class_names))
        if unknown:
            raise DatasetError(
                f"{directory}: class folders {', '.join(unknown)} are not in "
                f"{split_dirs['train']} (classes: {', '.join(class_names)})"
            )
        remap = np.asarray([class_names.index(n) for n in names], np.int64)
        splits[split] = (
            [str(f) for f in files],
            remap[np.asarray(labels, np.int64)] if labels else np.zeros(0, np.int64),
        )
    return FileDataset(splits, class_names, root)


def root_folder(root: Path, data_dir: str) -> Path:
    """An archive is extracted once (into data_dir) and its dataset root returned; a folder as is."""
    if root.is_file() and root.name.endswith(ARCHIVE_SUFFIXES):
        extracted = extract_archive(root, data_dir)
        marker = extracted / ".dataset-root"
        return extracted / marker.read_text().strip() if marker.is_file() else single_top_folder(extracted)
    return root


def read_file_lists(
    *, data_dir: str = "data", root: str | None = None, lists: dict | None = None, classes: str | None = None
) -> FileDataset:
    """Images named by list files.

    Either `lists: {train: a.txt, validation: b.txt, test: c.txt}` (any subset with train) holding
    `relative/path label` lines (label: an index or a class name) plus `classes` (one name per line),
    paths relative to `root`; or, with no `lists`, the Food-101 layout: `root/meta/classes.txt`,
    `root/meta/{train,test}.txt` with `class/id` lines and images at `root/images/class/id.jpg`.
    """
    root_path = root_folder(resolve_root(root, dataset="file_list"), data_dir)
    root_path = root_path if (root_path / "meta").is_dir() or lists else single_top_folder(root_path)
    if not lists:
        meta = root_path / "meta"
        if not (meta / "classes.txt").is_file():
            raise DatasetError(
                f"dataset 'file_list': give dataset.lists (train/validation/test list files) "
                f"or a Food-101 style root with meta/classes.txt; {meta / 'classes.txt'} not found"
            )
        class_names = _read_lines(meta / "classes.txt", comments=False)
        splits = {}
        for split, name in (("train", "train.txt"), ("test", "test.txt")):
            if (meta / name).is_file():
                entries = _read_lines(meta / name)
                paths = [str(root_path / "images" / f"{entry}.jpg") for entry in entries]
                labels = [_label_of(entry.split("/")[0], class_names, meta / name) for entry in entries]
                splits[split] = (paths, np.asarray(labels, np.int64))
        return FileDataset(splits, class_names, root_path)
    if "train" not in lists:
        raise DatasetError(f"dataset.lists: a train list is required; received {', '.join(lists)}")
    unknown = set(lists) - {"train", "validation", "test"}
    if unknown:
        raise DatasetError(
            f"dataset.lists: keys must be train, validation, test; received {', '.join(sorted(unknown))}"
        )
    if not classes:
        raise DatasetError("dataset.classes: the class-names file (one name per line) is required with dataset.lists")
    class_names = _read_lines(resolve_root(classes, dataset="file_list"), comments=False)
    splits = {}
    for split, list_path in lists.items():
        list_file = resolve_root(list_path, dataset="file_list")
        paths, labels = [], []
        try:
            lines = list_file.read_text(**LIST_ENCODING).splitlines()
        except OSError as error:
            raise DatasetError(f"{list_file}: cannot read ({fileio.os_reason(error)})") from None
        mode = None
        for number, line in enumerate(lines, 1):  # numbered as in an editor: blank and # lines count
            line = line.strip()
            if line.startswith("#"):
                mode = labels_mode(line) or mode
                continue
            if not line:
                continue
            path, _, label = line.rpartition(" ")
            if not path:
                raise DatasetError(f"{list_file}:{number}: expected `relative/path label`, received {line!r}")
            paths.append(str(root_path / path.strip()))
            labels.append(_label_of(label, class_names, f"{list_file}:{number}", mode))
        splits[split] = (paths, np.asarray(labels, np.int64))
    return FileDataset(splits, class_names, root_path)


def _read_lines(path: Path, comments: bool = True) -> list[str]:
    """Non-empty lines; `#` lines are comments in list files, but may be class names in a classes file."""
    try:
        return [
            line.strip()
            for line in path.read_text(**LIST_ENCODING).splitlines()
            if line.strip() and not (comments and line.startswith("#"))
        ]
    except OSError as error:
        raise DatasetError(f"{path}: cannot read ({fileio.os_reason(error)})") from None


def _label_of(label: str, class_names: list[str], where, mode: str | None = None) -> int:
    """A list file's label -> class index.

    `mode` comes from a `# labels: names` or `# labels: indices` first line (what `data label` and
    `data split` write). Without it a label may be a class name or an index, and one that is both, with
    different meanings (class folders named 0..11 sort as 0, 1, 10, 11, 2, ...: label "2" is the name of
    class index 4 and the index of class "10"), is refused rather than guessed.
    """
    by_name = class_names.index(label) if label in class_names else None
    by_index = int(label) if label.isdigit() and int(label) < len(class_names) else None
    if mode == "names":
        by_index = None
    elif mode == "indices":
        by_name = None
    if by_name is not None and by_index is not None and by_name != by_index:
        raise DatasetError(
            f"{where}: label {label!r} is ambiguous: the class named {label!r} (index {by_name}) "
            f"or the class at index {by_index} ({class_names[by_index]!r}); add a first line "
            f"`# labels: names` or `# labels: indices` to the list file to say which"
        )
    if by_name is not None:
        return by_name
    if by_index is not None:
        return by_index
    raise DatasetError(f"{where}: label {label!r} is neither a class name nor an index below {len(class_names)}")


def labels_mode(line: str) -> str | None:
    """'names' or 'indices' for a `# labels: ...` directive line, else None."""
    text = line.strip().lower()
    if text.startswith("#") and text.lstrip("# ").startswith("labels:"):
        value = text.lstrip("# ")[len("labels:") :].strip()
        for mode in ("names", "indices"):
            if value.startswith(mode):
                return mode
    return None
