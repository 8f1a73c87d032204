"""What every lorascan plot shares: labels safe to draw, settings scoped to lorascan's own
figures, and atomic, reproducible saving.

Labels come from adapters, batteries and triggers, so they are attacker-controlled: control
characters are shown escaped, long ones are cut, and mathtext is off (a ``$...$`` label would
otherwise be parsed, and can make ``savefig`` fail).

Settings are never changed globally (a program that imports lorascan keeps its own
matplotlib configuration): figures are created and saved inside :func:`plotting`, a
``matplotlib.rc_context`` with mathtext off and a fixed SVG hash salt (without one matplotlib
salts SVG element ids with a random UUID, so the same figure would give other bytes).
Figures are plain :class:`matplotlib.figure.Figure` objects, rendered by the backend of the
file format; pyplot is never imported.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator

from lorascan.errors import DataError
from lorascan.records import atomic_path

RC = {"text.parse_math": False, "svg.hashsalt": "lorascan"}


def plot_label(text: Any, limit: int = 48) -> str:
    """Printable characters only (others shown as escapes), at most ``limit`` characters."""
    s = "".join(ch if ch.isprintable() or ch == " " else repr(ch)[1:-1] for ch in str(text))
    return s if len(s) <= limit else s[: limit - 1] + "…"


@contextlib.contextmanager
def plotting() -> Iterator[None]:
    """lorascan's matplotlib settings (:data:`RC`) for the figures created and saved inside;
    matplotlib is imported here, on use."""
    import matplotlib

    with matplotlib.rc_context(RC):
        yield


def matplotlib_figure(**kwargs: Any):
    """A new Figure (create it, and save it, inside :func:`plotting`)."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def save_figure(fig: Any, path: str | os.PathLike) -> Path:
    """Write ``fig`` to ``path`` (format by suffix) through a temporary file and a rename; SVGs
    carry no date and, inside :func:`plotting`, no random ids, so the same figure gives the
    same bytes. The file's mode follows the umask."""
    path = Path(path)
    try:
        with atomic_path(path, make_parents=False) as tmp, plotting():
            fig.savefig(tmp, dpi=120, bbox_inches="tight", format=path.suffix.lstrip(".") or None,
                        metadata={"Date": None} if path.suffix == ".svg" else None)
    except ValueError as err:
        raise DataError(f"cannot write plot {path}: {err}") from None
    except DataError as err:
        raise DataError(f"cannot write plot {path}: {str(err).split(': ', 1)[-1]}") from None
    return path
