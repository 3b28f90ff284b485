"""`audit RUN`: label issues and outliers of a tiny trained run with planted flipped labels; bad input.

The data: four classes told apart by colour (a coloured square on dark noise), as class folders; the
held-out folder (val/, the test split) has 4 images filed under the wrong class. A 6-epoch tiny run learns
the colours, so cleanlab must name exactly those files (and suggest their true class) among its issues.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import LEAN_RUN

from pipeline import cli

COLOURS = [(230, 40, 40), (40, 230, 40), (40, 40, 230), (230, 230, 40)]
CLASSES = ["blue", "green", "red", "yellow"]  # folder names, sorted = label order
COLOUR_OF = {"red": 0, "green": 1, "blue": 2, "yellow": 3}
FLIPPED = {
    "val/green/flip-red-0.png": "red",
    "val/blue/flip-green-1.png": "green",
    "val/yellow/flip-blue-2.png": "blue",
    "val/red/flip-yellow-3.png": "yellow",
}


def coloured(colour, rng) -> np.ndarray:
    image = rng.integers(0, 60, (24, 24, 3), np.uint8)
    row, col = rng.integers(0, 12, 2)
    image[row : row + 12, col : col + 12] = colour
    return image


def write_tree(root: Path, *, train_per_class: int = 40, val_per_class: int = 12, seed: int = 0) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for name in CLASSES:
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for number in range(count):
                Image.fromarray(coloured(COLOURS[COLOUR_OF[name]], rng)).save(folder / f"{number}.png")
    for relative, true_class in FLIPPED.items():
        Image.fromarray(coloured(COLOURS[COLOUR_OF[true_class]], rng)).save(root / relative)
    return root


def overrides(root: Path, data_dir: Path) -> list[str]:
    pairs = [
        "dataset.name=folder",
        f"dataset.root={root}",
        f"dataset.data_dir={data_dir}",
        "dataset.validation_split=0.2",
        "input.image_size=[24,24]",
        "train.epochs=6",
        "train.batch_size=16",
        "train.optimizer.learning_rate=0.01",
        *LEAN_RUN,
    ]
    return [item for pair in pairs for item in ("--set", pair)]


@pytest.fixture(scope="module")
def colour_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("colours")
    root = write_tree(base / "colours")
    run = base / "run"
    assert cli.main(["train", "tiny", "--run-dir", str(run), *overrides(root, base / "data")]) == 0
    return run, root


def test_flipped_labels_are_found_with_their_true_class(colour_run):
    run, root = colour_run
    assert cli.main(["audit", str(run), "--split", "test"]) == 0
    with open(run / "audit" / "test" / "label_issues.csv") as handle:
        rows = list(csv.DictReader(handle))
    found = {str(Path(row["path"]).relative_to(root)): row for row in rows}
    assert set(FLIPPED) <= set(found), rows
    for relative, true_class in FLIPPED.items():
        assert found[relative]["suggested"] == true_class
        assert float(found[relative]["score"]) < 0.5
    assert len(rows) <= len(FLIPPED) + 2  # untouched images are (nearly) never flagged
    assert [int(row["rank"]) for row in rows] == list(range(1, len(rows) + 1))
    summary = json.loads((run / "audit" / "test" / "summary.json").read_text())
    assert summary["split"] == "test" and summary["images"] == 4 * 12 + 4 and summary["issues"] == len(rows)
    for name in ("label_issues.png", "outliers.png", "class_pairs.csv", "outliers.csv"):
        assert (run / "audit" / "test" / name).is_file(), name
    assert list((run / "tensorboard" / "audit").glob("events.out.tfevents.*"))


@pytest.mark.parametrize("case", ["experiment", "train_without_folds", "folds_on_test"])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(case, colour_run, capsys):
    run, _ = colour_run
    argv = {
        "experiment": ["audit", "tiny"],
        "train_without_folds": ["audit", str(run), "--split", "train"],
        "folds_on_test": ["audit", str(run), "--split", "test", "--folds", "3"],
    }[case]
    before = sorted(str(p) for p in (run / "audit").rglob("*")) if (run / "audit").exists() else []
    assert cli.main(argv) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("error: ")
    assert {"experiment": "tiny", "train_without_folds": "--folds", "folds_on_test": "--folds"}[case] in error[0]
    after = sorted(str(p) for p in (run / "audit").rglob("*")) if (run / "audit").exists() else []
    assert after == before


def test_a_run_of_another_dataset_version_is_refused(colour_run, tmp_path, capsys):
    run, root = colour_run
    import shutil

    copy = Path(shutil.copytree(run, tmp_path / "run", ignore=shutil.ignore_patterns("audit")))
    (copy / "classes.txt").write_text("blue\ngreen\nred\nviolet\n")
    assert cli.main(["audit", str(copy), "--split", "test"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "another dataset version" in error[0]
    assert not (copy / "audit").exists()


@pytest.mark.slow
def test_train_split_with_folds_finds_flipped_training_labels_and_resumes(tmp_path):
    """`--split train --folds 2`: two fold trainings (subprocesses) predict the halves they did not see;
    flipped training labels are found; a second audit reuses the finished folds (no training)."""
    from PIL import Image

    root = write_tree(tmp_path / "colours", train_per_class=40, val_per_class=6, seed=1)
    rng = np.random.default_rng(7)
    planted = {
        "train/green/flip-red.png": "red",
        "train/blue/flip-yellow.png": "yellow",
        "train/red/flip-green.png": "green",
        "train/yellow/flip-blue.png": "blue",
    }
    for relative, true_class in planted.items():
        Image.fromarray(coloured(COLOURS[COLOUR_OF[true_class]], rng)).save(root / relative)
    run = tmp_path / "run"
    argv = ["train", "tiny", "--run-dir", str(run), *overrides(root, tmp_path / "data")]
    assert cli.main(argv) == 0
    assert cli.main(["audit", str(run), "--split", "train", "--folds", "2", "--fold-epochs", "8"]) == 0
    with open(run / "audit" / "train" / "label_issues.csv") as handle:
        rows = {str(Path(row["path"]).relative_to(root)): row for row in csv.DictReader(handle)}
    folds = run / "audit" / "folds" / "fold-0"
    in_train = {
        line.rsplit(" ", 1)[0]
        for name in ("train.txt", "held_out.txt")
        for line in (folds / name).read_text().splitlines()[1:]
    }
    audited = [relative for relative in planted if relative in in_train]  # validation is carved from train/
    assert len(audited) >= 2
    for relative in audited:
        assert rows[relative]["suggested"] == planted[relative], rows
    checkpoints = sorted((run / "audit" / "folds").glob("fold-*/run/checkpoints/best.keras"))
    assert len(checkpoints) == 2
    stamps = [path.stat().st_mtime_ns for path in checkpoints]
    assert cli.main(["audit", str(run), "--split", "train", "--folds", "2", "--fold-epochs", "8"]) == 0
    assert [path.stat().st_mtime_ns for path in checkpoints] == stamps  # finished folds are not trained again
