"""Errors that end a command with a one-line message and an exit code.

Exit codes: 2 for usage errors (bad flags, unknown names, invalid values), 1 for data errors
(missing or malformed files, empty data, models that do not fit).
"""

from __future__ import annotations

from lorascan.text import printable


class LorascanError(Exception):
    """A failure the user can act on; ``str(err)`` is the one-line message. Messages quote
    attacker-controlled text (column names, metadata values, triggers), so whitespace runs are
    collapsed to one space and any other non-printable character (ESC sequences, bidi
    overrides) is shown escaped (:func:`lorascan.text.printable`)."""

    exit_code = 1

    def __init__(self, message: str):
        super().__init__(printable(" ".join(str(message).split())))


class UsageError(LorascanError):
    """The command was asked for something it cannot do (exit code 2)."""

    exit_code = 2


class DataError(LorascanError):
    """The input data or files are missing, malformed or unusable (exit code 1)."""

    exit_code = 1
