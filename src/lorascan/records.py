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
import socket
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from lorascan import __version__
from lorascan.errors import DataError, UsageError, reading
from lorascan.text import printable

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


def _temp_sibling(path: Path, suffix: str, make: Callable[[Path], Any], tag: str = "") -> tuple[Path, Any]:
    """Create a new hidden sibling of ``path`` with ``make`` (which must fail if it exists).

    Unlike ``tempfile.mkstemp``/``mkdtemp`` (modes 0600/0700) this keeps the modes that
    ``open``/``mkdir`` give under the user's umask, so outputs are as readable as any file."""
    for _ in range(100):
        candidate = path.parent / f".{path.name}.{tag}{secrets.token_hex(4)}{suffix}"
        try:
            return candidate, make(candidate)
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, make_parents: bool = True) -> Iterator[Path]:
    """The one atomic writer: yield a new hidden temporary sibling of ``path`` (created empty,
    mode from the umask) for the caller to fill; on success it is renamed over ``path``, on any
    failure removed. OS failures are one-line DataErrors. ``make_parents``: create missing
    parent folders (records do; plots, which follow a record, do not)."""
    path = Path(path)
    try:
        if make_parents:
            path.parent.mkdir(parents=True, exist_ok=True)
        tmp, fd = _temp_sibling(path, ".tmp", lambda p: os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666),
                                tag=_writer_tag())
        os.close(fd)
    except OSError as err:
        raise DataError(f"cannot write {path}: {err.strerror or err}") from None
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise DataError(f"cannot write {path}: {err.strerror or err}") from None
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write text to ``path`` through a temporary file and a rename (:func:`atomic_path`); any
    OS failure (a missing permission, a full disk, a folder in the way) is a one-line DataError."""
    return write_bytes_atomic(path, text.encode("utf-8"))


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


# --force replaces a folder only when lorascan wrote it (issue 15): a folder written through
# atomic_dir holds MARKER, a JSON record of the kind of output and a listing of every file and
# folder lorascan put there. A folder without a valid marker, or holding anything the listing
# does not name (a user's notes next to a manifest.json), is never replaced. Looking like
# lorascan's output (a manifest.json, an adapter_config.json) proves nothing: a downloaded
# adapter looks the same.
MARKER = ".lorascan"
MARKER_KIND = "output-marker"
# A listing is one line per entry; 64 MiB covers ~500,000 entries (an adapter folder has 3,
# a poison folder 4). A bigger marker is not one lorascan wrote.
MARKER_MAX_BYTES = 64 << 20
FOREIGN_SHOWN = 3  # foreign entries named in a refusal


def _entries(folder: Path) -> Iterator[str]:
    """Every file, folder and link under ``folder`` (relative POSIX paths; links not followed)."""
    for root, dirs, files in os.walk(folder):
        rel = Path(root).relative_to(folder)
        for name in sorted(dirs) + sorted(files):
            yield (rel / name).as_posix()


def write_marker(folder: str | os.PathLike, kind: str) -> Path:
    """Record in ``folder``/MARKER that lorascan wrote ``folder`` as a ``kind`` output, with
    the listing of what it holds now (the marker itself excluded)."""
    folder = Path(folder)
    listing = sorted(e for e in _entries(folder) if e != MARKER)
    return write_json_atomic(folder / MARKER, {**record_header(MARKER_KIND), "output": kind, "files": listing,
                                               **_writer()})


def _writer() -> dict[str, Any]:
    """Who wrote the folder (provenance in the marker)."""
    return {"pid": os.getpid(), "host": socket.gethostname()}


def _writer_tag() -> str:
    """``<host hash>-<pid>-``: put into a temporary folder's name when it is created, so a
    folder left by a killed writer is known as such (:func:`recover`) with nothing written
    inside it first."""
    host = hashlib.sha256(socket.gethostname().encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{host}-{os.getpid()}-"


def read_marker(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The marker of ``folder`` when it is one lorascan wrote (right kind, a listing of
    strings), else None."""
    path = Path(folder) / MARKER
    try:
        if not path.is_file() or path.is_symlink():
            return None
        rec = read_json(path, "lorascan marker", max_bytes=MARKER_MAX_BYTES)
    except (DataError, OSError):
        return None
    if not isinstance(rec, dict) or rec.get("kind") != MARKER_KIND or not isinstance(rec.get("output"), str):
        return None
    files = rec.get("files")
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        return None
    return rec


def foreign_entries(folder: str | os.PathLike, limit: int = FOREIGN_SHOWN) -> list[str]:
    """Up to ``limit`` entries of ``folder`` that its marker does not list (every entry when
    there is no valid marker). Empty: lorascan wrote everything in ``folder``."""
    folder = Path(folder)
    marker = read_marker(folder)
    listed = set(marker["files"]) | {MARKER} if marker is not None else set()
    found = []
    for entry in _entries(folder):
        if entry not in listed:
            found.append(entry)
            if len(found) >= limit:
                break
    return found


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
    that is a non-empty folder unless ``force``. Even with ``force`` only a folder lorascan
    wrote and that holds nothing else (its marker lists every entry, see :data:`MARKER`) is
    replaced, never the working folder, one of its parents or the home folder. An ``out`` left
    missing by a process killed while it replaced ``out`` is put back first (:func:`recover`)."""
    out = Path(out)
    try:
        recover(out)
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
        foreign = foreign_entries(out, FOREIGN_SHOWN + 1)
        if foreign:
            shown = ", ".join(printable(f, 60) for f in foreign[:FOREIGN_SHOWN]) + (", ..." if len(foreign) > FOREIGN_SHOWN else "")
            why = "holds files lorascan did not write" if read_marker(out) else \
                "has no lorascan marker (.lorascan), so it holds files lorascan did not write"
            raise UsageError(f"--out {out} {why} ({shown}); refusing to replace it even with --force "
                             "(empty it or choose another folder)")
    except OSError as err:
        raise DataError(f"cannot use --out {out}: {err.strerror or err}") from None
    return out


def _siblings(out: Path, suffix: str) -> list[Path]:
    """The temporary siblings of ``out`` that :func:`atomic_dir` makes (``.<name>.*<suffix>``)."""
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        return []
    prefix = f".{out.name}."
    return sorted(p for p in parent.iterdir() if p.name.startswith(prefix) and p.name.endswith(suffix)
                  and p.is_dir() and not p.is_symlink())


def _pid_alive(pid: Any) -> bool:
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def recover(out: str | os.PathLike) -> None:
    """Repair what a killed :func:`atomic_dir` left beside ``out``: when ``out`` is missing and
    an old copy was moved aside to be replaced (``.<name>.*.old/d``), move it back (with
    ``out`` in place, the old copy was replaced: remove it); remove ``.<name>.*.partial``
    folders whose writer (named in the folder's name, on this host) is dead. Nothing else is
    touched."""
    out = Path(out)
    for old in reversed(_siblings(out, ".old")):
        if not (old / "d").is_dir():
            continue  # empty: a live writer is about to move ``out`` into it
        if not out.exists():
            os.replace(old / "d", out)
        shutil.rmtree(old, ignore_errors=True)  # ``out`` is in place: the old copy was replaced
    this_host = f".{out.name}.{_writer_tag().split('-')[0]}-"
    for tmp in _siblings(out, ".partial"):
        if not tmp.name.startswith(this_host):
            continue  # another host's writer (a shared file system): not ours to judge
        pid = tmp.name[len(this_host):].split("-")[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def remove_dead_temp_files(folder: str | os.PathLike) -> list[str]:
    """Remove the temporary files (:func:`atomic_path`, ``.<name>.<host>-<pid>-*.tmp``) that a
    killed writer on this host left in ``folder``; a live writer's are kept. Returns their names."""
    folder = Path(folder)
    host = _writer_tag().split("-")[0]
    removed = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        parts = p.name.split(".")
        if not (p.name.startswith(".") and p.name.endswith(".tmp") and p.is_file() and len(parts) >= 4):
            continue
        tag = parts[-2].split("-")
        if len(tag) >= 2 and tag[0] == host and tag[1].isdigit() and not _pid_alive(int(tag[1])):
            p.unlink(missing_ok=True)
            removed.append(p.name)
    return removed


@contextlib.contextmanager
def atomic_dir(out: str | os.PathLike, force: bool = False,
               inputs: Iterable[str | os.PathLike] = (), kind: str = "output") -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; on success it replaces ``out``.

    ``out`` is checked first (:func:`check_output_dir` with ``force`` and ``inputs``). The
    folder gets a :data:`MARKER` naming ``kind`` and listing what it holds when it is complete,
    so a later ``--force`` knows lorascan wrote it and nothing was added since. On any failure
    the temporary folder is removed and ``out`` is left as it was; a process killed here
    leaves at most a hidden sibling that the next call for ``out`` repairs (:func:`recover`).
    """
    out = check_output_dir(out, force, inputs)
    parent = out.parent if str(out.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp, _ = _temp_sibling(parent / out.name, ".partial", os.mkdir, tag=_writer_tag())
    except OSError as err:
        raise DataError(f"cannot write to {parent}: {err.strerror}") from None
    try:
        yield tmp
        write_marker(tmp, kind)
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
