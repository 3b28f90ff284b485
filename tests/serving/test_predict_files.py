"""`predict` answers or reports every file it is pointed at (field case 08: TIFF and HEIC files in a
folder were dropped silently and the exit code said all was well).

The export is a toy SavedModel built here in a second (its `serving_default` takes encoded bytes and
scores brightness), not a trained run: what is tested is how files are found, screened and reported.
"""

from __future__ import annotations

import io
import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from pipeline import cli
from pipeline.serving import predict

CLASSES = ["dark", "bright"]


class Brightness(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def serve(self, image_bytes):
        def one(data):
            image = tf.io.decode_image(data, channels=3, expand_animations=False)
            return tf.reduce_mean(tf.cast(image, tf.float32)) / 255.0

        bright = tf.map_fn(one, image_bytes, fn_output_signature=tf.float32)
        return {"probabilities": tf.stack([1.0 - bright, bright], axis=-1)}


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    version = tmp_path_factory.mktemp("export") / "toy" / "1"
    module = Brightness()
    tf.saved_model.save(module, str(version), signatures={"serving_default": module.serve})
    (version / "assets").mkdir(exist_ok=True)
    (version / "assets" / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return version


def encoded(value: int, fmt: str, size=(12, 12)) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((*size, 3), value, np.uint8)).save(buffer, format=fmt)
    return buffer.getvalue()


HEIC = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 200
JXL = b"\xff\x0a" + b"\x00" * 100


def make_photos(folder: Path) -> tuple[dict, dict, int]:
    """(good path -> expected top class, bad path -> start of its reason, sidecars skipped)."""
    (folder / "sub" / "deeper").mkdir(parents=True)
    good = {
        "ok0.jpg": (250, "JPEG"),
        "ok1.jpg": (5, "JPEG"),
        "sub/ok2.png": (240, "PNG"),
        "sub/no_extension": (10, "PNG"),
        "gif_named.tif": (230, "GIF"),
    }  # content decides, not the name
    for name, (value, fmt) in good.items():
        (folder / name).write_bytes(encoded(value, fmt))
    unsupported = "is not supported (the model reads JPEG, PNG, GIF, BMP, WebP); convert it to PNG or JPEG"
    bad = {
        "scan0.tif": "TIFF " + unsupported,
        "sub/scan1.TIFF": "TIFF " + unsupported,
        "IMG_0001.HEIC": "HEIC/AVIF " + unsupported,
        "sub/deeper/photo.jxl": "JPEG XL " + unsupported,
        "icon.ico": "ICO " + unsupported,
        "page.pdf.png": "PDF " + unsupported,
        "empty.png": "empty file",
        "text.jpg": "not an image (cannot decode)",
        "truncated.jpg": "corrupt or truncated JPEG",
        "pipe.png": "not a regular file (named pipe)",
        "dangling.jpg": "no such file (or a broken symbolic link)",
        "linked_folder": "link to a folder already included",  # read once, as sub/
    }
    for name in ("scan0.tif", "sub/scan1.TIFF"):
        (folder / name).write_bytes(encoded(128, "TIFF"))
    (folder / "IMG_0001.HEIC").write_bytes(HEIC)
    (folder / "sub" / "deeper" / "photo.jxl").write_bytes(JXL)
    (folder / "icon.ico").write_bytes(encoded(128, "ICO", size=(16, 16)))
    (folder / "page.pdf.png").write_bytes(b"%PDF-1.4\n%...")
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.jpg").write_bytes(b"just some text\n")
    (folder / "truncated.jpg").write_bytes(encoded(128, "JPEG", size=(64, 64))[:300])
    os.mkfifo(folder / "pipe.png")  # opening it would block for ever: must be reported unopened
    os.symlink("nowhere.jpg", folder / "dangling.jpg")
    os.symlink(folder / "sub", folder / "linked_folder")
    # Sidecars, skipped and counted; hidden entries, skipped (documented).
    (folder / "notes.txt").write_text("not an image\n")
    (folder / "sub" / "labels.csv").write_text("ok2.png,bright\n")
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (folder / ".thumbs").mkdir()
    (folder / ".thumbs" / "t.tif").write_bytes(encoded(1, "TIFF"))
    good = {str(folder / name): ("bright" if value > 128 else "dark") for name, (value, _) in good.items()}
    return good, {str(folder / name): reason for name, reason in bad.items()}, 2


def run(export_dir, paths, **options) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    result = {}

    def target():
        try:
            result["code"] = predict.predict_command(export_dir, paths, out=out, err=err, **options)
        except Exception as error:  # noqa: BLE001  (re-raised in the test's thread)
            result["error"] = error

    # A FIFO that got opened would hang the test: run in a thread and give up after a while.
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout=120)
    assert not thread.is_alive(), "predict hung (opened a named pipe?)"
    if "error" in result:
        raise result["error"]
    return result["code"], out.getvalue(), err.getvalue()


def test_every_file_in_a_folder_is_answered_or_reported(export_dir, tmp_path):
    good, bad, sidecars = make_photos(tmp_path / "photos")
    code, out, err = run(export_dir, [tmp_path / "photos"], output_format="json", batch_size=3)
    assert code == 1
    document = json.loads(out)
    assert {r["path"]: r["predictions"][0]["class"] for r in document["results"]} == good
    errors = {e["path"]: e["reason"] for e in document["errors"]}
    assert set(errors) == set(bad)
    for path, reason in bad.items():
        assert errors[path].startswith(reason), (path, errors[path])
    assert document["skipped_non_images"] == sidecars
    assert f"{len(bad)} of {len(good) + len(bad)} files could not be predicted" in err
    for path in bad:
        assert f"{path}: {errors[path]}" in err
    assert f"note: {sidecars} files in the folders skipped" in err
    assert ".DS_Store" not in out + err and ".thumbs" not in out + err


def test_the_table_and_the_exit_code_through_the_cli(export_dir, tmp_path, capsys):
    """The field case's own check: exit code not 0, the TIFF and HEIC named on stderr."""
    good, bad, _ = make_photos(tmp_path / "photos")
    assert cli.main(["predict", str(export_dir), str(tmp_path / "photos")]) == 1
    captured = capsys.readouterr()
    assert all(path in captured.out for path in good)
    assert f"{tmp_path / 'photos' / 'scan0.tif'}: TIFF is not supported" in captured.err
    assert f"{tmp_path / 'photos' / 'IMG_0001.HEIC'}: HEIC/AVIF is not supported" in captured.err


def test_files_named_directly_are_always_tried(export_dir, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("a sidecar, but the user named it\n")
    tiff = tmp_path / "scan.tif"
    tiff.write_bytes(encoded(128, "TIFF"))
    os.mkfifo(tmp_path / "pipe")
    jpeg = tmp_path / "ok.jpg"
    jpeg.write_bytes(encoded(255, "JPEG"))
    paths = [jpeg, notes, tiff, tmp_path / "pipe", tmp_path / "missing.png"]
    code, out, err = run(export_dir, paths, output_format="json")
    assert code == 1
    document = json.loads(out)
    assert [r["path"] for r in document["results"]] == [str(jpeg)]
    assert [(e["path"], e["reason"].split(" (")[0].split(";")[0]) for e in document["errors"]] == [
        (str(notes), "not an image"),
        (str(tiff), "TIFF is not supported"),
        (str(tmp_path / "pipe"), "not a regular file"),
        (str(tmp_path / "missing.png"), "no such file or directory"),
    ]
    assert document["skipped_non_images"] == 0 and "note:" not in err


def test_a_clean_folder_exits_0_without_notes(export_dir, tmp_path):
    (tmp_path / "clean").mkdir()
    for index, value in enumerate((0, 255)):
        (tmp_path / "clean" / f"{index}.png").write_bytes(encoded(value, "PNG"))
    code, out, err = run(export_dir, [tmp_path / "clean"])
    assert code == 0 and err == ""
    assert out.splitlines()[1].split()[1].startswith("dark:")


def test_a_folder_of_sidecars_only_is_a_user_error(export_dir, tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("text\n")
    with pytest.raises(predict.PredictError, match="no image files found.*; 1 other files and hidden entries skipped"):
        run(export_dir, [tmp_path / "notes"])
