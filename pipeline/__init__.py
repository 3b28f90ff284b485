"""A TensorFlow/Keras image-classification training pipeline driven by YAML experiments.

The layers are sub-packages (README "Layout"). Scripts written against the flat layout of earlier
releases (`from pipeline import train, evaluate, datasets`, `import pipeline.decode`) keep working: each
former module name resolves to the module that now holds its code (`FORMER_MODULES`).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

# former flat module name -> its module now
FORMER_MODULES = {
    "errors": "pipeline.core.errors",
    "registry": "pipeline.core.registry",
    "fileio": "pipeline.core.fileio",
    "schema": "pipeline.config.schema",
    "rundir": "pipeline.config.rundir",
    "datasets": "pipeline.data.datasets",
    "folders": "pipeline.data.folders",
    "tfrecords": "pipeline.data.records",
    "tfrecord_writer": "pipeline.data.record_writer",
    "image_files": "pipeline.data.image_files",
    "decode": "pipeline.data.decode",
    "transform": "pipeline.data.transform",
    "preprocessing": "pipeline.data.image_ops",
    "augment": "pipeline.data.batch_augment",
    "input_pipeline": "pipeline.data.input_pipeline",
    "splits": "pipeline.data.splits",
    "class_balance": "pipeline.data.class_balance",
    "modeling": "pipeline.training.model_setup",
    "optim": "pipeline.training.optimizers",
    "phases": "pipeline.training.phases",
    "features": "pipeline.training.feature_cache",
    "callbacks": "pipeline.training.callbacks",
    "ema": "pipeline.training.ema",
    "workers": "pipeline.distribute.workers",
    "launch": "pipeline.distribute.launch",
    "evaluate": "pipeline.evaluation.evaluate",
    "evaluation_report": "pipeline.evaluation.report",
    "tta": "pipeline.evaluation.tta",
    "figures": "pipeline.evaluation.figures",
    "tensorboard_logging": "pipeline.evaluation.tensorboard_logging",
    "compare_runs": "pipeline.evaluation.compare_runs",
    "monitoring": "pipeline.evaluation.monitoring",
    "export": "pipeline.serving.export",
    "predict": "pipeline.serving.predict",
    "summary": "pipeline.inspection.summary",
    "model_stats": "pipeline.inspection.model_stats",
    "layer_sizes": "pipeline.inspection.layer_sizes",
    "train": "pipeline.run",
}


def __getattr__(name: str):
    """`from pipeline import <former module>` (PEP 562); the module is imported on first use."""
    if name in FORMER_MODULES:
        return importlib.import_module(FORMER_MODULES[name])
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")


class _FormerModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """`import pipeline.<former module>` and `from pipeline.<former module> import x`: the same module
    object as its new name (one module, so its state and classes are shared)."""

    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.partition(".")
        if package == "pipeline" and name in FORMER_MODULES:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return importlib.import_module(FORMER_MODULES[spec.name.partition(".")[2]])

    def exec_module(self, module):
        pass  # already executed under its new name


if not any(isinstance(finder, _FormerModuleFinder) for finder in sys.meta_path):
    sys.meta_path.append(_FormerModuleFinder())
