"""The command-line spelling of config overrides, shared by every command that takes an experiment."""

from __future__ import annotations

import argparse


def add_overrides(parser: argparse.ArgumentParser, help_text: str) -> None:
    """Adds `--set KEY=VALUE` (repeatable) as `args.overrides`, a list of str for `loader.apply_overrides`."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help_text)
