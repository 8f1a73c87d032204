"""Reading the JSON files the detect layer gets from others (adapter configs, ``lorascan.json``
manifests, labels files, profiles, cached probe records) as untrusted input.

Unlike a plain ``json.load``: the file is read up to a size cap (a multi-GB "config" does not
fill memory), nesting deep enough to exhaust the parser's recursion (``[[[[...``) is a
:class:`~lorascan.errors.DataError` rather than a ``RecursionError``, and the non-standard
constants ``NaN``/``Infinity``, which Python's parser accepts and no lorascan writer emits
(they are stored as null), are refused, so a profile cannot carry a NaN threshold.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lorascan.errors import DataError, reading

MAX_JSON_BYTES = 16 * 2**20  # far above any adapter config, manifest or probe record
MAX_PROFILE_BYTES = 64 * 2**20  # profiles carry ROC points of every feature


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def loads_untrusted(text: str | bytes, where: str) -> Any:
    """Parse JSON text; a one-line DataError for malformed, NaN-carrying or too deeply
    nested input."""
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise DataError(f"{where} is not usable JSON: nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as err:  # JSONDecodeError is a ValueError
        raise DataError(f"{where} is not valid JSON: {' '.join(str(err).split())[:160]}") from None


def _read_at_most(fh: Any, limit: int) -> bytes:
    """Up to ``limit`` bytes, in chunks (``read(limit)`` would allocate ``limit`` bytes at once)."""
    chunks, got = [], 0
    while got < limit:
        chunk = fh.read(min(1 << 20, limit - got))
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_json_untrusted(path: str | os.PathLike, what: str = "record", max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Read and parse a JSON file of at most ``max_bytes`` bytes (see the module docstring).
    Messages match :func:`lorascan.records.read_json`: "<what> not found: <path>", ..."""
    path = Path(path)
    with reading(what, path):
        try:
            with open(path, "rb") as fh:
                blob = _read_at_most(fh, max_bytes + 1)
        except IsADirectoryError:
            raise DataError(f"{what} {path} is a folder, not a JSON file") from None
    if len(blob) > max_bytes:
        raise DataError(f"{what} {path} is larger than {max_bytes} bytes; refusing to parse it")
    return loads_untrusted(blob, f"{what} {path}")
