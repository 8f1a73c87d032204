"""Writing results: JSON records to any destination, plots (:mod:`lorascan.report.plots`)."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from typing import Any

from lorascan.errors import DataError
from lorascan.records import dumps, write_text_atomic


def write_json_output(target: str | os.PathLike, record: Any) -> None:
    """Write a record to ``target``: ``-`` is stdout; an existing non-regular file (a
    character device such as /dev/null, a FIFO) is written directly, since a rename would
    replace the device node; anything else atomically (temporary file + rename)."""
    text = dumps(record)
    if str(target) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    path = Path(target)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as err:
        raise DataError(f"cannot write {path}: {err.strerror}") from None
    try:
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise DataError(f"cannot write {path}: it is a folder")
        if st is not None and not stat.S_ISREG(st.st_mode):
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text)
            return
        write_text_atomic(path, text)
    except OSError as err:
        raise DataError(f"cannot write {path}: {err.strerror or err}") from None
