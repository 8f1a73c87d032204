"""Ray as an executor (issue 14): each job one Ray task, on a local Ray or on a cluster.

``RayExecutor`` implements :class:`~lorascan.experiments.executors.Executor`, so a sweep
(``lorascan sweep run --executor ray``) and a batch scan (``lorascan scan DIR --out OUT
--executor ray``) write the same run folders and records as the local executors: a sweep
started on one executor can be continued on the other and reported either way. Ray is an
optional dependency (``pip install 'lorascan[ray]'``), imported only when this executor is
built.

- Resources: every task asks for ``cpus_per_task`` CPUs (Ray then sets ``OMP_NUM_THREADS``
  to that and the job limits torch to it) and ``gpus_per_task`` GPUs, at least one for a job
  whose ``needs_gpu`` is true (a run with ``quantize: 4bit``, a scan with ``--device cuda``).
  Ray hides GPUs from tasks that asked for none, so a run with ``device auto`` trains on the
  CPU unless GPUs were requested. A request no node of the cluster can meet is refused
  before any task starts (Ray would queue it forever).
- Shipping: ``fn`` is put in the object store once per map; a value wrapped by
  :meth:`RayExecutor.share` (the sweep's dataset) once per sweep; each task carries only its
  job (a run's parameters, paths) and fetches the shared value in its worker.
- Faults: a task whose worker dies (killed, out of memory, node lost) is retried
  ``max_retries`` times by Ray; after that the job is *lost*: the executor yields
  ``job.lost(reason)`` (a sweep run: state ``interrupted``; a scan: an error record, retried
  next time) and never a result. Nothing is recorded as done by the executor itself: a run is
  complete only when its worker wrote its ``eval.json`` (see ``rundir``). Interrupted on the
  driver (Ctrl-C, an error), the executor cancels its pending and running tasks (force: their
  workers are killed, their runs left incomplete and resumable). A driver that is killed
  takes its tasks with it: Ray ends the workers of a job whose driver is gone (seen within
  seconds on a local Ray). A driver killed with SIGKILL after starting its own local Ray
  leaves that Ray's two idle agent processes (``ray::DashboardAgent``,
  ``ray::RuntimeEnvAgent``) behind; they hold no runs.
- Paths: a task runs in the driver's working directory, so relative paths (``--out runs/x``,
  a grid's dataset file, an adapter list) mean the same on every node.

Filesystem assumption (what remains): the output folder, the working directory of the
driver and every local path a job names must be on storage that all nodes mount at the same
path, with atomic ``rename`` within a folder (records are written to a temporary file and
renamed) and ``flock`` locks that every node sees: NFSv4, or NFSv3 with the lock manager
(Linux maps ``flock`` to NFS byte-range locks), CephFS, GPFS, Lustre mounted with ``-o
flock``. The locks keep two attempts of one run from writing its folder at the same time.
Where locks are only node-local (Lustre ``localflock``, most FUSE object-store mounts), a
second attempt can start while the first still writes; the attempt token in the run's
``status.json`` still keeps the one that lost the run from recording it as complete, but its
files may have disturbed the other's, so use such storage for one sweep at a time and no
retries (``max_retries=0``). A run lock held by a process that cannot release it (a node that
vanished under NFSv3) makes a waiting task give up after ``lock_timeout_s``, leaving the run
for the next sweep rather than blocking a worker forever.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
from typing import Any, Callable, Iterable, Iterator, TypeVar

from lorascan.errors import DataError, UsageError
from lorascan.experiments.executors import Shared, available_cores

J = TypeVar("J")
R = TypeVar("R")
T = TypeVar("T")

INSTALL = "pip install 'lorascan[ray]'"
DEFAULT_RETRIES = 2
LOCK_TIMEOUT_S = 60.0
CONNECT_TIMEOUT_S = 5.0


def import_ray() -> Any:
    """The ``ray`` module, or a one-line UsageError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise UsageError(f"--executor ray needs Ray, which is not installed here: {INSTALL}") from None
    return ray


def host_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of ``HOST:PORT`` or ``ray://HOST:PORT``; None for ``auto`` and
    ``local``. Anything else is a UsageError."""
    if address in ("auto", "local"):
        return None
    rest = address[len("ray://"):] if address.startswith("ray://") else address
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--ray-address {address!r}: expected HOST:PORT, ray://HOST:PORT, auto or local")
    return host.strip("[]"), int(port)


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Fail fast on an address nothing listens on (``ray.init`` would retry for minutes), and
    on a Ray Client address (``ray://``) without the client's gRPC package."""
    target = host_port(address)
    if address.startswith("ray://") and importlib.util.find_spec("grpc") is None:
        raise UsageError(f"--ray-address {address}: ray:// needs Ray Client, which lorascan[ray] leaves out: "
                         "pip install 'ray[client]==2.60.0', or give the cluster's HOST:6379 from a node")
    if target is None:
        return
    try:
        socket.create_connection(target, timeout=timeout).close()
    except OSError as err:
        reason = err.strerror or str(err) or type(err).__name__
        raise DataError(f"cannot reach a Ray cluster at {address}: {reason}") from None


class RayShared(Shared[T]):
    """A value in Ray's object store: put once, fetched by each worker that needs it."""

    def __init__(self, ref: Any):  # noqa: D107 - no value kept: only the reference travels
        self._ref = ref

    def get(self) -> T:
        import ray

        return ray.get(self._ref)


def lorascan_task(fn: Callable[[Any], Any], job: Any, cwd: str) -> Any:
    """What a Ray worker runs: ``fn(job)`` in the driver's working directory."""
    if not os.path.isdir(cwd):
        raise DataError(f"the driver's working directory {cwd} does not exist on node {socket.gethostname()}: "
                        "start the driver from the shared storage")
    os.chdir(cwd)
    return fn(job)


class RayExecutor:
    """Run jobs as Ray tasks (module docstring). ``address`` None starts a local Ray with
    this machine's cores (``num_cpus`` to choose); a Ray already initialised in this process
    is used as it is (an ``address`` given is still checked to be reachable). :meth:`close` (or leaving a ``with`` block) shuts down only a Ray this
    executor started."""

    lock_timeout_s = LOCK_TIMEOUT_S

    def __init__(self, address: str | None = None, cpus_per_task: float = 1.0, gpus_per_task: float = 0.0,
                 max_retries: int = DEFAULT_RETRIES, num_cpus: int | None = None):
        if not cpus_per_task > 0:
            raise UsageError(f"--ray-cpus must be > 0, got {cpus_per_task}")
        if gpus_per_task < 0:
            raise UsageError(f"--ray-gpus must be >= 0, got {gpus_per_task}")
        if max_retries < 0:
            raise UsageError(f"max_retries must be >= 0, got {max_retries}")
        ray = import_ray()
        self.cpus, self.gpus, self.max_retries = float(cpus_per_task), float(gpus_per_task), max_retries
        self.threads = max(1, int(cpus_per_task))
        self.address = address or "local"
        self._owned = False
        check_reachable(self.address)  # also when Ray is up: a wrong address is refused, not ignored
        if ray.is_initialized():
            self.address = address or "this process's Ray"
        else:
            self._init(ray, num_cpus)
            self._owned = True
        cluster_cpus = float(ray.cluster_resources().get("CPU", 0.0))
        self.workers = max(1, int(cluster_cpus // self.cpus))
        self._remote = ray.remote(lorascan_task)

    def _init(self, ray: Any, num_cpus: int | None) -> None:
        local = self.address == "local"
        kwargs: dict[str, Any] = {"logging_level": logging.WARNING}
        if local:
            kwargs.update(num_cpus=num_cpus or available_cores(), include_dashboard=False)
        try:
            ray.init(address=self.address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError, TimeoutError, ImportError) as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            where = "start a local Ray" if local else f"connect to Ray at {self.address}"
            raise DataError(f"cannot {where}: {first[:300]}") from None

    def close(self) -> None:
        if self._owned:
            import_ray().shutdown()
            self._owned = False

    def __enter__(self) -> "RayExecutor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def share(self, value: T) -> RayShared[T]:
        return RayShared(import_ray().put(value))

    def _request(self, job: Any) -> tuple[float, float]:
        return self.cpus, max(self.gpus, 1.0 if getattr(job, "needs_gpu", False) else 0.0)

    def check_feasible(self, requests: Iterable[tuple[float, float]]) -> None:
        """Refuse a (CPUs, GPUs) request that no alive node of the cluster can meet."""
        nodes = [n.get("Resources", {}) for n in import_ray().nodes() if n.get("Alive")]
        for cpus, gpus in set(requests):
            if not any(n.get("CPU", 0) >= cpus and n.get("GPU", 0) >= gpus for n in nodes):
                most = max(((n.get("CPU", 0), n.get("GPU", 0)) for n in nodes), default=(0, 0))
                asks = "CUDA (a GPU)" if gpus else f"{cpus:g} CPUs"
                raise UsageError(f"the tasks ask for {asks} per task but no node of the Ray cluster has that "
                                 f"(largest node: {most[0]:g} CPUs, {most[1]:g} GPUs); use --ray-cpus/--ray-gpus "
                                 "or --device cpu")

    def map(self, fn: Callable[[J], R], jobs: Iterable[J]) -> Iterator[R]:
        jobs = list(jobs)
        if not jobs:
            return
        ray = import_ray()
        self.check_feasible(self._request(job) for job in jobs)
        fn_ref, cwd = ray.put(fn), os.getcwd()
        owner: dict[Any, Any] = {}
        for job in jobs:
            cpus, gpus = self._request(job)
            ref = self._remote.options(num_cpus=cpus, num_gpus=gpus, max_retries=self.max_retries,
                                       retry_exceptions=False).remote(fn_ref, job, cwd)
            owner[ref] = job
        pending, lost = list(owner), []
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                for ref in ready:
                    try:
                        value = ray.get(ref)
                    except ray.exceptions.RayTaskError as err:  # fn raised: as a local executor would
                        cause = getattr(err, "cause", None)
                        if isinstance(cause, BaseException):
                            raise cause from None
                        raise
                    except ray.exceptions.RayError as err:  # the worker or its node died, for good
                        job, reason = owner[ref], _reason(err, self.max_retries)
                        if hasattr(job, "lost"):
                            value = job.lost(reason)
                        else:
                            lost.append(reason)
                            continue
                    yield value
        finally:
            for ref in pending:  # interrupted or failed: stop the tasks instead of leaving them running
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - already finished or gone: nothing to stop
                    pass
        if lost:
            raise DataError(f"{len(lost)} of {len(jobs)} tasks lost their worker ({lost[0]}); what they ran is "
                            "incomplete: run again to resume")


def _reason(err: BaseException, retries: int) -> str:
    first = (str(err).strip().splitlines() or [""])[0]
    attempts = f"{retries + 1} attempt" + ("s" if retries else "")
    return f"worker lost after {attempts}: {type(err).__name__}: {first[:200]}".rstrip(": ")
