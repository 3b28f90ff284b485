"""Command-line pieces shared by the commands: the spelling of config overrides, and argparse types for
numeric flags (a bad value is reported by argparse: one line naming the flag, exit code 2)."""

from __future__ import annotations

import argparse


def add_overrides(parser: argparse.ArgumentParser, help_text: str) -> None:
    """Adds `--set KEY=VALUE` (repeatable) as `args.overrides`, a list of str for `loader.apply_overrides`."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help_text)


def int_at_least(low: int, high: int | None = None):
    """An argparse type: an integer in [low, high] (high None: no upper bound)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer; received {text!r}") from None
        if value < low or (high is not None and value > high):
            allowed = f"{low}..{high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"must be {allowed}; received {value}")
        return value

    return parse
