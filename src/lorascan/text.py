"""Small text helpers shared by every layer (no lorascan imports): attacker-controlled text made
safe to print, and names made safe to use as file names."""

from __future__ import annotations

import hashlib
import re
import reprlib
from typing import Any

SLUG_MAX = 40
QUOTE_MAX = 60  # characters of a value quoted in an error message


def _short_reprs() -> reprlib.Repr:
    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxtuple, r.maxdict, r.maxset = 2, 4, 4, 4, 4
    r.maxstring = r.maxother = r.maxlong = QUOTE_MAX
    return r


_SHORT = _short_reprs()


def short_repr(value: Any, limit: int = QUOTE_MAX) -> str:
    """A repr of ``value`` for an error message whose cost and length do not depend on the
    value's size: at most 4 items per container, 2 levels deep, strings and numbers cut
    (:mod:`reprlib`), then cut to ``limit`` characters. ``repr`` of a YAML alias bomb or a
    1 MB label would be as large as the value (issue 15)."""
    return printable(_SHORT.repr(value), limit)


def printable(text: Any, limit: int | None = None) -> str:
    """``text`` with every non-printable character (control characters, ESC sequences,
    bidirectional overrides, line breaks) shown as its Python escape (``\\x1b``, ``\\n``,
    ``\\u202e``), so a dataset column, trigger or metadata value cannot move the cursor, recolour
    the terminal or fake a second line. ``limit`` cuts the result to that many characters,
    ending in "…"."""
    s = "".join(ch if ch.isprintable() or ch == " " else repr(ch)[1:-1] for ch in str(text))
    if limit is not None and len(s) > limit:
        s = s[: max(0, limit - 1)] + "…"
    return s


def slug(name: str, max_len: int = SLUG_MAX) -> str:
    """A file-name-safe form of ``name`` (e.g. a base model id or path): runs of characters
    other than letters, digits, '.' and '-' become '_', no leading or trailing '_' or '.' (so
    never '..' alone or a hidden name); names longer than ``max_len`` keep their tail and an
    8-hex-digit hash of the whole name, so different long names stay different."""
    out = re.sub(r"[^A-Za-z0-9.-]+", "_", name).strip("_.") or "base"
    if len(out) > max_len:
        digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        out = f"{out[-(max_len - 9):].lstrip('_.')}-{digest}"
    return out
