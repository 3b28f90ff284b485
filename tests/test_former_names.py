"""Scripts written against the flat layout of earlier releases keep working: each former module name is
the module that now holds its code (pipeline.FORMER_MODULES)."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pipeline

PROJECT = Path(__file__).resolve().parent.parent


def test_every_former_name_is_its_new_module():
    for former, current in pipeline.FORMER_MODULES.items():
        assert (PROJECT / (current.replace(".", "/") + ".py")).is_file(), current
        assert not (PROJECT / "pipeline" / f"{former}.py").exists(), f"{former} is a module again: drop its alias"


def test_former_imports_in_a_fresh_process():
    code = (
        "from pipeline import datasets, train, evaluate\n"
        "import pipeline.image_files as image_files\n"
        "from pipeline.splits import Splits\n"
        "import pipeline.data.image_files, pipeline.data.splits, pipeline.data.datasets\n"
        "assert image_files is pipeline.data.image_files and Splits is pipeline.data.splits.Splits\n"
        "assert datasets is pipeline.data.datasets and train.__name__ == 'pipeline.run'\n"
        "assert callable(evaluate.load_run_config)\n"
        "print('ok')\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True, timeout=120)
    assert completed.stdout.strip() == "ok", completed.stderr[-2000:]


def test_an_unknown_name_is_still_an_error():
    try:
        importlib.import_module("pipeline.no_such_module")
    except ModuleNotFoundError as error:
        assert "pipeline.no_such_module" in str(error)
    else:
        raise AssertionError("pipeline.no_such_module imported")
