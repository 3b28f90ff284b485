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
MAX_LINES = 420  # "about 400"

# The bottom layer: importable without TensorFlow or Keras (config errors answer at once).
TF_FREE = ("pipeline.errors", "pipeline.schema", "pipeline.config", "pipeline.registry", "pipeline.experiment",
           "pipeline.rundir", "pipeline.fileio", "pipeline.folders", "pipeline.datasets", "pipeline.cli",
           "pipeline.tools", "models", "models.registry")


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
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
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
                cycles.append(stack[stack.index(other):] + [other])
            elif other not in state:
                visit(other, stack + [other])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(cycle) for cycle in cycles)


def test_models_never_import_the_config():
    files = module_files()
    for name, path in files.items():
        if name.startswith("models"):
            assert "pipeline.config" not in imports_of(name, path, set(files)), name


def test_modules_stay_readable():
    too_long = {name: len(path.read_text().splitlines()) for name, path in module_files().items()
                if len(path.read_text().splitlines()) > MAX_LINES}
    assert not too_long, f"modules over {MAX_LINES} lines: {too_long}"


def test_the_config_layer_imports_no_tensorflow():
    code = ("import sys\n" + "".join(f"import {name}\n" for name in TF_FREE) +
            "heavy = sorted(m for m in ('tensorflow', 'keras') if m in sys.modules)\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], cwd=PROJECT, check=True, timeout=60)


@pytest.mark.parametrize("args", [
    ["train", "{bad}"], ["train", "tiny", "--set", "model.name=tinny"], ["summary", "{bad}"],
    ["train", "tiny", "--print-config"], ["--help"],
])
def test_config_errors_help_and_print_config_do_not_import_tensorflow(tmp_path, args):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"base: {PROJECT / 'experiments' / 'tiny.yaml'}\ntrain: {{epoch: 3}}\n")
    code = ("import sys, runpy\n"
            f"sys.argv = ['pipeline'] + {[a.replace('{bad}', str(bad)) for a in args]!r}\n"
            "try:\n    runpy.run_module('pipeline', run_name='__main__')\n"
            "except SystemExit as exit:\n    code = exit.code\n"
            "print('TF' if 'tensorflow' in sys.modules else 'NO-TF', code)\n")
    completed = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True, timeout=60)
    assert completed.stdout.split()[-2] == "NO-TF", completed.stdout[-500:] + completed.stderr[-500:]
    if "{bad}" in args or "--set" in args:
        assert completed.stdout.split()[-1] == "2"
        assert "did you mean" in completed.stderr and "Traceback" not in completed.stderr
        assert "I0000" not in completed.stderr and "absl" not in completed.stderr
