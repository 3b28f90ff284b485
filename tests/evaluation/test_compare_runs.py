"""`report` command: runs side by side from their files; bad run directories are named."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from pipeline.config import rundir
from pipeline.evaluation import compare_runs

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def make_run(
    root: Path, name: str, *, learning_rate=0.001, epochs=2, accuracy=0.5, top_k=None, finished=True, extra=None
) -> Path:
    """A run directory as `pipeline train` writes it (only the files `report` reads)."""
    run = root / name
    run.mkdir(parents=True)
    config = {
        "name": "tiny",
        "seed": 42,
        "input": {"image_size": [16, 16]},
        "train": {"epochs": epochs, "optimizer": {"name": "adam", "learning_rate": learning_rate}},
    }
    config.update(extra or {})
    (run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    rows = ["epoch,accuracy,learning_rate,loss,val_accuracy,val_loss"]
    rows += [
        f"{e},{0.3 + 0.1 * e},{learning_rate},{1.5 - 0.1 * e},{0.25 + 0.1 * e},{1.6 - 0.1 * e}" for e in range(epochs)
    ]
    (run / "history.csv").write_text("\n".join(rows) + "\n")
    if finished:
        metrics = {
            "test": {"accuracy": accuracy, "loss": 1.2},
            "epochs_completed": epochs,
            "train_seconds": 250.0,
            "images_per_second": 1234.5,
        }
        (run / "metrics.json").write_text(json.dumps(metrics))
    if top_k is not None:
        (run / "evaluation").mkdir()
        (run / "evaluation" / "report.json").write_text(
            json.dumps({"accuracy": accuracy, "top_k": 5, "top_k_accuracy": top_k})
        )
    return run


def test_table_shows_only_the_keys_that_differ(tmp_path):
    first = make_run(tmp_path, "a", learning_rate=0.001, accuracy=0.6125, top_k=0.9)
    second = make_run(
        tmp_path, "b", learning_rate=0.01, epochs=3, accuracy=0.7, top_k=0.95, extra={"model": {"name": "simple_cnn"}}
    )
    table = compare_runs.compare_runs([first, second])
    lines = table.splitlines()
    assert lines[0] == (
        "| experiment | run | train.epochs | train.optimizer.learning_rate | model.name | "
        "test accuracy | test top-5 | epochs | train time | images/s |"
    )
    assert lines[2] == "| tiny | a | 2 | 0.001 | — | 0.6125 | 0.9000 | 2 | 4.2 min | 1234 |"
    assert lines[3] == "| tiny | b | 3 | 0.01 | simple_cnn | 0.7000 | 0.9500 | 3 | 4.2 min | 1234 |"
    assert "seed" not in lines[0] and "image_size" not in lines[0]


def test_unfinished_run_and_missing_evaluation(tmp_path):
    done = make_run(tmp_path, "done")
    running = make_run(tmp_path, "running", finished=False)
    lines = compare_runs.compare_runs([done, running]).splitlines()
    assert "test top-k" in lines[0]
    assert lines[3] == "| tiny | running (unfinished) | — | — | — | — | — |"


def test_out_writes_the_table_and_the_curves(tmp_path):
    runs = [make_run(tmp_path, "a"), make_run(tmp_path, "b", learning_rate=0.1, epochs=4)]
    out = tmp_path / "reports" / "compare.md"
    out.parent.mkdir()
    table = compare_runs.compare_runs(runs, out=out)
    assert out.read_text() == table
    with Image.open(out.with_suffix(".png")) as image:
        assert image.size[0] > 800 and image.size[1] > 300


@pytest.mark.parametrize(
    "breakage, message",
    [
        (lambda run: None, "missing: no such run directory"),
        (lambda run: run.mkdir(), "not a run directory (no config.yaml)"),
        (lambda run: (run.mkdir(), (run / "config.yaml").write_text("train: [unclosed")), "config.yaml: cannot read"),
        (lambda run: (run.mkdir(), (run / "config.yaml").write_text("- a list")), "expected a mapping"),
    ],
)
def test_missing_or_garbled_run_dirs_are_named(tmp_path, breakage, message):
    run = tmp_path / "missing"
    breakage(run)
    with pytest.raises(compare_runs.CompareError) as raised:
        compare_runs.compare_runs([make_run(tmp_path, "good"), run])
    assert str(run) in str(raised.value) and message.split(": ")[-1] in str(raised.value)


def test_garbled_metrics_json_is_named(tmp_path):
    run = make_run(tmp_path, "a")
    (run / "metrics.json").write_text('{"test": ')
    with pytest.raises(compare_runs.CompareError, match=r"metrics\.json: not valid JSON"):
        compare_runs.compare_runs([run])


def test_command_arguments_and_run(tmp_path, capsys):
    runs = [make_run(tmp_path, "a"), make_run(tmp_path, "b", learning_rate=0.1)]
    parser = argparse.ArgumentParser()
    compare_runs.add_arguments(parser)
    args = parser.parse_args([str(runs[0]), str(runs[1]), "--out", str(tmp_path / "r.md")])
    assert compare_runs.run(args) == 0
    printed = capsys.readouterr().out
    assert "| tiny | b | 0.1 |" in printed and f"written: {tmp_path / 'r.md'}, {tmp_path / 'r.png'}" in printed


def test_flatten():
    assert rundir.flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": {}}) == {"a.b": 1, "a.c.d": [1, 2], "e": {}}


def test_import_is_tensorflow_free():
    code = "import sys, pipeline.evaluation.compare_runs; print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]
