"""Scripts written against the flat layout of earlier releases keep working: each former module name is
the module that now holds its code (pipeline.FORMER_MODULES)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pipeline

PROJECT = Path(__file__).resolve().parent.parent


def test_every_former_name_is_its_new_module():
    for former, current in pipeline.FORMER_MODULES.items():
        assert (PROJECT / (current.replace(".", "/") + ".py")).is_file(), current
        assert not (PROJECT / "pipeline" / f"{former}.py").exists(), f"{former} is a module again: drop its alias"


def test_former_imports():
    from pipeline import datasets, evaluate, train  # noqa: I001  (the former flat names)
    import pipeline.image_files as image_files
    from pipeline.splits import Splits

    import pipeline.data.datasets
    import pipeline.data.image_files
    import pipeline.data.splits

    assert image_files is pipeline.data.image_files and Splits is pipeline.data.splits.Splits
    assert datasets is pipeline.data.datasets and train.__name__ == "pipeline.run"
    assert callable(evaluate.load_run_config)


def test_an_unknown_name_is_still_an_error():
    try:
        importlib.import_module("pipeline.no_such_module")
    except ModuleNotFoundError as error:
        assert "pipeline.no_such_module" in str(error)
    else:
        raise AssertionError("pipeline.no_such_module imported")
