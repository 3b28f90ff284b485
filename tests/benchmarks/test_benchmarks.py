"""Smoke tests of the benchmark scripts: each main() with --quick --no-record on synthetic data.

No dataset mirror needed (--synthetic: random uint8 arrays and a few generated JPEGs in a temp dir);
small batches keep the four runs short. The book recipe (variant C) needs scipy, a benchmark-only
dependency (requirements-bench.txt): without it those parts are skipped.
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest

from benchmarks import common

# Smoke runs of the benchmark scripts (2-110 s each on 2 cores): `make test-slow`.
pytestmark = pytest.mark.slow

SMOKE = ["--quick", "--no-record", "--synthetic", "--batch-size", "16"]
HAVE_SCIPY = importlib.util.find_spec("scipy") is not None


def tables(text: str) -> list[list[dict]]:
    """Markdown tables in printed output: a list of rows (header -> cell) per table."""
    found, block = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            block.append([cell.strip() for cell in line.strip().strip("|").split("|")])
            continue
        if len(block) >= 2:
            header, rows = block[0], block[2:]
            found.append([dict(zip(header, row)) for row in rows])
        block = []
    return found


def table_with(text: str, *columns: str) -> list[dict]:
    for rows in tables(text):
        if rows and all(column in rows[0] for column in columns):
            return rows
    raise AssertionError(f"no table with columns {columns} in:\n{text}")


def positive(cell: str) -> bool:
    value = float(cell)
    return math.isfinite(value) and value > 0


@pytest.fixture
def results_untouched():
    """The smoke runs must not write RESULTS.md."""
    before = common.RESULTS_PATH.read_bytes() if common.RESULTS_PATH.exists() else None
    yield
    after = common.RESULTS_PATH.read_bytes() if common.RESULTS_PATH.exists() else None
    assert after == before


def test_input_pipeline_quick(capsys, results_untouched):
    from benchmarks import input_pipeline

    input_pipeline.main(SMOKE)
    rows = table_with(capsys.readouterr().out, *input_pipeline.HEADERS)
    assert [row["source"] for row in rows] == ["files", "arrays"]
    for row in rows:
        for column in input_pipeline.HEADERS[1:]:
            assert positive(row[column]), (column, row)


def test_train_throughput_quick(capsys, results_untouched):
    from benchmarks import train_throughput

    variants = "A,B,C" if HAVE_SCIPY else "A,B"
    result = train_throughput.main(SMOKE + ["--variants", variants])
    out = capsys.readouterr().out
    rows = table_with(out, *train_throughput.HEADERS)
    assert [row["variant"] for row in rows] == variants.split(",")
    for row in rows:
        assert positive(row["images/s (median)"]) and positive(row["min"]) and positive(row["max"]), row
    ratios = table_with(out, *train_throughput.RATIO_HEADERS)
    assert [row["ratio"] for row in ratios] == (["B/A", "B/C"] if HAVE_SCIPY else ["B/A"])
    assert all(positive(row["value"]) and row["met"] in ("yes", "no") for row in ratios)
    assert set(result["images_per_second"]) == set(variants.split(","))


def test_compute_efficiency_quick(capsys, results_untouched):
    from benchmarks import compute_efficiency

    result = compute_efficiency.main(SMOKE + ["--matmul-size", "256"])
    out = capsys.readouterr().out
    rows = table_with(out, *compute_efficiency.HEADERS)
    assert len(rows) == 2
    for row in rows:
        for column in ("training images/s", "training GFLOP/s", "matmul GFLOP/s", "efficiency"):
            assert positive(row[column]), (column, row)
    flops = table_with(out, *compute_efficiency.FLOP_HEADERS)
    assert {row["layer"].rsplit("/", 1)[-1] for row in flops} >= {"conv1", "conv2", "conv3", "conv4", "fc1", "logits"}
    assert result["forward_flops"] == 41_482_240  # cifar10_deep: 20,741,120 multiply-adds per image


def test_feature_cache_quick(capsys, results_untouched):
    from benchmarks import feature_cache

    result = feature_cache.main(SMOKE + ["--image-size", "32"])
    rows = table_with(capsys.readouterr().out, *feature_cache.HEADERS)
    assert [row["variant"] for row in rows] == ["full model each epoch", "cached features"]
    assert float(rows[0]["features s"]) == 0 and positive(rows[1]["features s"])
    assert all(positive(row["phase s"]) and 0 <= float(row["test acc"]) <= 1 for row in rows)
    assert result["speedup"] > 0


def test_transfer_quick(capsys, results_untouched, tmp_path):
    import keras

    import models
    from benchmarks import transfer

    # A "pretrained" checkpoint of the right architecture (random weights), as a pretraining run saves it.
    checkpoint = tmp_path / "best.keras"
    models.build_model(
        "applications",
        input_shape=(32, 32, 3),
        num_classes=10,
        backbone="mobilenet_v2",
        weights=None,
        dense_units=0,
        bn_momentum=0.9,
    ).save(checkpoint)
    keras.backend.clear_session()
    archive = common.write_synthetic_jpeg_archive(tmp_path / "photos.tar.gz", count=64)
    result = transfer.main(
        SMOKE
        + [
            "--weights",
            str(checkpoint),
            "--set",
            "dataset.name=folder",
            "--set",
            f"dataset.root={archive}",
            "--set",
            f"dataset.data_dir={tmp_path / 'data'}",
            "--set",
            "dataset.skip_placeholders=false",
            "--set",
            "input.image_size=[32,32]",
        ]
    )
    rows = table_with(capsys.readouterr().out, *transfer.HEADERS)
    assert [row["weights"] for row in rows][:2] == ["pretrained", "random init"]
    assert all(0 <= float(row["test acc"]) <= 1 for row in rows)
    assert set(result["means"]) == {"pretrained", "random init"}


@pytest.mark.parametrize("recipes", ["ours,book" if HAVE_SCIPY else "ours"])
def test_time_to_accuracy_quick(capsys, results_untouched, recipes):
    from benchmarks import time_to_accuracy

    time_to_accuracy.main(SMOKE + ["--recipes", recipes])
    out = capsys.readouterr().out
    rows = table_with(out, *time_to_accuracy.HEADERS)
    assert [row["epoch"] for row in rows] == ["1", "2"]
    for row in rows:
        for name in recipes.split(","):
            assert positive(row[f"{name} s"]), row
            assert 0.0 <= float(row[f"{name} test acc"]) <= 1.0, row
    summary = table_with(out, *time_to_accuracy.SUMMARY_HEADERS)
    assert [row["recipe"] for row in summary] == recipes.split(",")
    assert "book / ours" in out


def test_time_to_accuracy_of_another_experiment_at_several_targets(capsys, results_untouched):
    from benchmarks import time_to_accuracy

    result = time_to_accuracy.main(
        SMOKE
        + [
            "--recipes",
            "ours",
            "--experiment",
            "cifar10_fast",
            "--set",
            "model.options={width: 8, whiten: true}",
            "--target",
            "0.05",
            "0.99",
            "--evaluate-from",
            "2",
        ]
    )
    out = capsys.readouterr().out
    assert "ours: cifar10_fast, 2 epochs, batch 512" in out and "test TTA flip_translate" in out
    summary = table_with(out, *time_to_accuracy.SUMMARY_HEADERS)
    assert [(row["recipe"], row["target"]) for row in summary] == [("ours", "5%"), ("ours", "99%")]
    assert positive(summary[0]["seconds to target"]) and summary[1]["seconds to target"] == "not reached"
    assert set(result["ours"]["seconds_to"]) == {0.05, 0.99} and "book / ours" not in out
    assert "ours epoch 1: " in out and "test accuracy not evaluated" in out  # --evaluate-from 2
    assert [accuracy is None for _, _, accuracy in result["ours"]["rows"]] == [True, False]


def test_record_appends_a_section(tmp_path):
    info = {
        "date": "2026-01-01 00:00:00 UTC",
        "nproc": 2,
        "cpu": "test CPU",
        "memory_gib": 4.0,
        "gpus": [],
        "python": "3.11",
        "tensorflow": "2.21.0",
        "keras": "3.15.1",
        "load_average": (0.5, 0.5, 0.5),
    }
    path = tmp_path / "RESULTS.md"
    table = common.markdown_table(["a", "b"], [["x", 1.5]])
    common.record("First", "python -m benchmarks.x", table, info=info, path=path)
    first = path.read_text()
    assert first.startswith("# Benchmark results") and "## First" in first and "| x | 1.5 |" in first
    common.record("Second", "python -m benchmarks.y --quick", table, info=info, path=path)
    second = path.read_text()
    assert second.startswith(first) and "## Second" in second and "`python -m benchmarks.y --quick`" in second
    assert "2 CPUs (nproc), test CPU" in second


def test_jpeg_generation_tree(tmp_path, capsys):
    """A second JPEG pass: same layout (as PNG), same shape, a measurable but bounded change; shift 0 at
    the same settings changes a JPEG far less than a shifted grid does."""
    from PIL import Image

    from benchmarks import jpeg_generation

    rng = np.random.default_rng(0)
    smooth = np.clip(np.cumsum(rng.normal(0, 8, (32, 32, 3)), axis=1) + 128, 0, 255).astype(np.uint8)
    for split, name in [("train", "cat"), ("test", "dog")]:
        (tmp_path / "src" / split / name).mkdir(parents=True)
        Image.fromarray(smooth).save(tmp_path / "src" / split / name / "0001.jpg", quality=75, subsampling=2)
    assert jpeg_generation.main(["--source", str(tmp_path / "src"), "--out", str(tmp_path / "out")]) == 0
    assert "2 images" in capsys.readouterr().out
    again = np.asarray(Image.open(tmp_path / "out" / "train" / "cat" / "0001.png"))
    assert again.shape == (32, 32, 3) and again.dtype == np.uint8
    first = np.asarray(Image.open(tmp_path / "src" / "train" / "cat" / "0001.jpg").convert("RGB"))
    shifted = jpeg_generation.recompress(first, shift=4)
    aligned = jpeg_generation.recompress(first, shift=0)
    assert 0 < np.abs(shifted.astype(int) - first).mean() < 20
    assert np.abs(aligned.astype(int) - first).mean() < np.abs(shifted.astype(int) - first).mean()
    with pytest.raises(ValueError, match="shift"):
        jpeg_generation.recompress(first, shift=32)
    with pytest.raises(FileNotFoundError):
        jpeg_generation.recompress_tree(tmp_path / "empty", tmp_path / "x")


def test_jpeg_idct_quick(capsys):
    from benchmarks import jpeg_idct

    assert jpeg_idct.main(["--repeats", "1", "--size", "64x48"]) == 0
    rows = table_with(capsys.readouterr().out, "IDCT", "DCT scale")
    assert len(rows) == 4 and all(positive(row[next(k for k in row if k.startswith("median"))]) for row in rows)


def test_onednn_speed_quick(capsys, results_untouched):
    from benchmarks import onednn_speed

    onednn_speed.main(["--quick", "--no-record"])
    rows = table_with(capsys.readouterr().out, "experiment", "train images/s Eigen", "1-image ms Eigen")
    assert [row["experiment"] for row in rows] == ["mnist_lenet"]
    assert all(positive(rows[0][column]) for column in ("train images/s Eigen", "1-image ms Eigen", "batch"))
