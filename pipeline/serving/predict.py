"""`python -m pipeline predict EXPORT PATH...`: classifies image files with an exported SavedModel.

Self-contained on purpose: it uses only the SavedModel (`tf.saved_model.load`, signature
`serving_default` fed the raw file bytes) and its assets/classes.txt, never the project's preprocessing,
so a successful run shows the export carries its whole eval transform. Its project imports are the
user-error base and `image_files.sniff_format` (reads a file's first bytes, no TensorFlow), so that
`predict` and `data check` name a file's format the same way.

EXPORT is a run directory (its newest SavedModel under export/<name>/), a model directory
(export/<name>, newest version) or a version directory (export/<name>/<version>). PATHs are files or
folders, searched recursively in sorted order. Every file is answered or reported with its reason
(unsupported format such as TIFF or HEIC, unreadable, empty, not an image, corrupt), and the others are
still predicted; only hidden entries and, in folders, files neither named nor encoded as images
(notes.txt) are skipped, the latter counted in a note. Exit code: 0 all predicted, 1 some files failed,
2 user error (handled by the CLI).
"""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from pipeline.config import rundir
from pipeline.core import fileio
from pipeline.core.errors import UserError
from pipeline.data import (
    image_files,
    image_header,
)  # TF-free; its folder walk and format sniffer, shared with `data check`

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp")
SIGNATURE = "serving_default"
FORMATS = ("table", "csv", "json")


class PredictError(UserError):
    """The export or the arguments cannot be used; the message says why (the CLI exits with code 2)."""


@dataclass
class Prediction:
    path: str
    classes: list[str]
    scores: list[float]


@dataclass
class Failure:
    path: str
    reason: str


# --------------------------------------------------------------------------------------------------
# Finding the export
# --------------------------------------------------------------------------------------------------


def _versions(model_dir: Path) -> list[Path]:
    """Numbered version folders holding a SavedModel, oldest first (TFLite-only versions are skipped)."""
    try:
        children = list(model_dir.iterdir())
    except OSError:
        return []
    versions = [child for child in children if child.name.isdigit() and (child / "saved_model.pb").is_file()]
    return sorted(versions, key=lambda child: int(child.name))


def _run_name(run_dir: Path) -> str | None:
    """The experiment name from a run's config.yaml, or None (read as plain YAML, no project code)."""
    try:
        import yaml

        config = yaml.safe_load(rundir.RunLayout(run_dir).config.read_text())
    except Exception:  # noqa: BLE001  (a missing or odd config only loses a tie-breaker)
        return None
    name = config.get("name") if isinstance(config, dict) else None
    return str(name) if name else None


def resolve_export(path: Path) -> Path:
    """A run, model or version directory -> the SavedModel version directory to use."""
    path = Path(path)
    usage = (
        "pass a run directory, an export model directory (export/<name>) or a version directory "
        "(export/<name>/<version>) written by `python -m pipeline export`"
    )
    if not path.is_dir():
        raise PredictError(f"{path}: {'not a directory' if path.exists() else 'no such directory'}; {usage}")
    if (path / "saved_model.pb").is_file():
        return path
    if (path / "model.tflite").is_file():
        raise PredictError(f"{path}: holds a TFLite model; predict needs a SavedModel export; {usage}")
    versions = _versions(path)
    if versions:
        return versions[-1]
    export_root = rundir.RunLayout(path).export
    if export_root.is_dir():
        newest = {
            child.name: _versions(child)[-1]
            for child in sorted(export_root.iterdir())
            if child.is_dir() and _versions(child)
        }
        if len(newest) == 1:
            return next(iter(newest.values()))
        if len(newest) > 1:
            name = _run_name(path)
            if name in newest:
                return newest[name]
            raise PredictError(
                f"{path}: {export_root} holds several models ({', '.join(newest)}); "
                f"pass one of them, e.g. {export_root / next(iter(newest))}"
            )
    raise PredictError(
        f"{path}: not an export: no saved_model.pb in it, in numbered version folders "
        f"under it, or under {export_root}/<name>/<version>; {usage}"
    )


# --------------------------------------------------------------------------------------------------
# Finding and reading the images
# --------------------------------------------------------------------------------------------------

# Names that say "image" although the model cannot read the format: in a folder, such a file is reported
# (with its reason) instead of being skipped as a sidecar, whatever its content turns out to be.
OTHER_IMAGE_EXTENSIONS = (
    ".tif",
    ".tiff",
    ".heic",
    ".heif",
    ".avif",
    ".jxl",
    ".jp2",
    ".j2k",
    ".ico",
    ".psd",
    ".svg",
    ".tga",
    ".ppm",
    ".pgm",
    ".pbm",
    ".exr",
    ".hdr",
    ".dng",
    ".raw",
    ".cr2",
    ".cr3",
    ".nef",
    ".arw",
    ".orf",
    ".rw2",
    ".raf",
)
SKIPPED = object()  # _screen's answer for a folder's non-image sidecar (notes.txt, labels.csv)


def _screen(path: Path, *, in_folder: bool):
    """Looks at a file before the model does: None (predict it), a Failure (why it cannot be), or
    SKIPPED for a file found in a folder that is neither named nor encoded as an image.

    Content decides, not the name: `image_files.sniff_format` (the sniffer `data check` uses) on the
    first bytes. Formats the model cannot decode (TIFF, HEIC, ...) fail here with what to do about it;
    unrecognised content named like an image goes to the model, whose decoder has the last word.
    """
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):  # opening a FIFO would block for ever
            kind = {stat.S_IFIFO: "named pipe", stat.S_IFSOCK: "socket"}.get(stat.S_IFMT(info.st_mode))
            return Failure(str(path), f"not a regular file ({kind or 'device'})")
        with open(path, "rb") as handle:
            head = handle.read(64)
    except OSError as error:
        return Failure(str(path), fileio.os_reason(error))
    kind = image_files.sniff_format(head)
    if kind is not None and kind not in image_files.DECODABLE:
        reads = ", ".join(image_files.DECODABLE.values())  # what tf.io.decode_image reads
        return Failure(str(path), f"{kind} is not supported (the model reads {reads}); convert it to PNG or JPEG")
    named_image = path.suffix.lower() in IMAGE_EXTENSIONS + OTHER_IMAGE_EXTENSIONS
    if in_folder and kind is None and not named_image:
        return SKIPPED
    return Failure(str(path), "empty file") if not head else None


def collect_files(paths) -> tuple[list, int]:
    """What to do with every file the user pointed at, in argument order without duplicates.

    Files named directly are always tried. Folders are searched recursively in sorted order; hidden
    entries (`.name`) are skipped, and so are files that are neither named nor encoded as images
    (sidecars such as notes.txt), which are only counted. Folders are walked by `image_files.find_files`,
    as training and the data tools walk them (links to folders followed, loops refused). Everything else is
    answered or reported: link loops and unreadable folders included.

    Returns:
        ([Path to predict or Failure, ...], number of sidecars skipped).
    """
    entries, seen, skipped = [], set(), 0

    def add(entry):
        key = os.path.normpath(entry.path if isinstance(entry, Failure) else str(entry))
        if key not in seen:
            seen.add(key)
            entries.append(entry)

    for path in map(Path, paths):
        if path.is_dir():
            unreadable = []
            found = image_files.find_files(path, unreadable)  # the walk training and the data tools use
            for folder, reason in unreadable:
                add(Failure(str(folder), f"cannot read the folder ({reason})"))
            for file in sorted(found, key=lambda file: file.relative_to(path).parts):
                if os.path.isdir(file):  # a link find_files did not follow: a loop, or a folder read already
                    add(Failure(str(file), image_files.folder_link_reason(file)))
                    continue
                screened = _screen(file, in_folder=True)
                skipped += screened is SKIPPED
                if screened is not SKIPPED:
                    add(screened or file)
        elif os.path.lexists(path):
            add(_screen(path, in_folder=False) or path)
        else:
            add(Failure(str(path), "no such file or directory"))
    return entries, skipped


def read_bytes(path: Path, *, max_pixels: int = image_header.DEFAULT_MAX_PIXELS) -> bytes | Failure:
    """The whole file, or a Failure naming why it cannot be read, that it is empty, or that its header
    promises more than `max_pixels` pixels (never handed to the decoder: a decompression bomb)."""
    try:
        data = path.read_bytes()
    except OSError as error:
        return Failure(str(path), fileio.os_reason(error))
    if not data:
        return Failure(str(path), "empty file")
    bomb = image_header.too_many_pixels(data[: image_header.HEADER_BYTES], max_pixels=max_pixels, key="--max-pixels")
    return Failure(str(path), bomb) if bomb else data


def _error_detail(error: Exception) -> str:
    """The op's own message, without TensorFlow's graph context ('Graph execution error', node names)."""
    lines = [line.strip() for line in str(getattr(error, "message", error)).splitlines()]
    skip = ("Graph execution error", "Detected at node", "<stack traces", "[[", "File ")
    lines = [line for line in lines if line and not line.startswith(skip)]
    detail = lines[-1] if lines else type(error).__name__
    return detail.split(" [Op:")[0].strip()


def failure_reason(data: bytes, error: Exception) -> str:
    """Why the model could not answer for these file bytes, from the error it raised."""
    image_format = image_files.DECODABLE.get(image_files.sniff_format(data[:64]))
    if isinstance(error, tf.errors.InvalidArgumentError):
        if image_format is None:
            return "not an image (cannot decode)"
        return f"corrupt or truncated {image_format} (cannot decode: {_error_detail(error)})"
    return f"prediction failed ({type(error).__name__}: {_error_detail(error)})"


# --------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------


class Predictor:
    """The `serving_default` signature of one SavedModel version, fed encoded image bytes."""

    def __init__(self, version_dir: Path):
        self.version_dir = Path(version_dir)
        try:
            self._loaded = tf.saved_model.load(str(self.version_dir))
        except Exception as error:  # noqa: BLE001  (TF raises many kinds for a broken SavedModel)
            raise PredictError(f"{self.version_dir}: cannot load the SavedModel ({_error_detail(error)})") from None
        signature = self._loaded.signatures.get(SIGNATURE)
        if signature is None:
            raise PredictError(
                f"{self.version_dir}: the SavedModel has no '{SIGNATURE}' signature "
                f"(it has: {', '.join(self._loaded.signatures) or 'none'})"
            )
        inputs = signature.structured_input_signature[1]
        if len(inputs) != 1 or next(iter(inputs.values())).dtype != tf.string:
            raise PredictError(
                f"{self.version_dir}: '{SIGNATURE}' must take one tf.string input (encoded images); it takes {inputs}"
            )
        outputs = signature.structured_outputs
        if "probabilities" not in outputs:
            raise PredictError(f"{self.version_dir}: '{SIGNATURE}' has no 'probabilities' output")
        self._signature = signature
        self._input_name = next(iter(inputs))
        self.num_classes = outputs["probabilities"].shape[-1]
        exported_k = outputs["classes"].shape[-1] if "classes" in outputs else None
        self.default_top_k = min(exported_k or 5, self.num_classes or exported_k or 5)
        self.class_names = self._read_class_names()
        if self.class_names is None and "classes" not in outputs:
            raise PredictError(
                f"{self.version_dir}: no assets/classes.txt and no 'classes' output: cannot name the classes"
            )

    def _read_class_names(self) -> list[str] | None:
        path = self.version_dir / "assets" / "classes.txt"
        try:
            names = [line for line in path.read_text().splitlines() if line]
        except OSError:
            return None
        return names if len(names) == self.num_classes else None

    def max_top_k(self) -> int:
        if self.class_names is not None:
            return len(self.class_names)
        return self._signature.structured_outputs["classes"].shape[-1]

    def __call__(self, encoded: list[bytes], top_k: int) -> tuple[list[list[str]], list[list[float]]]:
        """Top-k class names and scores per image; raises tf.errors.OpError if any image fails."""
        outputs = self._signature(**{self._input_name: tf.constant(encoded, dtype=tf.string)})
        if self.class_names is not None:
            probabilities = outputs["probabilities"].numpy()
            order = np.argsort(-probabilities, axis=-1, kind="stable")[:, :top_k]
            return (
                [[self.class_names[index] for index in row] for row in order],
                np.take_along_axis(probabilities, order, axis=-1).tolist(),
            )
        classes = outputs["classes"].numpy()[:, :top_k]
        scores = outputs["scores"].numpy()[:, :top_k]
        return ([[name.decode("utf-8") for name in row] for row in classes], scores.tolist())


def predict_files(
    predictor: Predictor, files, *, top_k: int, batch_size: int, max_pixels: int = image_header.DEFAULT_MAX_PIXELS
) -> list:
    """A Prediction or Failure per file, in order. Files are read and predicted a batch at a time; when a
    batch fails, its files are predicted one by one, so one bad file never sinks the others."""
    results: list = []
    batch: list[tuple[int, Path, bytes]] = []

    def flush():
        if not batch:
            return
        try:
            classes, scores = predictor([data for _, _, data in batch], top_k)
            for (index, path, _), names, values in zip(batch, classes, scores):
                results[index] = Prediction(str(path), names, values)
        except tf.errors.OpError as batch_error:
            for index, path, data in batch:
                if len(batch) == 1:
                    results[index] = Failure(str(path), failure_reason(data, batch_error))
                    continue
                try:
                    (names,), (values,) = predictor([data], top_k)
                    results[index] = Prediction(str(path), names, values)
                except tf.errors.OpError as error:
                    results[index] = Failure(str(path), failure_reason(data, error))
        batch.clear()

    for file in files:
        results.append(None)
        data = file if isinstance(file, Failure) else read_bytes(file, max_pixels=max_pixels)
        if isinstance(data, Failure):
            results[-1] = data
            continue
        batch.append((len(results) - 1, file, data))
        if len(batch) >= batch_size:
            flush()
    flush()
    return results


# --------------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------------


def format_table(predictions: list[Prediction]) -> str:
    if not predictions:
        return ""
    width = max(len("path"), *(len(p.path) for p in predictions))
    lines = [f"{'path':<{width}}  predictions"]
    for p in predictions:
        ranked = "  ".join(f"{name}:{score:.4f}" for name, score in zip(p.classes, p.scores))
        lines.append(f"{p.path:<{width}}  {ranked}")
    return "\n".join(lines) + "\n"


def format_csv(predictions: list[Prediction]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "rank", "class", "score"])
    for p in predictions:
        for rank, (name, score) in enumerate(zip(p.classes, p.scores), start=1):
            writer.writerow([p.path, rank, name, repr(float(score))])
    return buffer.getvalue()


def format_json(predictions: list[Prediction], failures: list[Failure], export: Path, skipped: int = 0) -> str:
    document = {
        "export": str(export),
        "results": [
            {
                "path": p.path,
                "predictions": [{"class": name, "score": float(score)} for name, score in zip(p.classes, p.scores)],
            }
            for p in predictions
        ],
        "errors": [{"path": f.path, "reason": f.reason} for f in failures],
        "skipped_non_images": skipped,
    }
    return json.dumps(document, indent=2) + "\n"


def predict_command(
    export_dir: Path,
    paths,
    *,
    top_k: int | None = None,
    output_format: str = "table",
    batch_size: int = 32,
    max_pixels: int = image_header.DEFAULT_MAX_PIXELS,
    out=None,
    err=None,
) -> int:
    """The `predict` subcommand. Returns 0 if every file was predicted, 1 if any failed; raises
    PredictError for user errors (the CLI turns it into exit code 2)."""
    out = out or sys.stdout
    err = err or sys.stderr
    if output_format not in FORMATS:
        raise PredictError(f"--format must be one of {', '.join(FORMATS)}, not {output_format!r}")
    if batch_size < 1:
        raise PredictError(f"--batch-size must be at least 1, not {batch_size}")
    if top_k is not None and top_k < 1:
        raise PredictError(f"--top-k must be at least 1, not {top_k}")
    if max_pixels < 0:
        raise PredictError(f"--max-pixels must be at least 0 (0: no limit), not {max_pixels}")
    version_dir = resolve_export(export_dir)
    entries, skipped = collect_files(paths)
    if not entries:
        raise PredictError(
            f"no image files found in {', '.join(map(str, paths))} (looked for "
            f"{', '.join(IMAGE_EXTENSIONS)}, other image names such as .tif and image "
            f"content; {skipped} other files and hidden entries skipped)"
        )
    predictor = Predictor(version_dir)
    k = min(top_k or predictor.default_top_k, predictor.max_top_k())
    results = predict_files(predictor, entries, top_k=k, batch_size=batch_size, max_pixels=max_pixels)
    predictions = [r for r in results if isinstance(r, Prediction)]
    failures = [r for r in results if isinstance(r, Failure)]

    if output_format == "json":
        out.write(format_json(predictions, failures, version_dir, skipped=skipped))
    elif output_format == "csv":
        out.write(format_csv(predictions))
    else:
        out.write(format_table(predictions))
    out.flush()
    if skipped:
        print(
            f"note: {skipped} file{'s' * (skipped != 1)} in the folders skipped: neither named nor "
            f"encoded as images (e.g. notes, label lists); pass a file by name to have it tried",
            file=err,
        )
    if failures:
        print(f"{len(failures)} of {len(results)} files could not be predicted:", file=err)
        for failure in failures:
            print(f"  {failure.path}: {failure.reason}", file=err)
        return 1
    return 0
