"""One local Ray (2 CPUs) for every test module that needs one (issue 14), and the fault
injection those tests share.

:func:`local_ray` starts it on first use and returns the ``ray`` module; it stays up for the
rest of the session (Ray shuts it down at exit), so the modules that use it pay its start-up
(about 7 s on 2 cores) once. Workers import this package from the repository root.

:class:`KillOnce` wraps a job function so that the first attempt of one job kills its own
worker process mid-job (``os._exit``, the way the OOM killer or a lost node ends it), noting
it in a marker file; later attempts run normally. :func:`kill_when` SIGKILLs a command (a
sweep's driver) the moment a condition on disk holds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[2]


def local_ray() -> Any:
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, logging_level="warning",
                 runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    return ray


@dataclass(frozen=True)
class KillOnce:
    """``fn`` for every job; the job whose ``key(job)`` is ``victim`` dies on its first
    attempt when ``patch`` (a "module:function" the job calls part-way) is reached. Every
    attempt is appended to ``<marks>/attempts``; the kill leaves ``<marks>/killed``."""

    fn: Callable[[Any], Any]
    victim: str
    marks: str
    patch: str = "lorascan.evaluate.run:evaluate_adapter"

    def __call__(self, job: Any) -> Any:
        key = key_of(job)
        marks = Path(self.marks)
        with open(marks / "attempts", "a", encoding="utf-8") as fh:
            fh.write(f"{key}\n")
        if key == self.victim and not (marks / "killed").exists():
            import importlib

            module, name = self.patch.split(":")

            def die(*args: Any, **kwargs: Any) -> Any:
                (marks / "killed").write_text(str(os.getpid()), encoding="utf-8")
                os._exit(1)

            setattr(importlib.import_module(module), name, die)
        return self.fn(job)


def key_of(job: Any) -> str:
    """A sweep job's run id, a scan job's spec."""
    run = getattr(job, "run", None)
    return run.id if run is not None else job.spec


def attempts(marks: Path) -> list[str]:
    path = marks / "attempts"
    return path.read_text(encoding="utf-8").split() if path.exists() else []


class Wrapped:
    """An executor whose job function is wrapped (by :class:`KillOnce`); the jobs it was
    handed are kept in ``jobs``. Everything else is the inner executor's."""

    def __init__(self, inner: Any, wrap: Callable[[Callable], Callable]):
        self.inner, self.wrap, self.jobs = inner, wrap, []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def map(self, fn, jobs):
        jobs = list(jobs)
        self.jobs.extend(jobs)
        return self.inner.map(self.wrap(fn), jobs)


def kill_when(argv: list[str], done: Callable[[], bool], log: Path, timeout: float = 120.0) -> None:
    """Run ``argv`` (output to ``log``) and SIGKILL it as soon as ``done()`` is true (or when it
    exits by itself, or after ``timeout`` seconds)."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    with open(log, "wb") as fh:
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + timeout
        while not done() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
