"""Progress reporting for long work: a rich bar on a terminal, a few log lines otherwise,
nothing when disabled. Library functions take ``progress: bool`` and use :func:`bar`."""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Iterator


class _Bar:
    def __init__(self, total: int, desc: str, enabled: bool):
        self.total, self.desc, self.enabled = max(1, total), desc, enabled
        self.done = 0
        self.status = ""
        self._rich = None
        self._task = None
        self._t0 = time.monotonic()
        self._next_log = 0.0

    def __enter__(self) -> "_Bar":
        if self.enabled and sys.stderr.isatty():
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self._rich = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                                  TextColumn("{task.fields[status]}"), transient=False)
            self._rich.start()
            self._task = self._rich.add_task(self.desc, total=self.total, status="")
        return self

    def advance(self, n: int = 1, status: str | None = None) -> None:
        self.done += n
        if status is not None:
            self.status = status
        if self._rich is not None:
            self._rich.update(self._task, advance=n, status=self.status)
        elif self.enabled:
            frac = self.done / self.total
            if frac >= self._next_log or self.done >= self.total:
                elapsed = time.monotonic() - self._t0
                eta = elapsed / frac - elapsed if frac > 0 else 0.0
                print(f"{self.desc}: {self.done}/{self.total} ({elapsed:.0f}s, eta {eta:.0f}s) {self.status}",
                      file=sys.stderr, flush=True)
                self._next_log = frac + 0.1

    def __exit__(self, *exc) -> None:
        if self._rich is not None:
            self._rich.stop()


@contextlib.contextmanager
def bar(total: int, desc: str, enabled: bool = True) -> Iterator[_Bar]:
    with _Bar(total, desc, enabled) as b:
        yield b
