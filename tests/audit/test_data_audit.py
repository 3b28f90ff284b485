"""`data audit`: duplicates (exact and near), leakage across splits, class conflicts, bad input.

Synthetic photos-like images (smooth random colour fields: distinct ones differ in ~half their hash bits)
with planted copies: an exact duplicate under another name and format, a near duplicate (resized,
cropped, brightened and recompressed), a conflict across classes and a leak from train into test.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from pipeline import cli


def smooth_image(seed: int, size: int = 96):
    """A PIL RGB image: an 8x8 random colour field enlarged bicubically (photo-like: smooth, distinct)."""
    from PIL import Image

    field = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), np.uint8)
    return Image.fromarray(field).resize((size, size), Image.BICUBIC)


def save(image, path: Path, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **options)
    return path


def jpeg_bytes(image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def planted_tree(tmp_path_factory) -> Path:
    """train/{a,b}/ and test/{a,b}/, 5 originals per class and split, plus the planted copies."""
    from PIL import Image, ImageEnhance

    root = tmp_path_factory.mktemp("audit") / "photos"
    seed = 0
    for split in ("train", "test"):
        for name in ("a", "b"):
            for number in range(5):
                seed += 1
                save(smooth_image(seed), root / split / name / f"{number}.jpg", quality=90)
    # Exact: the same decoded pixels as a PNG under another name (Pillow decodes JPEGs as training does).
    Image.open(root / "train/a/0.jpg").save(root / "train/a/copy-of-0.png")
    # Near: resized to 1.5x, 5% cropped, 15% brighter, recompressed at quality 70.
    near = Image.open(root / "train/a/1.jpg").resize((144, 144), Image.BICUBIC).crop((4, 3, 140, 140))
    near = ImageEnhance.Brightness(near).enhance(1.15)
    (root / "train/a/near-1.jpg").write_bytes(jpeg_bytes(near, 70))
    # Conflict: train/a/2 filed again under b.
    Image.open(root / "train/a/2.jpg").save(root / "train/b/also-2.png")
    # Leak: train/b/3 recompressed into test/b.
    (root / "test/b/leak-3.jpg").write_bytes(jpeg_bytes(Image.open(root / "train/b/3.jpg"), 80))
    # A very dark, nearly uniform image.
    save(Image.new("RGB", (64, 64), (5, 5, 6)), root / "train/b/dark.png")
    return root


@pytest.fixture(scope="module")
def audited(planted_tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "audit"
    lists = tmp_path_factory.mktemp("lists") / "clean"
    assert cli.main(["data", "audit", str(planted_tree), "--out", str(out), "--write-lists", str(lists)]) == 0
    return json.loads((out / "audit.json").read_text()), out, lists


def member_sets(groups) -> set[frozenset]:
    return {frozenset(m["path"] for m in g["members"]) for g in groups}


def test_every_planted_duplicate_is_found_in_its_own_group(audited):
    report, _, _ = audited
    groups = {frozenset(m["path"] for m in g["members"]): g["kind"] for g in report["groups"]}
    assert groups == {
        frozenset({"train/a/0.jpg", "train/a/copy-of-0.png"}): "exact",
        frozenset({"train/a/1.jpg", "train/a/near-1.jpg"}): "near",
        frozenset({"train/a/2.jpg", "train/b/also-2.png"}): "exact",
        frozenset({"train/b/3.jpg", "test/b/leak-3.jpg"}): "near",
    }
    assert report["exact_duplicate_groups"] == 2 and report["near_duplicate_groups"] == 2
    assert report["method"]["near_min_correlation"] == 0.7 and report["warnings"] == []  # no look-alikes here
    near = [g for g in report["groups"] if g["kind"] == "near"]
    assert all(g["min_correlation"] > 0.9 for g in near)  # the recompressed leak and the resized-cropped copy
    assert report["images"] == 25 and report["splits"] == {"train": 14, "test": 11}


def test_leakage_and_conflicts_are_named_with_the_share_of_test(audited):
    report, _, _ = audited
    assert member_sets(report["leak_groups"]) == {frozenset({"train/b/3.jpg", "test/b/leak-3.jpg"})}
    assert report["leakage"]["images"]["test"] == 1 and report["leakage"]["share"]["test"] == 0.0909
    assert member_sets(report["conflict_groups"]) == {frozenset({"train/a/2.jpg", "train/b/also-2.png"})}
    assert report["per_class"]["b"]["very_dark"] == ["train/b/dark.png"]
    assert report["per_class"]["b"]["nearly_uniform"] == ["train/b/dark.png"]
    assert report["per_class"]["a"]["very_dark"] == [] and report["per_class"]["a"]["count"] == 12


def test_report_files_and_lists_without_leaked_and_conflicting_images(audited, planted_tree):
    report, out, lists = audited
    for name in ("audit.json", "audit.md", "duplicates.png", "leakage.png", "conflicts.png"):
        assert (out / name).is_file(), name
    assert (out / "duplicates.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Leakage" in (out / "audit.md").read_text() and "9.09% of it" in (out / "audit.md").read_text()
    train = (lists / "train.txt").read_text().splitlines()
    test = (lists / "test.txt").read_text().splitlines()
    assert (lists / "classes.txt").read_text() == "a\nb\n"
    listed = {line.rsplit(" ", 1)[0] for line in train[1:]}
    assert "train/b/3.jpg" not in listed and "train/a/2.jpg" not in listed and "train/b/also-2.png" not in listed
    assert "train/a/0.jpg" in listed and len(listed) == 11 and len(test) == 12  # header + every test image
    assert all((planted_tree / path).is_file() for path in listed)  # nothing moved or deleted


@pytest.mark.parametrize("case", ["empty", "missing", "experiment"])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(case, tmp_path, capsys):
    empty = tmp_path / "empty"
    (empty / "a").mkdir(parents=True)
    target = {"empty": str(empty), "missing": str(tmp_path / "nowhere"), "experiment": "no_such_experiment"}[case]
    out = tmp_path / "out"
    assert cli.main(["data", "audit", target, "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("error: ") and "Traceback" not in error[0]
    assert (target in error[0]) or ("no_such_experiment" in error[0])
    assert not out.exists()


def test_in_memory_grey_images_are_fingerprinted_like_files():
    from pipeline.data import fingerprints

    images = np.random.default_rng(0).integers(0, 256, (4, 28, 28, 1), np.uint8)
    images[3] = images[1]
    prints = fingerprints.fingerprint_arrays(images)
    assert prints.height.tolist() == [28] * 4 and not prints.failed
    assert fingerprints.exact_pairs(prints.exact, prints.height, prints.width).tolist() == [[1, 3]]
    assert fingerprints.group(4, [(1, 3, 0)]) == [[1, 3]]


@pytest.mark.slow
@pytest.mark.mirror
def test_the_mirrors_hymenoptera_has_no_duplicates(mirror_dir, tmp_path):
    """The real photos (398 files, one GIF placeholder): none decodes to the same or nearly the same picture
    as another (its closest pairs, pHash 12-16 of 64, are different photographs; benchmarks/RESULTS.md)."""
    import tarfile

    with tarfile.open(mirror_dir / "hymenoptera.tar.gz") as archive:
        archive.extractall(tmp_path, filter="data")
    out = tmp_path / "report"
    assert cli.main(["data", "audit", str(tmp_path / "hymenoptera"), "--out", str(out)]) == 0
    report = json.loads((out / "audit.json").read_text())
    assert report["images"] == 398 and report["splits"] == {"train": 245, "validation": 153}
    assert report["groups"] == [] and report["leakage"]["groups"] == 0 and report["conflicts"]["groups"] == 0
    assert report["per_class"]["ants"]["count"] == 194 and report["per_class"]["bees"]["count"] == 204
