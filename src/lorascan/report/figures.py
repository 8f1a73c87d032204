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
import secrets
from pathlib import Path
from typing import Any, Iterator

from lorascan.errors import DataError

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


def _temp_file(path: Path) -> Path:
    """A new empty hidden sibling of ``path`` created with mode 0666 less the umask (as any
    file the user writes; ``tempfile.mkstemp`` would give 0600)."""
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp{path.suffix or '.png'}"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")


def save_figure(fig: Any, path: str | os.PathLike) -> Path:
    """Write ``fig`` to ``path`` (format by suffix) through a temporary file and a rename; SVGs
    carry no date and, inside :func:`plotting`, no random ids, so the same figure gives the
    same bytes. The file's mode follows the umask."""
    path = Path(path)
    try:
        tmp = _temp_file(path)
    except OSError as err:
        raise DataError(f"cannot write plot {path}: {err.strerror or err}") from None
    try:
        with plotting():
            fig.savefig(tmp, dpi=120, bbox_inches="tight", metadata={"Date": None} if path.suffix == ".svg" else None)
        os.replace(tmp, path)
    except (OSError, ValueError) as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise DataError(f"cannot write plot {path}: {err}") from None
    return path
