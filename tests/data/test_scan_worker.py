"""The scan in worker processes (issue 24): the same verdicts as the in-process check, a worker that cannot
start or dies mid-way costs speed, not verdicts, and a user's script without a `__main__` guard runs once."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.data import image_files, scan_worker

PROJECT = Path(__file__).resolve().parents[2]
CHECK = "pipeline.data.image_files:check_fields"


def _jpeg(seed: int, size=(40, 48)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def _folder(root: Path, *, decoded_by_tensorflow: bool) -> list[Path]:
    """130 good JPEGs (several chunks of `CHUNK` files), an empty file, an HTML page, a too-small JPEG, a
    text file named .png; with `decoded_by_tensorflow`, also what a worker needs TensorFlow's decoders
    for (a truncated JPEG, a PNG, a GIF named .jpg, a palette BMP), which costs each worker its start-up."""
    root.mkdir()
    for index in range(130):
        (root / f"good_{index:03d}.jpg").write_bytes(_jpeg(index))
    (root / "empty.jpg").write_bytes(b"")
    (root / "page.jpg").write_bytes(b"<!DOCTYPE html><html><body>404</body></html>")
    (root / "tiny.jpg").write_bytes(_jpeg(901, size=(4, 4)))
    (root / "text.png").write_text("not an image")
    if decoded_by_tensorflow:
        (root / "cut.jpg").write_bytes(_jpeg(900)[:300])
        Image.new("RGB", (30, 20), (200, 10, 10)).save(root / "red.png")
        Image.new("P", (30, 20)).save(root / "gif.jpg", format="GIF")
        palette = Image.new("P", (30, 20))
        palette.putpalette([255, 0, 0] * 256)  # not the grey ramp: refused (its colours would be misread)
        palette.save(root / "palette.bmp")
    return sorted(root.iterdir())


@pytest.fixture
def mixed_folder(tmp_path):
    return _folder(tmp_path / "images", decoded_by_tensorflow=False)


def _same_verdicts_in_workers(paths, monkeypatch) -> dict:
    expected = image_files.scan_images(paths, workers=1)  # threads of this process only
    monkeypatch.setattr(scan_worker, "MIN_FILES", 1)
    answered, left = scan_worker.map_in_processes(
        CHECK, paths, {"min_size": 8, "placeholder_colours": 64, "max_pixels": 10**8}, processes=2
    )
    assert left == [] and len(answered) == len(paths)  # nothing fell back: the workers did it all
    assert image_files.scan_images(paths, workers=2) == expected
    reasons = {Path(check.path).name: check.reason for check in expected}
    assert reasons["empty.jpg"] == "empty file (0 bytes)" and "HTML" in reasons["page.jpg"]
    assert reasons["tiny.jpg"].startswith("too small") and reasons["text.png"] == "not an image (text)"
    return reasons


def test_workers_give_the_in_process_verdicts(mixed_folder, monkeypatch):
    reasons = _same_verdicts_in_workers(mixed_folder, monkeypatch)
    assert sum(reason is None for reason in reasons.values()) == 130


@pytest.mark.slow  # each worker starts TensorFlow for the formats it decodes: 30 s on a 2-core VM
def test_workers_give_the_in_process_verdicts_on_files_tensorflow_decodes(tmp_path, monkeypatch):
    reasons = _same_verdicts_in_workers(_folder(tmp_path / "images", decoded_by_tensorflow=True), monkeypatch)
    assert reasons["cut.jpg"].startswith("truncated or corrupt JPEG") and reasons["red.png"] is None
    assert reasons["palette.bmp"].startswith("unsupported format (palette BMP")
    assert sum(reason is None for reason in reasons.values()) == 132  # 130 JPEGs, the PNG, the GIF


def test_a_worker_that_cannot_start_or_dies_costs_no_verdict(mixed_folder, monkeypatch):
    expected = image_files.scan_images(mixed_folder, workers=1)
    monkeypatch.setattr(scan_worker, "MIN_FILES", 1)
    monkeypatch.setattr(scan_worker, "_worker_command", lambda *_: ["/nonexistent/python"])
    assert image_files.scan_images(mixed_folder) == expected
    # Workers that answer garbage and exit: every chunk is checked by the caller.
    garbage = "import sys; sys.stdin.buffer.readline(); print('garbage'); sys.exit(3)"
    monkeypatch.setattr(scan_worker, "_worker_command", lambda *_: [sys.executable, "-c", garbage])
    answered, left = scan_worker.map_in_processes(CHECK, mixed_folder, {"min_size": 8}, processes=2)
    assert answered == {} and sorted(left) == list(range(len(mixed_folder)))
    assert image_files.scan_images(mixed_folder) == expected


def test_a_script_without_a_main_guard_runs_once(mixed_folder, tmp_path):
    """multiprocessing's spawn would import this script again in each worker (and scan again, and again);
    our workers are `python -m pipeline.data.scan_worker`."""
    ran = tmp_path / "ran.txt"
    script = tmp_path / "user_script.py"
    script.write_text(
        "from pipeline.data import image_files, scan_worker\n"
        f"open({str(ran)!r}, 'a').write('ran\\n')\n"
        "scan_worker.MIN_FILES = 1\n"
        f"checks = image_files.scan_images(sorted(__import__('pathlib').Path({str(mixed_folder[0].parent)!r}).iterdir()))\n"
        "print(sum(c.ok for c in checks))\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=PROJECT,
        env={"PYTHONPATH": str(PROJECT), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "130" and ran.read_text() == "ran\n"


def test_a_worker_checks_plain_jpegs_without_tensorflow(mixed_folder):
    """A worker loads TensorFlow only for a file that needs its decoder (a PNG, a JPEG Pillow refuses, an
    EXIF tag): ~3 s and hundreds of MB a worker saved on a folder of ordinary JPEGs."""
    probe = (
        "import sys, json, io\n"
        "from pipeline.data import scan_worker\n"
        "sys.stdin = io.TextIOWrapper(io.BytesIO(sys.argv[1].encode() + b'\\n'))\n"
        "scan_worker._serve('pipeline.data.image_files:check_fields', {})\n"
        "print('tensorflow' in sys.modules)\n"
    )
    jpegs = [str(path) for path in mixed_folder if path.name.startswith("good_")][:5]
    done = subprocess.run(
        [sys.executable, "-c", probe, json.dumps(jpegs)], capture_output=True, text=True, timeout=60, cwd=PROJECT
    )
    assert done.returncode == 0, done.stderr[-2000:]
    answer, loaded = done.stdout.strip().splitlines()
    assert [fields["reason"] for fields in json.loads(answer)] == [None] * 5
    assert loaded == "False"


@pytest.mark.parametrize(
    "paths",
    [
        ["/data/a/x.jpg", "/data/b/y.jpg"],
        ["/data/a/x.jpg"],
        ["/x.jpg", "/y/z.jpg"],
        ["/data/.hidden/x.jpg", "/data/./b/../b/y.jpg"],
        ["rel/a/x.jpg", "rel/b/y.jpg"],
    ],
)
def test_cache_names_are_paths_relative_to_the_common_folder(paths):
    """The scan cache's names (fast path for `find_files`' normalised absolute paths) equal
    `os.path.relpath` from the folder holding all of them, as before the fast path."""
    import os

    absolute = [os.path.abspath(p) for p in paths]
    common = os.path.commonpath(absolute) if len(paths) > 1 else os.path.dirname(absolute[0])
    assert image_files._cache_names([Path(p) for p in paths]) == [os.path.relpath(p, common) for p in absolute]
