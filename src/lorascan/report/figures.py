"""What every lorascan plot shares: labels safe to draw, and atomic, reproducible saving.

Labels come from adapters, batteries and triggers, so they are attacker-controlled: control
characters are shown escaped, long ones are cut, and mathtext is off (a ``$...$`` label would
otherwise be parsed, and can make ``savefig`` fail).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

from lorascan.errors import DataError


def plot_label(text: Any, limit: int = 48) -> str:
    """Printable characters only (others shown as escapes), at most ``limit`` characters."""
    s = "".join(ch if ch.isprintable() or ch == " " else repr(ch)[1:-1] for ch in str(text))
    return s if len(s) <= limit else s[: limit - 1] + "…"


def matplotlib_figure(**kwargs: Any):
    """A new Figure with the Agg backend and mathtext off (matplotlib imported here only)."""
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["text.parse_math"] = False
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def save_figure(fig: Any, path: str | os.PathLike) -> Path:
    """Write ``fig`` to ``path`` (format by suffix) through a temporary file and a rename; SVGs
    carry no date, so the same figure gives the same bytes."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix or ".png", dir=path.parent or ".")
        os.close(fd)
    except OSError as err:
        raise DataError(f"cannot write plot {path}: {err.strerror}") from None
    try:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", metadata={"Date": None} if path.suffix == ".svg" else None)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except (OSError, ValueError) as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise DataError(f"cannot write plot {path}: {err}") from None
    return path
