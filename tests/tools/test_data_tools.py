"""`python -m pipeline data ...`: label, check, stats, split, gather on synthetic files made here.

gather runs against a local http.server on 127.0.0.1 only; nothing leaves the machine.
"""

from __future__ import annotations

import builtins
import errno
import http.server
import io
import json
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.cli import main
from pipeline.data import image_files
from pipeline.tools import check, common, gather, split, stats

# --------------------------------------------------------------------------------------------------
# Synthetic files
# --------------------------------------------------------------------------------------------------


def noise(height, width, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    shape = (height, width, channels) if channels > 1 else (height, width)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def encode(array, format, mode=None, **options) -> bytes:
    image = Image.fromarray(array)
    if mode:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def gradient(height, width) -> np.ndarray:
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    return np.stack(np.broadcast_arrays(x, y, np.full_like(x * y, 128)), axis=-1).astype(np.uint8)


GOOD = {
    "cats/landscape.jpg": lambda: encode(noise(40, 60, seed=1), "JPEG", quality=90),
    "cats/portrait.png": lambda: encode(noise(60, 40, seed=2), "PNG"),
    "cats/nested/deeper/b.bmp": lambda: encode(noise(30, 30, seed=3), "BMP"),
    "cats/c.webp": lambda: encode(noise(32, 48, seed=4), "WEBP", quality=90),
    "cats/d.gif": lambda: encode(noise(36, 24, seed=5), "GIF", mode="P"),
    "dogs/grey.jpg": lambda: encode(noise(50, 30, 1, seed=6), "JPEG"),
    "dogs/cmyk.jpg": lambda: encode(noise(30, 50, seed=7), "JPEG", mode="CMYK"),
    "dogs/deep16.png": lambda: encode(np.random.default_rng(8).integers(0, 65535, (24, 40)).astype(np.uint16), "PNG"),
    "dogs/rgba.png": lambda: encode(noise(40, 40, 4, seed=9), "PNG"),
    "dogs/huge.jpg": lambda: encode(gradient(4000, 6000), "JPEG", quality=80),
}
GIF_NAMED_JPG = "dogs/gif_named.jpg"  # decodable: GOOD, with a warning about its name


def truncated_jpeg() -> bytes:
    data = encode(noise(64, 64, seed=10), "JPEG", quality=95)
    return data[: len(data) // 2]


def tiff() -> bytes:
    return encode(noise(20, 20, seed=11), "TIFF")


BAD = {  # path -> (content, words the reason must contain)
    "cats/empty.jpg": (lambda: b"", "empty"),
    "cats/truncated.jpg": (truncated_jpeg, "truncated"),
    "dogs/text.jpg": (lambda: b"just some text, not a picture\n", "text"),
    "dogs/page.png": (lambda: b"<!DOCTYPE html><html><body>404</body></html>", "HTML"),
    "dogs/scan.tiff": (tiff, "TIFF"),
    "cats/tiny.png": (lambda: encode(noise(1, 1, seed=12), "PNG"), "too small"),
}
LINKS = {
    "dogs/loop.jpg": ("loop.jpg", "loop"),  # points to itself: ELOOP
    "cats/dangling.jpg": ("nowhere.jpg", "broken"),
}
UNREADABLE = "cats/unreadable.jpg"
FIFO = "dogs/pipe.jpg"  # a named pipe: opening it would block forever
ALL_BAD = set(BAD) | set(LINKS) | {UNREADABLE, FIFO}


def make_tree(root: Path) -> Path:
    for relative, make in GOOD.items():
        write(root / relative, make())
    write(root / GIF_NAMED_JPG, encode(noise(30, 30, seed=13), "GIF", mode="P"))
    for relative, (make, _) in BAD.items():
        write(root / relative, make())
    for relative, (target, _) in LINKS.items():
        os.symlink(target, root / relative)
    return root


@pytest.fixture(scope="module")
def pristine_tree(tmp_path_factory) -> Path:
    return make_tree(tmp_path_factory.mktemp("pristine") / "photos")


def deny_reading(path: Path, monkeypatch) -> None:
    """Makes `path` unreadable: chmod 000, and (root ignores permissions) an `open` that refuses it."""
    path.chmod(0)
    if os.geteuid() != 0:
        return
    real_open = builtins.open
    denied = os.path.abspath(path)

    def fake_open(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and os.path.abspath(file) == denied:
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)


@pytest.fixture
def photo_tree(pristine_tree, tmp_path, monkeypatch) -> Path:
    """A fresh copy of the messy tree, plus a file that cannot be read."""
    root = tmp_path / "photos"
    shutil.copytree(pristine_tree, root, symlinks=True)
    write(root / UNREADABLE, encode(noise(20, 20, seed=14), "JPEG"))
    deny_reading(root / UNREADABLE, monkeypatch)
    os.mkfifo(root / FIFO)
    return root


def parse_check_lines(output: str):
    bad, warnings, summary = {}, {}, None
    for line in output.splitlines():
        if line.startswith("warning: "):
            path, _, text = line[len("warning: ") :].partition(": ")
            warnings[path] = text
        elif line.startswith("note: "):
            continue
        elif " files, " in line and " good, " in line:
            summary = line
        else:
            path, _, reason = line.partition(": ")
            bad[path] = reason
    return bad, warnings, summary


# --------------------------------------------------------------------------------------------------
# check
# --------------------------------------------------------------------------------------------------


def test_check_names_exactly_the_bad_files(photo_tree, capsys):
    assert main(["data", "check", str(photo_tree)]) == 1
    captured = capsys.readouterr()
    bad, warnings, summary = parse_check_lines(captured.out)
    assert set(bad) == ALL_BAD
    for relative, (_, words) in BAD.items():
        assert words.lower() in bad[relative].lower(), (relative, bad[relative])
    for relative, (_, words) in LINKS.items():
        assert words in bad[relative], (relative, bad[relative])
    assert "permission denied" in bad[UNREADABLE]
    assert "not a regular file (named pipe)" in bad[FIFO]
    # The GIF named .jpg decodes: it is good, reported only as a warning, and the output says so.
    assert set(warnings) == {GIF_NAMED_JPG}
    assert "GIF" in warnings[GIF_NAMED_JPG] and ".jpg" in warnings[GIF_NAMED_JPG]
    assert "note: files with warnings decode and are used" in captured.out
    total = len(GOOD) + 1 + len(ALL_BAD)
    assert summary.startswith(f"{total} files, {len(GOOD) + 1} good, {len(ALL_BAD)} bad, 1 warnings")
    assert "checking images" in captured.err  # the progress bar

    report_file = photo_tree.parent / "photos-check.json"
    report = json.loads(report_file.read_text())
    assert {entry["path"] for entry in report["bad"]} == ALL_BAD
    assert [entry["path"] for entry in report["warnings"]] == [GIF_NAMED_JPG]

    # --json: the same report on stdout (second run: unchanged files come from the cache, loop included).
    assert main(["data", "check", str(photo_tree), "--json"]) == 1
    printed = json.loads(capsys.readouterr().out)
    assert {entry["path"] for entry in printed["bad"]} == ALL_BAD
    assert printed["good"] == len(GOOD) + 1 and printed["files"] == total
    assert printed == json.loads(report_file.read_text())


def test_check_clean_folder_exits_0(tmp_path, capsys):
    root = tmp_path / "clean"
    for relative in ("cats/landscape.jpg", "cats/portrait.png", "dogs/grey.jpg", "dogs/rgba.png"):
        write(root / relative, GOOD[relative]())
    write(root / "labels.txt", b"cats/landscape.jpg 0\n")  # the tools' own lists are not images
    report = tmp_path / "out" / "report.json"
    assert main(["data", "check", str(root), "--report", str(report)]) == 0
    bad, warnings, summary = parse_check_lines(capsys.readouterr().out)
    assert bad == {} and warnings == {}
    assert summary.startswith("4 files, 4 good, 0 bad, 0 warnings")
    assert json.loads(report.read_text())["bad"] == []


def test_check_quarantine_moves_exactly_the_bad_files(photo_tree, tmp_path, capsys):
    quarantine = tmp_path / "quarantine"
    write(quarantine / "cats" / "empty.jpg", b"an earlier quarantined file")  # must not be overwritten
    assert main(["data", "check", str(photo_tree), "--quarantine", str(quarantine)]) == 1
    out = capsys.readouterr().out
    assert "moved to" in out
    for relative in ALL_BAD:
        assert not os.path.lexists(photo_tree / relative), relative
    assert (quarantine / "cats" / "empty.jpg").read_bytes() == b"an earlier quarantined file"
    assert (quarantine / "cats" / "empty.1.jpg").read_bytes() == b""
    moved = {p.relative_to(quarantine).as_posix() for p in quarantine.rglob("*") if not p.is_dir()}
    assert moved == (ALL_BAD - {"cats/empty.jpg"}) | {"cats/empty.jpg", "cats/empty.1.jpg"}
    assert os.path.islink(quarantine / "dogs" / "loop.jpg")  # moved as a link, not followed
    assert (quarantine / "cats" / "truncated.jpg").read_bytes() == truncated_jpeg()
    for relative in list(GOOD) + [GIF_NAMED_JPG]:
        assert (photo_tree / relative).is_file(), relative
    report = json.loads((photo_tree.parent / "photos-check.json").read_text())
    assert all("moved_to" in entry for entry in report["bad"])
    # Afterwards the folder is clean.
    assert main(["data", "check", str(photo_tree)]) == 0
    assert parse_check_lines(capsys.readouterr().out)[0] == {}


def test_check_refuses_a_quarantine_inside_root(photo_tree, capsys):
    assert main(["data", "check", str(photo_tree), "--quarantine", str(photo_tree / "bad")]) == 2
    assert "outside" in capsys.readouterr().err


def test_permission_error_maps_to_a_reason(tmp_path, monkeypatch):
    path = write(tmp_path / "secret.jpg", encode(noise(20, 20), "JPEG"))
    deny_reading(path, monkeypatch)
    assert image_files.check_image(path).reason == "unreadable: permission denied"
    assert check.check(tmp_path, report=tmp_path.parent / "r.json").bad == [
        {"path": "secret.jpg", "reason": "unreadable: permission denied"}
    ]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_real_unreadable_file(tmp_path):
    path = write(tmp_path / "secret.jpg", encode(noise(20, 20), "JPEG"))
    path.chmod(0)
    assert image_files.check_image(path).reason == "unreadable: permission denied"


# --------------------------------------------------------------------------------------------------
# label
# --------------------------------------------------------------------------------------------------


def entries(list_file: Path) -> str:
    """A list file's entry lines (`# ...` header lines left out)."""
    return "".join(line for line in list_file.read_text().splitlines(keepends=True) if not line.startswith("#"))


def small_tree(root: Path) -> Path:
    for relative, seed in (
        ("dogs/z.png", 1),
        ("cats/b.jpg", 2),
        ("cats/a.jpg", 3),
        ("cats/sub/c.png", 4),
        ("birds/x y.png", 5),
    ):
        fmt = "PNG" if relative.endswith(".png") else "JPEG"
        write(root / relative, encode(noise(16, 16, seed=seed), fmt))
    write(root / "README.txt", b"not in a class folder: ignored")
    write(root / "cats" / ".hidden.jpg", b"hidden: ignored")
    return root


def test_label_exact_and_deterministic(tmp_path, capsys):
    root = small_tree(tmp_path / "pets")
    assert main(["data", "label", str(root)]) == 0
    assert "labelling" in capsys.readouterr().err
    expected = "birds/x y.png 0\ncats/a.jpg 1\ncats/b.jpg 1\ncats/sub/c.png 1\ndogs/z.png 2\n"
    assert entries(root / "labels.txt") == expected
    assert (root / "classes.txt").read_text() == "birds\ncats\ndogs\n"
    assert main(["data", "label", str(root)]) == 0  # its own outputs are not listed on a rerun
    assert entries(root / "labels.txt") == expected
    out = tmp_path / "lists" / "all.txt"
    assert main(["data", "label", str(root), "--out", str(out)]) == 0
    assert entries(out) == expected and (out.parent / "classes.txt").read_text() == "birds\ncats\ndogs\n"


def test_label_without_class_folders_is_a_user_error(tmp_path, capsys):
    write(tmp_path / "flat" / "a.jpg", encode(noise(16, 16), "JPEG"))
    assert main(["data", "label", str(tmp_path / "flat")]) == 2
    assert "no class folders" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# stats
# --------------------------------------------------------------------------------------------------


def reference_images(paths, size, channels):
    """The images as training's evaluation path prepares them (decode.decode_image, then the transform)."""
    from pipeline.data import decode
    from pipeline.data.transform import EvalTransform

    transform = EvalTransform(image_size=size, channels=channels)
    images = []
    for path in paths:
        image = decode.decode_image(Path(path).read_bytes(), channels=channels)
        images.append(transform(image).numpy().astype(np.float64))
    return np.stack(images)


@pytest.mark.parametrize("channels, size", [(3, (64, 64)), (1, (12, 20))])
def test_stats_match_numpy(tmp_path, capsys, channels, size):
    root = tmp_path / "pets"
    good = [
        "cats/landscape.jpg",
        "cats/portrait.png",
        "cats/c.webp",
        "dogs/grey.jpg",
        "dogs/rgba.png",
        "dogs/deep16.png",
        "dogs/cmyk.jpg",
    ]
    for relative in good:
        write(root / relative, GOOD[relative]())
    write(root / "dogs" / "broken.jpg", truncated_jpeg())
    write(root / "cats" / "tiny.png", encode(noise(2, 2), "PNG"))
    out = tmp_path / "stats"
    argv = ["data", "stats", str(root), "--out", str(out)]
    if channels != 3 or size != (64, 64):
        argv += ["--channels", str(channels), "--image-size", *map(str, size)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "computing statistics" in captured.err

    files, _, _ = image_files.list_class_folders(root)
    used = [f for f in files if f.name not in ("broken.jpg", "tiny.png")]
    reference = reference_images(used, size, channels)
    pixels = reference.reshape(-1, channels)
    result = json.loads((out / "stats.json").read_text())
    assert result["images"] == len(good)
    assert result["class_counts"] == {"cats": 3, "dogs": 4}
    assert {entry["path"] for entry in result["skipped"]} == {"dogs/broken.jpg", "cats/tiny.png"}
    np.testing.assert_allclose(result["mean"], pixels.mean(axis=0), atol=1e-3)
    np.testing.assert_allclose(result["std"], pixels.std(axis=0), atol=1e-3)
    np.testing.assert_allclose(result["mean_unit"], pixels.mean(axis=0) / 255, atol=1e-3)
    np.testing.assert_allclose(result["std_unit"], pixels.std(axis=0) / 255, atol=1e-3)
    mean_image = np.load(out / "mean.npy")
    assert mean_image.shape == (*size, channels)
    np.testing.assert_allclose(mean_image, reference.mean(axis=0), atol=1e-3)
    png = np.asarray(Image.open(out / "mean.png"))
    assert png.shape == ((*size, channels) if channels == 3 else size)
    assert np.abs(png.astype(float) - reference.mean(axis=0).reshape(png.shape)).max() <= 0.5 + 1e-6


def test_stats_default_output_beside_root(tmp_path):
    root = tmp_path / "flat"
    for index in range(3):
        write(root / f"{index}.png", encode(noise(10, 10, seed=index), "PNG"))
    result = stats.stats(root, image_size=(8, 8))
    assert result["class_counts"] is None and result["images"] == 3
    assert {p.name for p in (tmp_path / "flat-stats").iterdir()} == {"stats.json", "mean.png", "mean.npy"}


# --------------------------------------------------------------------------------------------------
# split
# --------------------------------------------------------------------------------------------------


def split_tree(root: Path, sizes: dict) -> Path:
    tiny_png = encode(noise(4, 4), "PNG")  # split looks at names, not pixels
    for name, count in sizes.items():
        for index in range(count):
            write(root / name / f"{index:03d}.png", tiny_png)
    return root


def read_list(path: Path) -> list[tuple[str, int]]:
    return [(line.rpartition(" ")[0], int(line.rpartition(" ")[2])) for line in entries(path).splitlines()]


def test_split_stratified_disjoint_covering_deterministic(tmp_path, capsys):
    sizes = {"ants": 40, "bees": 20, "wasps": 3, "yetis": 1}
    root = split_tree(tmp_path / "insects", sizes)
    out = tmp_path / "lists"
    assert main(["data", "split", str(root), "--val", "0.1", "--test", "0.2", "--seed", "7", "--out", str(out)]) == 0
    capsys.readouterr()
    lists = {name: read_list(out / f"{name}.txt") for name in ("train", "val", "test")}
    assert (out / "classes.txt").read_text() == "ants\nbees\nwasps\nyetis\n"
    everything = [entry for entries in lists.values() for entry in entries]
    assert len(everything) == len(set(everything)) == sum(sizes.values())  # disjoint
    files, labels, _ = image_files.list_class_folders(root)
    assert set(everything) == {(f.relative_to(root).as_posix(), label) for f, label in zip(files, labels)}  # covering
    per_class = {
        name: {split: sum(1 for _, label in lists[split] if label == index) for split in lists}
        for index, name in enumerate(sizes)
    }
    assert per_class["ants"] == {"train": 28, "val": 4, "test": 8}
    assert per_class["bees"] == {"train": 14, "val": 2, "test": 4}
    assert per_class["wasps"] == {"train": 1, "val": 1, "test": 1}  # every class in every split
    assert per_class["yetis"] == {"train": 1, "val": 0, "test": 0}  # too few to spread
    # Same seed, same lists; another seed, other lists.
    again = split.split(root, val=0.1, test=0.2, seed=7, out=tmp_path / "again")
    assert sorted((p.relative_to(root).as_posix(), label) for p, label in again["test"]) == sorted(lists["test"])
    other = split.split(root, val=0.1, test=0.2, seed=8, out=tmp_path / "other")
    assert sorted((p.relative_to(root).as_posix(), label) for p, label in other["test"]) != sorted(lists["test"])


def test_split_lists_load_as_file_list_dataset(tmp_path):
    from pipeline.data import datasets

    root = split_tree(tmp_path / "insects", {"ants": 10, "bees": 10})
    split.split(root, val=0.2, test=0.2, seed=0)
    loaded = datasets.file_list(
        root=str(root),
        classes=str(root / "classes.txt"),
        lists={"train": str(root / "train.txt"), "validation": str(root / "val.txt"), "test": str(root / "test.txt")},
    )
    assert loaded.class_names == ["ants", "bees"]
    assert all(Path(p).is_file() for p in loaded.splits["train"][0])
    assert sum(len(loaded.splits[s][0]) for s in ("train", "validation", "test")) == 20


@pytest.mark.parametrize("val, test", [(0.5, 0.5), (-0.1, 0.1), (0.1, 1.0)])
def test_split_rejects_bad_fractions(tmp_path, val, test):
    root = split_tree(tmp_path / "insects", {"ants": 4})
    with pytest.raises(common.DataError):
        split.split(root, val=val, test=test)


# --------------------------------------------------------------------------------------------------
# gather
# --------------------------------------------------------------------------------------------------

JPEG_A = encode(noise(40, 50, seed=21), "JPEG", quality=90)
JPEG_B = encode(noise(30, 30, seed=22), "JPEG", quality=90)
JPEG_C = encode(noise(32, 32, seed=23), "JPEG", quality=90)
JPEG_D = encode(noise(24, 36, seed=24), "JPEG", quality=90)
PNG_A = encode(noise(40, 40, seed=25), "PNG")
PNG_B = encode(noise(20, 30, seed=26), "PNG")
FLAT = np.zeros((200, 200, 3), np.uint8)
FLAT[:, 70:140] = (200, 200, 200)
FLAT[:, 140:] = (90, 30, 30)
PLACEHOLDER = encode(FLAT, "PNG")  # a flat 3-colour "photo unavailable" image
PIXEL = encode(np.zeros((1, 1, 3), np.uint8), "GIF")


class ImageServer(http.server.BaseHTTPRequestHandler):
    """Routes: path -> (status, content type, body) or a special behaviour. Counts every request."""

    routes = {
        "/good/cat1.jpg": (200, "image/jpeg", JPEG_A),
        "/other/cat1.jpg": (200, "image/jpeg", JPEG_B),  # same basename: must not collide
        "/good/dog.png": (200, "image/png", PNG_A),
        "/good/png_named.jpg": (200, "image/jpeg", PNG_B),  # saved as .png
        "/good/real.jpg": (200, "image/jpeg", JPEG_D),
        "/missing.jpg": (404, "text/html", b"<html>not found</html>"),
        "/always500.jpg": (500, "text/plain", b"oops"),
        "/photo_unavailable.png": (200, "image/png", PLACEHOLDER),
        "/img/1234.png": (200, "image/png", PLACEHOLDER),
        "/static/Removed.jpg": (200, "image/jpeg", JPEG_A),  # a real photo, but at a "removed" URL
        "/html.jpg": (200, "image/jpeg", b"<!DOCTYPE html><html><head><title>Photo</title></head></html>"),
        "/empty.jpg": (200, "image/jpeg", b""),
        "/truncated.jpg": (200, "image/jpeg", JPEG_C[: len(JPEG_C) // 2]),
        "/pixel.gif": (200, "image/gif", PIXEL),
    }
    redirects = {
        "/moved.jpg": "/photo_unavailable.png",
        "/moved_quietly.jpg": "/img/1234.png",
        "/gone.jpg": "/static/Removed.jpg",
        "/redirect_ok.jpg": "/good/real.jpg",
    }
    counts: dict = {}
    lock = threading.Lock()

    def log_message(self, *args):
        pass

    def send(self, status, content_type, body):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        with self.lock:
            self.counts[self.path] = self.counts.get(self.path, 0) + 1
            count = self.counts[self.path]
        try:
            if self.path == "/flaky.jpg":
                self.send(*((500, "text/plain", b"busy") if count == 1 else (200, "image/jpeg", JPEG_C)))
            elif self.path == "/slow.jpg":
                time.sleep(1.0)
                self.send(200, "image/jpeg", JPEG_A)
            elif self.path in self.redirects:
                self.send_response(302)
                self.send_header("Location", self.redirects[self.path])
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif self.path in self.routes:
                self.send(*self.routes[self.path])
            else:
                self.send(404, "text/plain", b"no route")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout)


@pytest.fixture
def server(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    ImageServer.counts = {}
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ImageServer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


GOOD_URLS = {  # path -> (class folder, served bytes, extension)
    "/good/cat1.jpg": ("cats", JPEG_A, ".jpg"),
    "/other/cat1.jpg": ("cats", JPEG_B, ".jpg"),
    "/good/dog.png": ("dogs", PNG_A, ".png"),
    "/good/png_named.jpg": ("dogs", PNG_B, ".png"),
    "/flaky.jpg": ("unlabelled", JPEG_C, ".jpg"),
    "/redirect_ok.jpg": ("unlabelled", JPEG_D, ".jpg"),
}
BAD_URLS = {  # path -> words the reason must contain
    "/missing.jpg": "HTTP 404",
    "/always500.jpg": "HTTP 500",
    "/slow.jpg": "timed out",
    "/moved.jpg": "placeholder",
    "/moved_quietly.jpg": "placeholder",
    "/gone.jpg": "photo unavailable",
    "/html.jpg": "HTML",
    "/empty.jpg": "empty",
    "/truncated.jpg": "truncated",
    "/pixel.gif": "too small",
}


def url_file(tmp_path: Path, base: str) -> Path:
    lines = [
        "# test URLs",
        "",
        f"{base}/good/cat1.jpg\tcats",
        f"{base}/other/cat1.jpg\tcats",
        f"{base}/good/dog.png\tdogs",
        f"{base}/good/png_named.jpg\tdogs",
        f"{base}/flaky.jpg",
        f"{base}/redirect_ok.jpg",
        f"{base}/good/cat1.jpg\tcats",  # a duplicate line
        *(f"{base}{path}\tcats" for path in BAD_URLS),
        "ftp://127.0.0.1/nope.jpg",
    ]
    path = tmp_path / "urls.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_gather_downloads_only_good_images_and_resumes(server, tmp_path, capsys):
    urls = url_file(tmp_path, server)
    out = tmp_path / "gathered"
    summary = gather.gather(urls, out, workers=6, timeout=0.5, retries=2, backoff=0.05)
    assert summary.count("downloaded") == len(GOOD_URLS)
    assert summary.count("failed") == len(BAD_URLS) + 1  # + the ftp line
    assert "downloading" in capsys.readouterr().err

    landed = {p.relative_to(out).as_posix(): p for p in out.rglob("*") if p.is_file() and p.parent != out}
    expected = {
        f"{folder}/{gather.file_stem(server + path)}{ext}": body for path, (folder, body, ext) in GOOD_URLS.items()
    }
    assert set(landed) == set(expected)
    for relative, body in expected.items():
        assert landed[relative].read_bytes() == body
        assert image_files.check_image(landed[relative]).ok
        assert landed[relative].stat().st_mode & 0o777 == 0o644
    assert {p.name for p in out.iterdir() if p.is_file()} == {"failures.tsv"}
    assert not [p for p in out.rglob(".tmp*")], "temporary files left behind"

    rows = [line.split("\t") for line in (out / "failures.tsv").read_text().splitlines() if not line.startswith("#")]
    reasons = dict(rows)
    assert set(reasons) == {server + path for path in BAD_URLS} | {"ftp://127.0.0.1/nope.jpg"}
    for path, words in BAD_URLS.items():
        assert words.lower() in reasons[server + path].lower(), (path, reasons[server + path])
    assert ImageServer.counts["/flaky.jpg"] == 2  # 500, retried, 200
    assert ImageServer.counts["/always500.jpg"] == 3  # 1 + 2 retries
    assert ImageServer.counts["/missing.jpg"] == 1  # 4xx: never retried
    assert ImageServer.counts["/slow.jpg"] == 3  # timeouts are retried
    assert ImageServer.counts["/good/cat1.jpg"] == 1  # the duplicate line is dropped

    # Second run, through the CLI: no request for a file already there, nothing new downloaded.
    ImageServer.counts.clear()
    assert main(["data", "gather", str(urls), "--out", str(out), "--timeout", "0.5", "--retries", "0"]) == 1
    printed = capsys.readouterr().out
    assert f"0 downloaded, {len(GOOD_URLS)} skipped (already present), {len(BAD_URLS) + 1} failed" in printed
    assert not set(ImageServer.counts) & (set(GOOD_URLS) | {"/good/real.jpg"})
    assert {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.parent != out} == set(expected)


def test_gather_all_good_exits_0(server, tmp_path, capsys):
    urls = tmp_path / "urls.txt"
    urls.write_text(f"{server}/good/cat1.jpg\tcats\n{server}/good/dog.png\n")
    assert main(["data", "gather", str(urls), "--out", str(tmp_path / "out"), "--workers", "2"]) == 0
    assert "2 downloaded, 0 skipped (already present), 0 failed" in capsys.readouterr().out
    assert (tmp_path / "out" / "failures.tsv").read_text() == "# url\treason\n"


def test_file_stem_is_sanitised_and_unique():
    a = gather.file_stem("http://x/a/My%20Photo (1).JPG?size=large")
    b = gather.file_stem("http://x/b/My%20Photo (1).JPG?size=large")
    assert a.startswith("My_Photo_1-") and a != b
    assert gather.file_stem("http://x/").startswith("image-")
    assert "/" not in gather.file_stem("http://x/..%2F..%2Fetc%2Fpasswd")


# --------------------------------------------------------------------------------------------------
# CLI user errors
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["label"], ["check"], ["stats"], ["split"]])
def test_missing_root_is_a_user_error(tmp_path, capsys, command):
    missing = tmp_path / "no-such-folder"
    assert main(["data", *command, str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err


def test_missing_url_file_is_a_user_error(tmp_path, capsys):
    missing = tmp_path / "urls.txt"
    assert main(["data", "gather", str(missing), "--out", str(tmp_path / "out")]) == 2
    assert str(missing) in capsys.readouterr().err
