"""Dataset tools for folders of image files: `python -m pipeline data TOOL ...` (one module per tool).

    label  ROOT [--out labels.txt]             class folders -> `relative/path label` lines + classes.txt
    check  ROOT [--quarantine DIR] [--json]    decode every file; list (and optionally move away) bad ones
    stats  ROOT [--image-size H W]             class counts, per-channel mean/std, mean image (streaming)
    split  ROOT --val 0.1 --test 0.1           stratified train/val/test lists + classes.txt
    gather URLS.txt --out DIR                  download image URLs into class folders, skipping broken links
    audit  ROOT_OR_EXPERIMENT [--out DIR]      duplicates, leakage across splits, class conflicts, odd images

The lists written by `label` and `split` are what the `file_list` dataset reads (`dataset.lists` +
`dataset.classes`, paths relative to `dataset.root`). "Good" everywhere means what `image_files.check_image`
says: TensorFlow's decoder (the one training and serving use) reads it and it is not tiny. Every output
file is written atomically (temporary name, then rename): an interrupted command leaves the previous
file or none, never half of one.

A tool is a module `pipeline/tools/<name>.py` named in TOOLS that defines
    HELP: str                      one line, shown by `data --help`
    add_arguments(parser) -> None  its arguments (and options) on its argparse sub-parser
    run(args) -> int               does the work; returns the exit code; raises common.DataError
Importing a tool module must not import TensorFlow or numpy (they are imported inside the functions
that need them), so `--help` and argument errors stay instant. Shared helpers live in `common`; a tool
never imports another tool.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util

from pipeline.tools.common import DataError  # noqa: F401  (the CLI catches tools.DataError)

# The order of `data --help`. A name whose module does not exist (yet) is left out of the CLI.
TOOLS = ("label", "check", "stats", "split", "gather", "shard", "audit")


def available_tools() -> list[str]:
    """The names in TOOLS that have a module, in TOOLS order."""
    return [name for name in TOOLS if importlib.util.find_spec(f"{__name__}.{name}") is not None]


def add_parser(commands) -> None:
    """Adds `data TOOL ...` to the CLI's sub-commands, one sub-parser per available tool.

    Args:
        commands: the object `ArgumentParser.add_subparsers()` returned.
    """
    names = available_tools()
    data = commands.add_parser("data", help="dataset tools: " + ", ".join(names), description=__doc__.splitlines()[0])
    tools = data.add_subparsers(dest="data_command", required=True, metavar="TOOL")
    for name in names:
        module = importlib.import_module(f"{__name__}.{name}")
        module.add_arguments(tools.add_parser(name, help=module.HELP))


def main(args: argparse.Namespace) -> int:
    """Runs a parsed `data TOOL ...` command (importing only that tool) and returns its exit code.

    Raises:
        common.DataError: a user error (the CLI prints it and exits with code 2).
    """
    return importlib.import_module(f"{__name__}.{args.data_command}").run(args)
