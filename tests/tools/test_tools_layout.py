"""The `data` tools package: the module protocol, import rules, and the progress bar's two modes."""

from __future__ import annotations

import argparse
import ast
import io
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import tools
from pipeline.core import errors
from pipeline.data import image_files
from pipeline.tools import common

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TOOLS_DIR = PROJECT_ROOT / "pipeline" / "tools"


def test_every_tool_module_follows_the_protocol():
    names = tools.available_tools()
    assert names[:5] == ["label", "check", "stats", "split", "gather"]
    for name in names:
        module = __import__(f"pipeline.tools.{name}", fromlist=["run"])
        assert isinstance(module.HELP, str) and module.HELP and "\n" not in module.HELP, name
        assert callable(module.add_arguments) and callable(module.run), name
        parser = argparse.ArgumentParser()
        module.add_arguments(parser)
        assert parser.format_usage() != argparse.ArgumentParser().format_usage(), name  # it added some


def test_data_error_is_a_user_error():
    assert issubclass(common.DataError, errors.UserError)
    assert tools.DataError is common.DataError


def test_a_tool_without_a_module_is_left_out(monkeypatch):
    monkeypatch.setattr(tools, "TOOLS", ("label", "no_such_tool", "check"))
    parser = argparse.ArgumentParser()
    tools.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["data", "check", "somewhere"])
    assert args.data_command == "check"
    with pytest.raises(SystemExit):
        parser.parse_args(["data", "no_such_tool"])


def _imported_modules(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    names = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return names


@pytest.mark.parametrize("path", sorted(TOOLS_DIR.glob("*.py")), ids=lambda p: p.name)
def test_tools_never_import_each_other(path):
    """Shared code lives in common; a tool importing another tool is how the old cycle began."""
    tool_names = {p.stem for p in TOOLS_DIR.glob("*.py")} - {"__init__", "common"}
    imported = [name for name in _imported_modules(path) if name.startswith("pipeline.tools.")]
    others = [name for name in imported if name.split(".")[2] in tool_names - {path.stem}]
    assert not others, f"{path.name} imports another tool: {others}"
    assert "pipeline.data_tools" not in " ".join(_imported_modules(path))


def _run_python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_parsing_data_arguments_imports_neither_tensorflow_nor_numpy():
    out = _run_python(
        "import sys\n"
        "from pipeline import cli\n"
        "cli._parser().parse_args(['data', 'stats', 'x', '--image-size', '8', '8'])\n"
        "print(sorted(m for m in ('tensorflow', 'keras', 'numpy') if m in sys.modules))\n"
    )
    assert out.strip() == "[]"


def test_main_imports_only_the_chosen_tool(tmp_path):
    (tmp_path / "pets" / "cats").mkdir(parents=True)
    (tmp_path / "pets" / "cats" / "a.png").write_bytes(b"names are listed, pixels are not read")
    out = _run_python(
        "import argparse, sys\n"
        "from pipeline import tools\n"
        f"code = tools.main(argparse.Namespace(data_command='label', root={str(tmp_path / 'pets')!r}, out=None))\n"
        "print(code, sorted(m for m in sys.modules if m.startswith('pipeline.tools.')))\n"
    )
    assert out.strip().splitlines()[-1] == "0 ['pipeline.tools.common', 'pipeline.tools.label']"
    lines = (tmp_path / "pets" / "labels.txt").read_text().splitlines()
    assert [line for line in lines if not line.startswith("#")] == ["cats/a.png 0"]


# --------------------------------------------------------------------------------------------------
# Progress bar
# --------------------------------------------------------------------------------------------------


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def states(text: str) -> list[str]:
    return [state for state in text.replace("\n", "\r").split("\r") if state.strip()]


def test_progress_off_a_terminal_draws_first_and_last_state_only():
    stream = io.StringIO()
    with image_files.progress_bar(5000, "checking images", stream=stream) as bar:
        for _ in range(5000):
            bar.update()
    drawn = states(stream.getvalue())
    assert len(drawn) == 2, drawn  # not one line per update, nor one per 0.1 s, in a log file
    assert drawn[0].startswith("checking images:   0%") and "0/5000" in drawn[0]
    assert drawn[-1].startswith("checking images: 100%") and "5000/5000" in drawn[-1]
    assert "file/s]" in drawn[-1] and "<00:00" in drawn[-1]  # rate and time left
    assert stream.getvalue().endswith("\n")


def test_progress_on_a_terminal_redraws_with_rate_and_time_left():
    stream = FakeTerminal()
    with image_files.progress_bar(4, "downloading", unit="URL", stream=stream) as bar:
        for _ in range(4):
            time.sleep(0.15)  # above tqdm's 0.1 s redraw interval
            bar.update()
    drawn = states(stream.getvalue())
    assert len(drawn) >= 5, drawn
    assert "2/4" in " ".join(drawn) and "URL/s]" in drawn[-1]
    assert any("<00:0" in state for state in drawn[1:-1])  # an estimate of the time left while running


@pytest.mark.parametrize("total, enabled", [(0, True), (10, False)])
def test_progress_disabled_or_empty_draws_nothing(total, enabled):
    stream = FakeTerminal()
    with image_files.progress_bar(total, "nothing", enabled=enabled, stream=stream) as bar:
        for _ in range(total):
            bar.update()
    assert stream.getvalue() == ""
