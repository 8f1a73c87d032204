"""Errors that end a command with a one-line message and an exit code.

Exit codes: 2 for usage errors (bad flags, unknown names, invalid values), 1 for data errors
(missing or malformed files, empty data, models that do not fit).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from lorascan.text import printable

MESSAGE_MAX = 1000  # characters: an error is one terminal line or a few, never a quoted file


class LorascanError(Exception):
    """A failure the user can act on; ``str(err)`` is the one-line message. Messages quote
    attacker-controlled text (column names, metadata values, triggers), so whitespace runs are
    collapsed to one space and any other non-printable character (ESC sequences, bidi
    overrides) is shown escaped (:func:`lorascan.text.printable`), and the message is cut to
    ``MESSAGE_MAX`` characters (callers quote values with :func:`lorascan.text.short_repr`; the
    cut is the backstop for one that did not, e.g. a 1.2 MB label)."""

    exit_code = 1

    def __init__(self, message: str):
        text = str(message)
        if len(text) > 4 * MESSAGE_MAX:  # escaping can only lengthen; cut before the work
            text = text[: 4 * MESSAGE_MAX]
        super().__init__(printable(" ".join(text.split()), MESSAGE_MAX))


class UsageError(LorascanError):
    """The command was asked for something it cannot do (exit code 2)."""

    exit_code = 2


class DataError(LorascanError):
    """The input data or files are missing, malformed or unusable (exit code 1)."""

    exit_code = 1


@contextmanager
def reading(what: str, path: object) -> Iterator[None]:
    """Turn the OS errors of reading ``path`` into one-line DataErrors: "<what> not found:
    <path>" and "cannot read <what> <path>: <reason>". Callers handle their own format errors
    (and any OSError they word differently) inside the block."""
    try:
        yield
    except FileNotFoundError:
        raise DataError(f"{what} not found: {path}") from None
    except OSError as err:
        raise DataError(f"cannot read {what} {path}: {err.strerror or err}") from None
