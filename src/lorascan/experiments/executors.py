"""Where runs execute: one small interface, so a distributed engine can be plugged in later.

An executor has ``workers`` and ``map(fn, jobs)``, which calls ``fn(job)`` once per job and
yields the results in completion order (not input order). ``fn`` and the jobs must be
picklable for executors that leave the process. An exception raised by ``fn`` propagates from
the iterator; the sweep's ``fn`` records failures itself and does not raise.

- :class:`SerialExecutor`: in this process, one job after another.
- :class:`ProcessExecutor`: a pool of worker processes on this machine, started with the
  ``spawn`` context (forking a process that has loaded torch is unsafe), each limited to
  ``cores // workers`` torch threads. Workers exit by themselves when the parent process dies
  (a killed sweep leaves no training running behind it).

A distributed engine (Ray, Dask, a batch queue) implements the same two members; the run
folders' locks and atomic writes already make a run safe to execute anywhere the output
folder is shared.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Callable, Iterable, Iterator, Protocol, TypeVar

from lorascan.errors import DataError, UsageError

J = TypeVar("J")
R = TypeVar("R")


class Executor(Protocol):
    workers: int

    def map(self, fn: Callable[[J], R], jobs: Iterable[J]) -> Iterator[R]:
        """Call ``fn`` on every job; yield the results as they complete."""
        ...


def available_cores() -> int:
    """Cores this process may use (its CPU affinity, which follows cgroup/taskset limits)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class SerialExecutor:
    """Run jobs one by one in this process."""

    workers = 1

    def map(self, fn: Callable[[J], R], jobs: Iterable[J]) -> Iterator[R]:
        for job in jobs:
            yield fn(job)


def _watch_parent(parent: int) -> None:
    while True:
        if os.getppid() != parent:
            os._exit(3)  # the sweep was killed: stop, leaving the run incomplete
        time.sleep(0.5)


def _init_worker(threads: int, parent: int) -> None:
    """Limit each worker's threads before torch is imported, and die with the parent."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="watch-parent").start()


class ProcessExecutor:
    """Run jobs in ``workers`` spawned processes on this machine."""

    def __init__(self, workers: int, threads_per_worker: int | None = None, context: str = "spawn"):
        if workers < 1:
            raise UsageError(f"--workers must be >= 1, got {workers}")
        self.workers = workers
        self.threads = threads_per_worker or max(1, available_cores() // workers)
        self.context = context

    def map(self, fn: Callable[[J], R], jobs: Iterable[J]) -> Iterator[R]:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed
        from concurrent.futures.process import BrokenProcessPool

        jobs = list(jobs)
        if not jobs:
            return
        ctx = multiprocessing.get_context(self.context)
        pool = ProcessPoolExecutor(max_workers=min(self.workers, len(jobs)), mp_context=ctx,
                                   initializer=_init_worker, initargs=(self.threads, os.getpid()))
        finished = False
        try:
            futures = [pool.submit(fn, job) for job in jobs]
            for fut in as_completed(futures):
                try:
                    yield fut.result()
                except BrokenProcessPool:
                    raise DataError("a worker process died (killed, or out of memory?); the runs it had are "
                                    "incomplete: run the sweep again to resume") from None
            finished = True
        finally:
            if not finished:  # interrupted or failed: stop the running jobs instead of waiting hours
                _terminate(pool)
            pool.shutdown(wait=True, cancel_futures=True)


def _terminate(pool) -> None:
    """Stop a pool's workers now. ``ProcessPoolExecutor.terminate_workers`` exists from
    Python 3.14; before that the process table is private, hence the fallback."""
    if hasattr(pool, "terminate_workers"):
        pool.terminate_workers()
        return
    for proc in list(getattr(pool, "_processes", {}).values()):
        if proc.is_alive():
            proc.terminate()
