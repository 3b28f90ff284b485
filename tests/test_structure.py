"""The project's layout rules, checked: no import cycle among our modules (every import statement counts,
module level or inside a function), config-layer modules free of TensorFlow, models free of the config,
modules of a readable size, and config errors reported without importing TensorFlow."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent
PACKAGES = ("pipeline", "models")
MAX_LINES = 480  # "about 400" lines of code, as ruff formats them (one argument a line when a call wraps)

# The bottom layer: importable without TensorFlow or Keras (config errors answer at once).
TF_FREE = (
    "pipeline.core.errors",
    "pipeline.config.schema",
    "pipeline.config",
    "pipeline.core.registry",
    "pipeline.experiment",
    "pipeline.config.rundir",
    "pipeline.core.fileio",
    "pipeline.core.cpu_kernels",
    "pipeline.data.folders",
    "pipeline.data.datasets",
    "pipeline.cli",
    "pipeline.tools",
    "pipeline.tune.command",
    "pipeline.tune.report",
    "models",
    "models.registry",
)


def module_files() -> dict[str, Path]:
    files = {}
    for package in PACKAGES:
        for path in (PROJECT / package).rglob("*.py"):
            parts = path.relative_to(PROJECT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            files[name] = path
    return files


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Our modules that `name` imports anywhere in its file (`from a import b` counts `a.b` when it is a
    module, else `a`)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            candidates = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for candidate in candidates:
            while candidate and candidate not in known:
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name:
                found.add(candidate)
    return found


def test_no_import_cycles():
    files = module_files()
    graph = {name: imports_of(name, path, set(files)) for name, path in files.items()}
    # A package's __init__ importing its own submodules is the package, not a cycle partner.
    for name in graph:
        graph[name] = {other for other in graph[name] if not (name.startswith(other + ".") and other in PACKAGES)}
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        for other in sorted(graph[node]):
            if state.get(other) == "open":
                cycles.append(stack[stack.index(other) :] + [other])
            elif other not in state:
                visit(other, stack + [other])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(cycle) for cycle in cycles)


# The layers, bottom to top, and what each may import (besides itself). A layer is a sub-package of
# `pipeline` (or `models`); the modules directly in `pipeline/` (cli, the run driver, the experiment
# loader) form the top layer, which may import any other. `models/` may use only the shared base:
# `pipeline.core` (the error contract and the registry) and `pipeline.compat` (Keras internals).
ALLOWED = {
    "core": set(),
    "compat": {"core"},
    "config": {"core"},
    "models": {"core", "compat"},
    "data": {"core", "compat", "config"},
    "training": {"core", "compat", "config", "data", "models"},
    "distribute": {"core", "compat", "config"},
    "evaluation": {"core", "compat", "config", "data", "models", "training"},
    "serving": {"core", "compat", "config", "data", "models", "training", "evaluation"},
    "inspection": {"core", "compat", "config", "data", "models", "training"},
    "tools": {"core", "compat", "config", "data"},
    "tune": {"core", "config"},  # trials are `train` processes: the tuner never imports TensorFlow
    "audit": {"core", "compat", "config", "data", "models", "training", "evaluation"},
}
TOP = "top"


def layer_of(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "models":
        return "models"
    if len(parts) == 1 or f"pipeline.{parts[1]}" not in {f"pipeline.{name}" for name in ALLOWED}:
        return TOP
    return parts[1]


def test_every_package_is_a_known_layer():
    packages = {path.name for path in (PROJECT / "pipeline").iterdir() if (path / "__init__.py").exists()}
    assert packages == set(ALLOWED) - {"models"}, "a new sub-package needs its row in ALLOWED"


def test_imports_flow_down_the_layers():
    files = module_files()
    wrong = []
    for name, path in sorted(files.items()):
        source = layer_of(name)
        for other in imports_of(name, path, set(files)):
            target = layer_of(other)
            if target != source and source != TOP and target not in ALLOWED[source]:
                wrong.append(f"{name} ({source}) -> {other} ({target})")
    assert not wrong, "imports against the layer order:\n" + "\n".join(wrong)


# Layers whose functions take keyword arguments or config sections, never the whole config: the one
# mapping from a config is a `from_config` constructor (e.g. `DataOptions.from_config`).
CONFIG_FREE_LAYERS = ("data", "training", "distribute", "evaluation", "compat", "core")
# Commands below the CLI that load a run's own config.yaml (their edge): the evaluate command.
COMMAND_EDGES = {"pipeline.evaluation.evaluate._evaluate_run"}


def test_below_the_driver_no_function_takes_the_whole_config():
    wrong = []
    for name, path in sorted(module_files().items()):
        if layer_of(name) not in CONFIG_FREE_LAYERS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name != "from_config":
                arguments = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
                if (
                    any(argument.arg == "config" for argument in arguments)
                    and f"{name}.{node.name}" not in COMMAND_EDGES
                ):
                    wrong.append(f"{name}.{node.name}")
    assert not wrong, "these take the whole config; pass sections or keyword arguments: " + ", ".join(wrong)


def test_models_never_import_the_config():
    files = module_files()
    for name, path in files.items():
        if name.startswith("models"):
            imported = imports_of(name, path, set(files))
            assert "pipeline.config" not in imported, name
            assert all(other.startswith(("models", "pipeline.core", "pipeline.compat")) for other in imported), name


def test_modules_stay_readable():
    too_long = {
        name: len(path.read_text().splitlines())
        for name, path in module_files().items()
        if len(path.read_text().splitlines()) > MAX_LINES
    }
    assert not too_long, f"modules over {MAX_LINES} lines: {too_long}"


def test_the_config_layer_imports_no_tensorflow():
    code = (
        "import sys\n"
        + "".join(f"import {name}\n" for name in TF_FREE)
        + "heavy = sorted(m for m in ('tensorflow', 'keras') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=PROJECT, check=True, timeout=60)


@pytest.mark.parametrize(
    "args",
    [
        ["train", "{bad}"],
        ["train", "tiny", "--set", "model.name=tinny"],
        ["summary", "{bad}"],
        ["tune", "{bad}"],
        ["train", "tiny", "--print-config"],
        ["--help"],
    ],
)
def test_config_errors_help_and_print_config_do_not_import_tensorflow(tmp_path, args):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"base: {PROJECT / 'experiments' / 'tiny.yaml'}\ntrain: {{epoch: 3}}\n")
    code = (
        "import sys, runpy\n"
        f"sys.argv = ['pipeline'] + {[a.replace('{bad}', str(bad)) for a in args]!r}\n"
        "try:\n    runpy.run_module('pipeline', run_name='__main__')\n"
        "except SystemExit as exit:\n    code = exit.code\n"
        "print('TF' if 'tensorflow' in sys.modules else 'NO-TF', code)\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True, timeout=60)
    assert completed.stdout.split()[-2] == "NO-TF", completed.stdout[-500:] + completed.stderr[-500:]
    if "{bad}" in args or "--set" in args:
        assert completed.stdout.split()[-1] == "2"
        assert "did you mean" in completed.stderr and "Traceback" not in completed.stderr
        assert "I0000" not in completed.stderr and "absl" not in completed.stderr
