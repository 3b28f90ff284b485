"""`python -m pipeline report RUN [RUN ...] [--out FILE.md]`: finished runs side by side.

One Markdown row per run: experiment, run directory, the config keys whose values differ between the
runs (from each `config.yaml`, flattened to dotted keys), test accuracy, top-k accuracy (from
`evaluation/report.json` when present), epochs, training time and images/s (from `metrics.json`).
With `--out FILE.md` the table is also written there, and `FILE.png` gets the runs' validation
accuracy and loss per epoch (from `history.csv`) on one plot. TensorFlow-free: it only reads files.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import yaml

from pipeline.config import rundir
from pipeline.core import fileio
from pipeline.core.errors import UserError

HELP = "compare runs: a Markdown table of config differences and results (--out: also a PNG of curves)"
MISSING = "—"


class CompareError(UserError):
    """A run directory is missing or holds a file that cannot be read; the message names the path."""


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except OSError as error:
        raise CompareError(f"{path}: cannot read it ({fileio.os_reason(error)})") from None
    except json.JSONDecodeError as error:
        raise CompareError(
            f"{path}: not valid JSON ({error.msg} at line {error.lineno}); "
            f"the run may have been written by a crashed process"
        ) from None


def load_run(run_dir: os.PathLike) -> dict:
    """What the table needs from one run directory.

    Returns:
        {path, name, experiment, config (flat), metrics (dict, {} for an unfinished run),
        report (evaluation/report.json or None)}.

    Raises:
        CompareError: not a directory, no or unreadable `config.yaml`, garbled `metrics.json` or
            `evaluation/report.json`.
    """
    run_dir = Path(run_dir)
    layout = rundir.RunLayout(run_dir)
    config_path = layout.config
    if not run_dir.is_dir():
        raise CompareError(
            f"{run_dir}: no such run directory. Pass directories written by "
            f"`python -m pipeline train`, e.g. runs/<experiment>/<timestamp>"
        )
    if not config_path.is_file():
        raise CompareError(
            f"{run_dir}: not a run directory (no config.yaml). Pass directories written by "
            f"`python -m pipeline train`, e.g. runs/<experiment>/<timestamp>"
        )
    try:
        config = yaml.safe_load(config_path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise CompareError(f"{config_path}: cannot read the run's config: {error}") from None
    if not isinstance(config, dict):
        raise CompareError(f"{config_path}: expected a mapping of config sections, found {type(config).__name__}")
    metrics_path, report_path = layout.metrics, layout.report
    metrics = _read_json(metrics_path) if metrics_path.is_file() else {}
    report = _read_json(report_path) if report_path.is_file() else None
    for path, data in ((metrics_path, metrics), (report_path, report)):
        if data is not None and not isinstance(data, dict):
            raise CompareError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return {
        "path": run_dir,
        "name": run_dir.name,
        "experiment": str(config.get("name", MISSING)),
        "config": rundir.flatten(config),
        "metrics": metrics,
        "report": report,
    }


def differing_keys(configs: list[dict]) -> list[str]:
    """Dotted keys whose value is not the same in every config (a key absent somewhere differs), in
    the order they first appear; `name` is left out (it is the experiment column)."""
    keys = list(dict.fromkeys(key for config in configs for key in config))

    def value(run_config, key):
        return json.dumps(run_config[key], sort_keys=True, default=str) if key in run_config else "<absent>"

    return [key for key in keys if key != "name" and len({value(config, key) for config in configs}) > 1]


def _cell(value) -> str:
    if value is None:
        return "null"
    text = json.dumps(value, separators=(", ", ": ")) if isinstance(value, (list, dict)) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _duration(seconds) -> str:
    if not isinstance(seconds, (int, float)):
        return MISSING
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _number(value, pattern: str) -> str:
    return format(value, pattern) if isinstance(value, (int, float)) and not isinstance(value, bool) else MISSING


def markdown_table(runs: list[dict]) -> str:
    """The comparison table of `load_run` results (see the module docstring)."""
    keys = differing_keys([run["config"] for run in runs])
    top_ks = {run["report"].get("top_k") for run in runs if run["report"]}
    top_k_header = f"test top-{top_ks.pop()}" if len(top_ks) == 1 else "test top-k"
    headers = ["experiment", "run", *keys, "test accuracy", top_k_header, "epochs", "train time", "images/s"]
    rows = []
    for run in runs:
        metrics, report = run["metrics"], run["report"] or {}
        accuracy = (metrics.get("test") or {}).get("accuracy", report.get("accuracy"))
        top_k = _number(report.get("top_k_accuracy"), ".4f")
        if top_k != MISSING and len(top_ks) > 1:
            top_k += f" (k={report.get('top_k')})"
        epochs = metrics.get("epochs_completed")
        rows.append(
            [
                _cell(run["experiment"]),
                _cell(run["name"] if metrics else f"{run['name']} (unfinished)"),
                *[_cell(run["config"][key]) if key in run["config"] else MISSING for key in keys],
                _number(accuracy, ".4f"),
                top_k,
                _number(epochs, "d"),
                _duration(metrics.get("train_seconds")),
                _number(metrics.get("images_per_second"), ".0f"),
            ]
        )
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _labels(runs: list[dict]) -> list[str]:
    labels = [f"{run['experiment']}/{run['name']}" for run in runs]
    if len(set(labels)) < len(labels):  # same experiment and run name: tell them apart by their path
        labels = [str(run["path"]) for run in runs]
    return labels


def curves_png(runs: list[dict], out_png: os.PathLike) -> Path | None:
    """Validation accuracy and loss per epoch of every run that has a `history.csv`, as one PNG;
    None when no run has one."""
    from pipeline.evaluation import figures
    from pipeline.evaluation import report as evaluation_report

    series = {}
    for run, label in zip(runs, _labels(runs)):
        history_path = rundir.RunLayout(run["path"]).history
        if history_path.is_file():
            series[label] = evaluation_report.read_history(history_path)
    if not series:
        return None
    return figures.save_png(figures.runs_figure(series), out_png)


def compare_runs(run_dirs, out: os.PathLike | None = None) -> str:
    """The Markdown table comparing `run_dirs`; with `out` (a .md path) also writes it there and the
    validation curves next to it (same name, .png).

    Raises:
        CompareError: a run directory is missing or garbled (the message names the path).
    """
    runs = [load_run(path) for path in run_dirs]
    if not runs:
        raise CompareError("report: give at least one run directory")
    table = markdown_table(runs)
    if out is not None:
        write_outputs(runs, table, out)
    return table


def write_outputs(runs: list[dict], table: str, out: os.PathLike) -> list[Path]:
    """Writes `table` to `out` and the runs' validation curves to `out` with suffix .png (when a run
    has a history.csv); returns the paths written."""
    out = Path(out)
    if out.suffix.lower() == ".png":
        raise CompareError(f"--out {out}: give the Markdown file (e.g. report.md); the PNG is written next to it")
    fileio.atomic_write_text(out, table)
    png = curves_png(runs, out.with_suffix(".png"))
    return [out] + ([png] if png else [])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `report` command's arguments (for `python -m pipeline report`)."""
    parser.add_argument(
        "run_dirs",
        nargs="+",
        type=Path,
        metavar="RUN",
        help="run directories to compare (a study directory: its trials)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        metavar="FILE.md",
        help="also write the table to FILE.md and the validation curves to FILE.png",
    )


def run(args: argparse.Namespace) -> int:
    """Prints the table (and writes --out); returns the exit code."""
    runs = [load_run(path) for path in rundir.expand_study_dirs(args.run_dirs)]
    if not runs:
        raise CompareError(f"{', '.join(map(str, args.run_dirs))}: the study has no trial with a config.yaml yet")
    table = markdown_table(runs)
    print(table, end="")
    if args.out is not None:
        print(f"written: {', '.join(map(str, write_outputs(runs, table, args.out)))}")
    return 0
