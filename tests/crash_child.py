"""Run the lorascan CLI and SIGKILL this process at its N-th file-system write, for the crash
tests (tests/test_crash_safety.py): ``python -m tests.crash_child N COUNT_FILE ARGV...``.

A write event is any call that changes the file system: os.open/open for writing, mkdir,
replace/rename, unlink/rmdir, rmtree, fsync. With N = 0 nothing is killed and the number of
events is written to COUNT_FILE at exit, so a test can pick kill points inside the run. The
kill is SIGKILL: no handler, finally block or atexit hook runs, as when the power goes."""

from __future__ import annotations

import builtins
import io
import os
import shutil
import signal
import sys

EVENTS = {"n": 0}


def _event() -> None:
    EVENTS["n"] += 1
    if KILL_AT and EVENTS["n"] == KILL_AT:
        os.kill(os.getpid(), signal.SIGKILL)


def _wrap(fn, writes=lambda *a, **k: True):
    def wrapper(*args, **kwargs):
        if writes(*args, **kwargs):
            _event()
        return fn(*args, **kwargs)
    return wrapper


def _open_writes(file, mode="r", *args, **kwargs) -> bool:
    return isinstance(mode, str) and any(c in mode for c in "wax+")


def _os_open_writes(path, flags, *args, **kwargs) -> bool:
    return bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))


def install() -> None:
    builtins.open = io.open = _wrap(builtins.open, _open_writes)
    os.open = _wrap(os.open, _os_open_writes)
    for name in ("mkdir", "replace", "rename", "unlink", "remove", "rmdir", "fsync"):
        setattr(os, name, _wrap(getattr(os, name)))
    shutil.rmtree = _wrap(shutil.rmtree)


if __name__ == "__main__":
    KILL_AT = int(sys.argv[1])
    count_file = sys.argv[2]
    install()
    from lorascan.cli.main import main

    code = main(sys.argv[3:])
    with io.FileIO(count_file, "w") as fh:  # FileIO: not counted, not patched
        fh.write(str(EVENTS["n"]).encode())
    sys.exit(code)
else:
    KILL_AT = 0
