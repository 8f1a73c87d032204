"""Run a grid resumably: every run that is not complete, each written atomically, none twice.

:func:`run_sweep` plans the grid against the output folder (a run is complete exactly when
its ``eval.json`` is a valid evaluation record, see :mod:`lorascan.experiments.rundir`),
resolves the dataset once, and hands the incomplete runs to an executor. Killed at any moment
and started again, a sweep finishes with no lost and no duplicated runs:

- a finished run's ``eval.json`` is the last thing it writes, by rename, so it is either
  there and whole or not there; finished runs are never touched again;
- an unfinished run's folder is cleaned and the run redone from its poisoned data up;
- one sweep at a time writes to a folder (``<out>/.sweep.lock``, released by the kernel when
  the process dies), and each run is executed under its own lock, so a worker left over from
  a killed sweep finishes (or dies) before anyone redoes its run.

Output layout: ``<out>/runs/<run id>/`` per run, ``<out>/grids/<name>.json`` per grid run
into the folder (the config as used and its run ids).

The executor decides where runs execute (:mod:`lorascan.experiments.executors`); the folder
is the same whichever it is, so a sweep started on one executor is resumed on another. The
dataset goes to the executor as one shared value (Ray: one object in its store, fetched by
each worker), never rebuilt per run. A run the executor lost (its worker died and Ray's
retries ran out) comes back ``interrupted``: it is not complete, and the next sweep redoes it.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

from lorascan.data.mixes import DatasetSplits
from lorascan.errors import DataError, UsageError
from lorascan.experiments import rundir
from lorascan.experiments.executors import Executor, SerialExecutor, share
from lorascan.experiments.grid import GridConfig, Run
from lorascan.progress import bar
from lorascan.records import record_header, write_json_atomic

SWEEP_LOCK = ".sweep.lock"
GRIDS = "grids"


@dataclass(frozen=True)
class RunState:
    run: Run
    state: str                  # complete | pending | running | interrupted | failed
    error: str | None = None


@dataclass(frozen=True)
class SweepPlan:
    grid: GridConfig
    out: Path
    runs: tuple[RunState, ...]

    @property
    def todo(self) -> list[Run]:
        return [r.run for r in self.runs if r.state != "complete"]

    @property
    def n_complete(self) -> int:
        return sum(r.state == "complete" for r in self.runs)


@dataclass
class SweepOutcome:
    plan: SweepPlan
    results: list[rundir.RunResult] = field(default_factory=list)

    @property
    def failed(self) -> list[rundir.RunResult]:
        return [r for r in self.results if r.state == "failed"]

    @property
    def interrupted(self) -> list[rundir.RunResult]:
        """Runs left incomplete by this sweep (worker lost, lock held elsewhere, taken over)."""
        return [r for r in self.results if r.state == "interrupted"]

    @property
    def n_ran(self) -> int:
        return sum(r.state in ("complete", "failed") for r in self.results)

    @property
    def n_complete(self) -> int:
        """Complete runs of the grid now (before + this sweep, + any a leftover worker finished)."""
        return self.plan.n_complete + sum(r.state in ("complete", "skipped") for r in self.results)


def plan_sweep(grid: GridConfig, out: str | Path) -> SweepPlan:
    """The grid's runs and where each stands in ``out``. A run folder holding a run with
    other settings is a UsageError."""
    out = Path(out)
    active = sweep_active(out)
    states = []
    for run in grid.runs():
        folder = rundir.run_dir(out, run.id)
        if not folder.is_dir():
            states.append(RunState(run, "pending"))
            continue
        rundir.check_run_file(folder, run)
        if rundir.load_result(folder) is not None:
            states.append(RunState(run, "complete"))
            continue
        state, error = run_state(folder, active)
        states.append(RunState(run, state, error))
    return SweepPlan(grid, out, tuple(states))


def run_state(folder: Path, active: bool) -> tuple[str, str | None]:
    """The state of an incomplete run from its status file: pending, failed (with the
    error), running, or interrupted (it says running but no sweep holds the folder)."""
    status = rundir.read_status(folder)
    state = status.get("state")
    if state == "failed":
        return "failed", str(status.get("error"))
    if state == "running":
        return ("running" if active else "interrupted"), None
    return "pending", None


def sweep_active(out: Path) -> bool:
    """Whether a sweep process holds ``out``'s lock now (False without fcntl)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return False
    try:
        fd = os.open(Path(out) / SWEEP_LOCK, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def precheck_out(out: str | Path) -> None:
    """Refuse an output folder that cannot be created or written, without creating anything
    (checked before the dataset is built, so a bad --out fails at once)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    probe = out
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise DataError(f"cannot write to {out}: {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise DataError(f"cannot write to {out}: permission denied")


def ensure_writable(out: str | Path) -> Path:
    """Create ``out`` if needed; a one-line error if it is a file or cannot be written."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    try:
        (out / rundir.RUNS).mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise DataError(f"cannot write to {out}: {err.strerror or err}") from None
    return out


@contextlib.contextmanager
def sweep_lock(out: Path) -> Iterator[None]:
    """Exclusive, non-blocking: a second sweep into the same folder is refused."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock
        yield
        return
    try:
        fd = os.open(out / SWEEP_LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as err:
        raise DataError(f"cannot write to {out}: {err.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(f"another 'lorascan sweep run' is writing to {out}; wait for it or use another --out") from None
        yield
    finally:
        os.close(fd)


def _check_bases(grid: GridConfig) -> None:
    """Fail before any run on a base model that cannot be resolved (no model is loaded)."""
    from lorascan.models.loading import resolve_base

    for base in grid.base:
        resolve_base(base)


def _resolve(grid: GridConfig) -> DatasetSplits:
    from lorascan.data.mixes import resolve

    return resolve(grid.dataset)


def _record_grid(grid: GridConfig, out: Path) -> None:
    write_json_atomic(out / GRIDS / f"{grid.name}.json",
                      {**record_header("sweep-grid"), "config": grid.to_dict(), "run_ids": [r.id for r in grid.runs()]})


def run_sweep(grid: GridConfig, out: str | Path, executor: Executor | None = None, progress: bool = True,
              dataset: DatasetSplits | None = None,
              on_start: Callable[[SweepPlan], None] | None = None) -> SweepOutcome:
    """Run every incomplete run of ``grid`` into ``out`` with ``executor`` (default: serial).
    ``dataset`` overrides resolving ``grid.dataset`` (it is resolved once, not per run);
    ``on_start`` sees the plan before any run starts. Failed runs are in the outcome.

    Bad base models, datasets and conflicting run folders are refused before anything is
    written; with nothing left to run, nothing is written but a repaired status file."""
    executor = executor or SerialExecutor()
    _check_bases(grid)
    precheck_out(out)
    if plan_sweep(grid, out).todo and dataset is None:
        dataset = _resolve(grid)
    out = ensure_writable(out)
    with sweep_lock(out):
        plan = plan_sweep(grid, out)  # again, under the lock
        if on_start is not None:
            on_start(plan)
        outcome = SweepOutcome(plan)
        _settle_statuses(plan)
        _remove_leftovers(plan)
        todo = plan.todo
        if not todo:
            return outcome
        if dataset is None:  # a run went missing between the two plans
            dataset = _resolve(grid)
        _record_grid(grid, out)
        for run in todo:
            rundir.prepare(rundir.run_dir(out, run.id), run)
        threads, lock_timeout = getattr(executor, "threads", None), getattr(executor, "lock_timeout_s", None)
        shared = share(executor, dataset)
        jobs = [rundir.RunJob(run, out, shared, grid.eval_batch_size, threads, lock_timeout) for run in todo]
        with bar(len(jobs), f"sweep {grid.name}", progress) as pb:
            for res in executor.map(rundir.execute, jobs):
                outcome.results.append(res)
                pb.advance(status=_describe(res))
    return outcome


def _settle_statuses(plan: SweepPlan) -> None:
    """A run killed between writing its eval.json and its final status is complete (the
    record decides); make its status file say so."""
    for st in plan.runs:
        folder = rundir.run_dir(plan.out, st.run.id)
        if st.state == "complete" and rundir.read_status(folder).get("state") != "complete":
            rundir.write_status(folder, st.run.id, "complete", note="status set from the evaluation record")


def _is_temp_file(path: Path) -> bool:
    """A leftover of an atomic write (``.<name>.<hex>.tmp``) or of the write test."""
    return path.name.startswith(".") and (path.name.endswith(".tmp") or path.name.startswith(".write-test.")) \
        and path.is_file() and not path.is_symlink()


def _remove_leftovers(plan: SweepPlan) -> None:
    """Remove what a killed sweep left that no later step would: temporary files of atomic
    writes beside ``grids/*.json`` and the write test (only sweeps write there, and this one
    holds the sweep lock), and those in complete runs' folders when no worker holds the run's
    lock (incomplete runs are cleaned when they are redone)."""
    out = plan.out
    for folder in (out, out / GRIDS):
        if folder.is_dir():
            for entry in folder.iterdir():
                if _is_temp_file(entry):
                    entry.unlink(missing_ok=True)
    for st in plan.runs:
        folder = rundir.run_dir(out, st.run.id)
        if st.state == "complete":
            with rundir.locked(folder / rundir.LOCK_FILE, wait=False) as held:
                if held:
                    for entry in folder.iterdir():
                        if _is_temp_file(entry):
                            entry.unlink(missing_ok=True)


def _describe(res: rundir.RunResult) -> str:
    if res.state in ("failed", "interrupted"):
        return f"{res.run_id} {res.state}"
    if res.state == "skipped":
        return f"{res.run_id} already complete"
    asr = "-" if res.asr is None else f"{res.asr:.2f}"
    clean = "-" if res.clean_accuracy is None else f"{res.clean_accuracy:.2f}"
    return f"{res.run_id} ASR {asr} clean {clean} ({res.wall_time_s:.0f}s)"


def select_runs(out: str | Path, run_ids: Sequence[str] | None = None) -> list[Path]:
    """Run folders under ``out`` (all, or those named in ``run_ids``), sorted by name."""
    root = Path(out) / rundir.RUNS
    if not root.is_dir():
        raise DataError(f"{out} holds no sweep (no {rundir.RUNS}/ folder); write one with 'lorascan sweep run'")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if run_ids is not None:
        wanted = set(run_ids)
        folders = [p for p in folders if p.name in wanted]
    return folders
