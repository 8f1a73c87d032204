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

- :class:`~lorascan.experiments.ray_executor.RayExecutor`: one Ray task per job, on a local
  Ray or a cluster (``pip install 'lorascan[ray]'``; Ray is imported only when it is chosen).

Optional members, asked for with ``getattr`` so that the two above stay minimal:

- ``executor.share(value)`` -> a :class:`Shared` handle to put in every job instead of the
  value (Ray stores it once in its object store; locally the handle holds the value);
  workers call :func:`unshare` on it;
- ``job.needs_gpu``: the job asks for CUDA (a Ray task then requests a GPU);
- ``job.lost(reason)``: what to yield for a job whose worker died for good (killed, out of
  memory, node gone) after the executor's retries; without it the executor raises a
  DataError once the other jobs are done;
- ``executor.threads`` and ``executor.lock_timeout_s``: torch threads per job, and how long
  a job may wait for a run lock held by another process (None: as long as it takes).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any, Callable, Generic, Iterable, Iterator, Protocol, TypeVar

from lorascan.errors import DataError, UsageError

J = TypeVar("J")
R = TypeVar("R")
T = TypeVar("T")
EXECUTORS = ("local", "ray")


class Executor(Protocol):
    workers: int

    def map(self, fn: Callable[[J], R], jobs: Iterable[J]) -> Iterator[R]:
        """Call ``fn`` on every job; yield the results as they complete."""
        ...


class Shared(Generic[T]):
    """A value every job of a map needs (a dataset), handed over once per executor rather
    than once per job where the executor can (see :meth:`RayExecutor.share`). This base
    holds the value itself: it travels with each job, as any job field does."""

    def __init__(self, value: T):
        self._value = value

    def get(self) -> T:
        return self._value


def share(executor: Any, value: T) -> Shared[T]:
    """``value`` as the executor ships it to its workers."""
    make = getattr(executor, "share", None)
    return make(value) if make is not None else Shared(value)


def unshare(value: Any) -> Any:
    """In a worker: the value behind a :class:`Shared` handle; anything else as it is."""
    return value.get() if isinstance(value, Shared) else value


def make_executor(kind: str, workers: int = 1, ray_address: str | None = None, ray_cpus: float = 1.0,
                  ray_gpus: float = 0.0) -> Any:
    """The executor a command asked for: ``local`` (serial, or ``workers`` processes) or
    ``ray`` (a local Ray started here, or the cluster at ``ray_address``; connected now, so
    a missing Ray or an unreachable address fails before anything is written). Close it
    with :func:`close_executor`."""
    if kind not in EXECUTORS:
        raise UsageError(f"unknown executor {kind!r} (use {' or '.join(EXECUTORS)})")
    if workers < 1:
        raise UsageError(f"--workers must be >= 1, got {workers}")
    if kind == "local":
        if ray_address is not None:
            raise UsageError("--ray-address needs --executor ray")
        return SerialExecutor() if workers == 1 else ProcessExecutor(workers)
    if workers != 1:
        raise UsageError("--workers is for --executor local; on Ray the cluster's CPUs and --ray-cpus per task "
                         "decide how many run at once")
    from lorascan.experiments.ray_executor import RayExecutor

    return RayExecutor(address=ray_address, cpus_per_task=ray_cpus, gpus_per_task=ray_gpus)


def close_executor(executor: Any) -> None:
    """Release what an executor holds (a Ray connection it started); a no-op for the others."""
    close = getattr(executor, "close", None)
    if close is not None:
        close()


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
