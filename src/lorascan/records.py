"""Versioned JSON records written atomically.

Every record (poison manifest, evaluation, probe, scan report) carries ``schema_version``,
``kind`` and ``lorascan_version``; JSON is written with sorted keys to a temporary file in the
same folder and renamed into place, so a reader never sees half a file. Output folders are
built the same way: in a temporary sibling, renamed when complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from lorascan import __version__
from lorascan.errors import DataError, UsageError, reading

SCHEMA_VERSION = 1


def record_header(kind: str) -> dict[str, Any]:
    """The fields every record starts with."""
    return {"schema_version": SCHEMA_VERSION, "kind": kind, "lorascan_version": __version__}


def _clean(obj: Any) -> Any:
    """JSON has no NaN/inf: store them as null rather than emitting invalid JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def dumps(obj: Any) -> str:
    return json.dumps(_clean(obj), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _temp_sibling(path: Path, suffix: str, make: Callable[[Path], Any]) -> tuple[Path, Any]:
    """Create a new hidden sibling of ``path`` with ``make`` (which must fail if it exists).

    Unlike ``tempfile.mkstemp``/``mkdtemp`` (modes 0600/0700) this keeps the modes that
    ``open``/``mkdir`` give under the user's umask, so outputs are as readable as any file."""
    for _ in range(100):
        candidate = path.parent / f".{path.name}.{secrets.token_hex(4)}{suffix}"
        try:
            return candidate, make(candidate)
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write text to ``path`` through a temporary file and a rename; any OS failure (a missing
    permission, a full disk, a folder in the way) is a one-line DataError."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp, fd = _temp_sibling(path, ".tmp", lambda p: os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as err:
        raise DataError(f"cannot write {path}: {err.strerror or err}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise DataError(f"cannot write {path}: {err.strerror or err}") from None
        raise
    return path


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    return write_text_atomic(path, dumps(obj))


def read_json(path: str | os.PathLike, what: str = "record", max_bytes: int | None = None) -> Any:
    """Read a JSON file; a DataError (not a traceback) when it is missing, unreadable (a
    folder, no permission), larger than ``max_bytes``, nested too deeply or malformed."""
    path = Path(path)
    with reading(what, path):
        with open(path, "rb") as fh:
            raw = fh.read() if max_bytes is None else fh.read(max_bytes + 1)
    if max_bytes is not None and len(raw) > max_bytes:
        raise DataError(f"{what} {path} is larger than {max_bytes} bytes; refusing to read it")
    try:
        return json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{what} {path} is not valid JSON: {err}") from None
    except RecursionError:
        raise DataError(f"{what} {path} is not valid JSON: nested too deeply") from None


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# Files that mark a folder as written by lorascan: a --force may replace such a folder (or an
# empty one), never another. MARKER is put into every folder written through atomic_dir.
MARKER = ".lorascan"
LORASCAN_FILES = (MARKER, "manifest.json", "lorascan.json", "adapter_config.json", "run.json", "eval.json",
                  "status.json")


def _related(out: Path, inputs: Iterable[str | os.PathLike]) -> Path | None:
    """The first input that ``out`` equals, lies inside or contains (resolved paths)."""
    where = out.resolve()
    for inp in inputs:
        other = Path(inp).expanduser().resolve()
        if where == other or other in where.parents or where in other.parents:
            return Path(inp)
    return None


def check_output_dir(out: str | os.PathLike, force: bool, inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """Refuse an ``out`` that is a file, that is, holds or lies inside one of ``inputs``, or
    that is a non-empty folder unless ``force``. Even with ``force`` only an empty folder or
    one lorascan wrote (it holds one of ``LORASCAN_FILES``) is replaced, never the working
    folder, one of its parents or the home folder."""
    out = Path(out)
    try:
        if out.exists() and not out.is_dir():
            raise UsageError(f"--out {out} exists and is not a folder")
        inp = _related(out, inputs)
        if inp is not None:
            raise UsageError(f"--out {out} is, contains or lies inside the input {inp}; choose another output folder")
        if not (out.is_dir() and any(out.iterdir())):
            return out
        if not force:
            raise UsageError(f"--out {out} is not empty; pass --force to replace it")
        where = out.resolve()
        cwd = Path.cwd().resolve()
        if where == cwd or where in cwd.parents or where == Path.home().resolve():
            raise UsageError(f"--out {out} is the working folder, one of its parents or the home folder; "
                             "refusing to replace it even with --force")
        if not any((out / name).is_file() for name in LORASCAN_FILES):
            raise UsageError(f"--out {out} holds files lorascan did not write; refusing to replace it even with "
                             "--force (empty it or choose another folder)")
    except OSError as err:
        raise DataError(f"cannot use --out {out}: {err.strerror or err}") from None
    return out


@contextlib.contextmanager
def atomic_dir(out: str | os.PathLike, force: bool = False,
               inputs: Iterable[str | os.PathLike] = ()) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; on success it replaces ``out``.

    ``out`` is checked first (:func:`check_output_dir` with ``force`` and ``inputs``). The
    folder gets a ``.lorascan`` marker, so a later ``--force`` knows lorascan wrote it. On any
    failure the temporary folder is removed and ``out`` is left as it was.
    """
    out = check_output_dir(out, force, inputs)
    parent = out.parent if str(out.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp, _ = _temp_sibling(parent / out.name, ".partial", os.mkdir)
    except OSError as err:
        raise DataError(f"cannot write to {parent}: {err.strerror}") from None
    try:
        (tmp / MARKER).write_text(f"written by lorascan {__version__}\n", encoding="utf-8")
        yield tmp
        _commit(tmp, out, parent)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, OSError):  # disk full, permissions, ...: a one-line data error
            raise DataError(f"cannot write {out}: {err.strerror or err}") from None
        raise


def _commit(tmp: Path, out: Path, parent: Path) -> None:
    """Rename the finished ``tmp`` to ``out``. An existing ``out`` is moved aside first and put
    back if the rename fails, so ``out`` ends as either the old folder or the new one."""
    old = None
    try:
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=parent))
            os.replace(out, old / "d")
        os.replace(tmp, out)
    except BaseException:
        if old is not None and (old / "d").exists():
            os.replace(old / "d", out)  # if this fails too, the old folder stays in `old`
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
