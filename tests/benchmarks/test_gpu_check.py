"""`benchmarks/gpu_check.sh` (issue 24, part 3): without a GPU it stops at once; its report reads what the
runs left and marks what did not finish."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from benchmarks import gpu_report

PROJECT = Path(__file__).resolve().parents[2]


def test_gpu_check_says_no_gpu_and_exits_0_at_once():
    """Without an NVIDIA device (`nvidia-smi` absent or listing none) the script stops before TensorFlow."""
    environment = dict(os.environ, PATH="/usr/bin:/bin")  # no nvidia-smi on this PATH
    started = time.perf_counter()
    done = subprocess.run(
        ["bash", str(PROJECT / "benchmarks" / "gpu_check.sh")],
        capture_output=True,
        text=True,
        timeout=30,
        env=environment,
        cwd=PROJECT,
    )
    elapsed = time.perf_counter() - started
    assert done.returncode == 0, done.stderr
    assert "no GPU" in done.stdout and "nothing measured" in done.stdout
    assert elapsed < 5.0  # "a second": bash and one probe; generous for a loaded CI machine


def test_gpu_report_tables_finished_runs_and_marks_the_others(tmp_path, capsys):
    (tmp_path / "fast_xla").mkdir()
    metrics = {
        "epochs_completed": 24,
        "test": {"accuracy": 0.9312},
        "train_seconds": 61.25,
        "images_per_second": 17712.4,
    }
    (tmp_path / "fast_xla" / "metrics.json").write_text(json.dumps(metrics))
    (tmp_path / "fast_xla.status").write_text("exit 0 after 75s (cap 150s)\n")
    (tmp_path / "fast_noxla.status").write_text("exit 124 after 150s (cap 150s)\n")
    (tmp_path / "serving.log").write_text(
        "noise\n| off | 8 | 1000 | 812 | 9.1 | 12.0 | 20.5 | 200: 1000 | 1.00 |\n| on | 8 | 1000 | 1650 | 4.2 | 6.0 | 9.9 | 200: 1000 | 3.10 |\n"
    )
    gpu_report.main(["--work", str(tmp_path), "--epochs", "24", "--seconds", "431", "--no-record"])
    out = capsys.readouterr().out
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in out.splitlines() if line.startswith("|")]
    rows = {row[0]: row[1:] for row in cells}
    assert rows["cifar10_fast, mixed_float16, XLA on, default strategy"] == [
        "24", "93.12%", "61.2", "17712", "exit 0 after 75s (cap 150s)"
    ]  # fmt: skip
    assert (
        rows["cifar10_fast, mixed_float16, XLA off, default strategy"][-1]
        == "no metrics (exit 124 after 150s (cap 150s))"
    )
    assert rows["cifar10_aug 2 epochs, mixed_float16, XLA on, mirrored (1 GPU)"][-1] == "no metrics (not run)"
    assert rows["on"][:3] == ["8", "1000", "1650"] and rows["off"][:3] == ["8", "1000", "812"]
    assert "(not recorded: --no-record)" in out
