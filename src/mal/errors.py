"""Error types that decide the exit code of a `mal` job (the job contract in docs/ARCHITECTURE.md).

Raise a `UserError` (or a subclass) for anything the user can fix: a wrong spec key or value, a bad data file,
a checkpoint of the wrong kind. The CLI turns it into exit code 2 and one line on stderr. Everything else is a
bug or an infrastructure fault and exits 1.
"""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix; the message is one sentence naming the file/key/value and the remedy."""

    exit_code = 2


class SpecError(UserError):
    """The spec file or a command-line override is wrong."""


class DataError(UserError):
    """A dataset, image, archive or remote source is wrong or unreachable."""


class CheckpointError(UserError):
    """A checkpoint or pretrained weight file cannot be used."""


def yaml_problem(exc: Exception) -> str:
    """Where and what a PyYAML error is, on one line ("line 2, column 1: expected ',' or ']'"); PyYAML's own
    message spans several lines with a caret drawing, which would break the one-line error contract."""
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "unknown position"
    problem = " ".join(str(getattr(exc, "problem", None) or type(exc).__name__).split())
    return f"{where}: {problem}"
