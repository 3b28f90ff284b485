"""The table of `benchmarks/gpu_check.sh` (issue 24, part 3): reads the run directories and logs the script
left in its work folder and records one section in RESULTS.md. Not meant to be run by hand.

    .venv/bin/python -m benchmarks.gpu_report --work DIR --epochs 24 --seconds 431 [--no-record]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common  # noqa: E402

RUNS = [  # (work-folder name, what it is)
    ("fast_xla", "cifar10_fast, mixed_float16, XLA on, default strategy"),
    ("fast_noxla", "cifar10_fast, mixed_float16, XLA off, default strategy"),
    ("fast_mirrored", "cifar10_fast, mixed_float16, XLA on, mirrored (1 GPU)"),
    ("aug_default", "cifar10_aug 2 epochs, mixed_float16, XLA on, default strategy"),
    ("aug_mirrored", "cifar10_aug 2 epochs, mixed_float16, XLA on, mirrored (1 GPU)"),
]


def run_row(work: Path, name: str, label: str) -> list:
    """One table row from <work>/<name>/metrics.json, or the step's status when the run did not finish."""
    status = (work / f"{name}.status").read_text().strip() if (work / f"{name}.status").exists() else "not run"
    metrics_file = work / name / "metrics.json"
    if not metrics_file.exists():
        return [label, "-", "-", "-", "-", f"no metrics ({status})"]
    metrics = json.loads(metrics_file.read_text())
    return [
        label,
        metrics["epochs_completed"],
        f"{100 * metrics['test']['accuracy']:.2f}%",
        common.fmt(metrics["train_seconds"], 1),
        common.fmt(metrics["images_per_second"], 0),
        status,
    ]


def serving_rows(work: Path) -> list[str]:
    """The concurrency-8 rows (batching off and on) of benchmarks/serving.py's printed table."""
    log = work / "serving.log"
    if not log.exists():
        status = (work / "serving.status").read_text().strip() if (work / "serving.status").exists() else "not run"
        return [f"Serving at concurrency 8: {status}."]
    rows = [line for line in log.read_text().splitlines() if line.startswith(("| off | 8 |", "| on | 8 |"))]
    if not rows:
        return [f"Serving at concurrency 8: no row printed ({(work / 'serving.status').read_text().strip()})."]
    headers = "| batching | concurrency | requests | requests/s | p50 ms | p90 ms | p99 ms | answers | mean batch |"
    return ["Serving (`benchmarks/serving.py --concurrency 8`, mnist_lenet 1 epoch):", "", headers,
            "|" + " --- |" * 9, *rows]  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="gpu_check.sh's work folder")
    parser.add_argument("--epochs", type=int, required=True, help="cifar10_fast's epochs in that check")
    parser.add_argument("--seconds", type=float, required=True, help="the whole check's wall time")
    args = parser.parse_args(argv)
    rows = [run_row(args.work, name, label) for name, label in RUNS]
    table = common.markdown_table(["run", "epochs", "test accuracy", "train s", "images/s", "step"], rows)
    table += "\n\n" + "\n".join(serving_rows(args.work))
    notes = (
        f"`benchmarks/gpu_check.sh` (cifar10_fast at {args.epochs} epochs), whole check {args.seconds:.0f} s. "
        "train s and images/s: `metrics.json` (the fit alone, tracing included); test accuracy with the "
        "experiment's TTA. Logs were in the work folder shown above."
    )
    common.finish(
        args,
        title="GPU check: mixed_float16 with and without XLA, mirrored on one GPU, serving (issue 24)",
        module="benchmarks.gpu_report",
        argv=argv,
        table=table,
        notes=notes,
    )


if __name__ == "__main__":
    main()
