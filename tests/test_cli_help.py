"""Every `mal` command explains itself (issue #20): each positional argument of each subcommand has help text,
and the README's "Commands" list names every command."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path

from mal.automl.cli import build_parser as automl_parser
from mal.cli import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"


def _walk(parser: argparse.ArgumentParser, name: str) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _walk(sub, f"{name} {sub_name}")


def _parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    # `mal automl` hands its arguments to a parser of its own (mal.automl.cli).
    return [*_walk(build_parser(), "mal"), *_walk(automl_parser(), "mal automl")]


def test_every_positional_argument_has_help():
    missing = [
        f"{name}: {action.dest}"
        for name, parser in _parsers()
        for action in parser._actions
        if not action.option_strings and (not action.help or action.help == argparse.SUPPRESS)
    ]
    assert not missing, missing


def test_the_readme_lists_every_command():
    text = README.read_text(encoding="utf-8")
    commands = text.split("## Commands", 1)[1].split("\n## ", 1)[0]
    leaves = [name for name, parser in _parsers()
              if not any(isinstance(action, argparse._SubParsersAction) for action in parser._actions)]
    listed = [name for name in leaves if not re.search(rf"^{re.escape(name)}\b", commands, re.MULTILINE)]
    assert not listed, f"missing from README.md's Commands: {listed}"
