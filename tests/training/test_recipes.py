"""Modern recipes wired into real runs: class weights for imbalance, weight EMA, TTA, the batch layers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline import experiment as experiment_lib
from pipeline import run as train


def imbalanced_folder(root: Path, counts: dict, size: int = 16) -> Path:
    """Two classes told apart by brightness (with overlapping noise), e.g. 90/10."""
    for index, (name, count) in enumerate(counts.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(index)
        for number in range(count):
            level = 100 + 40 * index
            image = np.clip(rng.normal(level, 30, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(image).save(root / name / f"{number:03d}.png")
    return root


def run(tmp_path: Path, name: str, root: Path, *extra: str) -> dict:
    config = experiment_lib.load_experiment(
        "tiny",
        [
            "dataset.name=folder",
            f"dataset.root={root}",
            f"dataset.data_dir={tmp_path / 'data'}",
            "input.image_size=[16,16]",
            "train.epochs=4",
            "train.batch_size=16",
            "train.verbose=0",
            "export.enabled=false",
            "train.callbacks.tensorboard.enabled=false",
            "dataset.test_split=0.3",
            "train.optimizer.learning_rate=0.01",
            *extra,
        ],
    )
    train.train(config, run_dir=tmp_path / name, log=lambda *_: None)
    return json.loads((tmp_path / name / "evaluation" / "report.json").read_text())


@pytest.mark.slow  # 7-30 s on a 2-core AVX2 VM: make test must stay under 4 min there
def test_balanced_class_weights_raise_the_minority_recall(tmp_path):
    root = imbalanced_folder(tmp_path / "ds", {"common": 180, "rare": 20})
    plain = run(tmp_path, "plain", root)
    balanced = run(tmp_path, "balanced", root, "train.class_weight=balanced")
    recall = {
        name: {row["class"]: row["recall"] for row in report["per_class"]}
        for name, report in (("plain", plain), ("balanced", balanced))
    }
    assert recall["balanced"]["rare"] > recall["plain"]["rare"], recall
    metrics = json.loads((tmp_path / "balanced" / "metrics.json").read_text())
    assert metrics["test"]["balanced_accuracy"] == balanced["balanced_accuracy"]


@pytest.mark.slow  # 7-30 s on a 2-core AVX2 VM: make test must stay under 4 min there
def test_ema_tta_and_batch_layers_train_end_to_end(tmp_path):
    root = imbalanced_folder(tmp_path / "ds", {"dark": 30, "bright": 30})
    report = run(
        tmp_path,
        "modern",
        root,
        "train.optimizer.ema=0.9",
        "evaluation.tta=flip",
        "input.crop.mode=random_resized",
        "input.augment.mix_up=0.2",
        "input.augment.cut_mix=1.0",
        "input.augment.random_erasing=0.25",
        "input.augment={rand_augment: {num_ops: 2, factor: 0.5}}",
    )
    metrics = json.loads((tmp_path / "modern" / "metrics.json").read_text())
    assert metrics["test"]["tta"] == "flip" and metrics["test"]["accuracy"] == report["accuracy"]
    assert sum(map(sum, report["confusion_matrix"])) == metrics["test_images"]
