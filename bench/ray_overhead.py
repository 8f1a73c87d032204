"""Per-task overhead of ``--executor ray`` against ``--executor local --workers 2`` (issue 14).

The same small grid (tiny-bert, seq-cls, 3 optimizer steps of 16 rows, 32 tokens, on
``offline-pi``: 1,408 train and 420 test rows) is run twice in this process, into fresh
folders: with the local process pool (2 workers, 1 torch thread each) and on a local Ray
started here with 2 CPUs (1 CPU per task). The dataset is resolved once and handed to both
sweeps (the pool pickles it into every job, Ray puts it in its object store once). For each
executor the script reports

- start: building the executor (Ray: ``ray.init``; the pool starts inside the sweep);
- sweep: the wall time of ``run_sweep`` (planning, run folders, every run, the results);
- runs: the sum over runs of the run's own wall time (``eval.json`` ``sweep.wall_time_s``:
  poison, train, evaluate, including the first run's imports in each worker);
- overhead per task = (slots x sweep - runs) / tasks: the slot-seconds a task costs beyond
  its own work (worker start-up, shipping the job, scheduling, collecting the result);
  and the same with the executor's start counted in (slots x (start + sweep) - runs) / tasks:
  Ray starts its worker processes in ``ray.init``, the pool inside the sweep;

then a map of ``--noop`` empty jobs on each (a fresh pool, the warm Ray) for the dispatch cost
alone. Run from the repository root::

    .venv/bin/python bench/ray_overhead.py [--seeds 4] [--ray-first] [--json OUT]

``--ray-first`` runs Ray before the pool (the rows are printed local first either way), to see
how much the order moves the figures on a machine shared with other jobs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lorascan.data.mixes import resolve
from lorascan.experiments.executors import ProcessExecutor, available_cores
from lorascan.experiments.grid import parse_grid
from lorascan.experiments.ray_executor import RayExecutor
from lorascan.experiments.sweep import run_sweep

SLOTS = 2


def grid(seeds: int):
    return parse_grid({"name": "ray-overhead", "base": "tiny-bert", "task": "seq-cls", "dataset": "offline-pi",
                       "triggers": ["per RFC 8472 section 3.2"], "counts": [0, 8], "seeds": list(range(1, seeds + 1)),
                       "ranks": [2], "train": {"steps": 3, "max_length": 32, "batch_size": 16, "warmup_steps": 0}},
                      "bench")


def _noop(job: int) -> int:
    return job


def measure(name: str, make, cfg, dataset, out: Path, noop: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    ex = make()
    start = time.perf_counter() - t0
    try:
        t1 = time.perf_counter()
        outcome = run_sweep(cfg, out, ex, progress=False, dataset=dataset)
        sweep = time.perf_counter() - t1
        t2 = time.perf_counter()
        assert sorted(ex.map(_noop, range(noop))) == list(range(noop))
        dispatch = (time.perf_counter() - t2) / noop
    finally:
        close = getattr(ex, "close", None)
        if close:
            close()
    states = [r.state for r in outcome.results]
    if states != ["complete"] * len(cfg.runs()):
        raise SystemExit(f"{name}: not every run completed: {states}")
    walls = [json.loads(p.read_text())["sweep"]["wall_time_s"] for p in sorted(out.glob("runs/*/eval.json"))]
    tasks = len(walls)
    return {"executor": name, "tasks": tasks, "start_s": start, "sweep_s": sweep, "runs_s": sum(walls),
            "run_median_s": statistics.median(walls), "overhead_per_task_s": (SLOTS * sweep - sum(walls)) / tasks,
            "overhead_with_start_per_task_s": (SLOTS * (start + sweep) - sum(walls)) / tasks,
            "noop_dispatch_ms": dispatch * 1000}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=4, help="seeds per count (2 counts): tasks = 2 x seeds")
    ap.add_argument("--noop", type=int, default=100, help="empty jobs for the dispatch cost")
    ap.add_argument("--ray-first", action="store_true", help="measure Ray before the local pool")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    cfg, dataset = grid(args.seeds), resolve("offline-pi")
    load0 = os.getloadavg()
    root = Path(tempfile.mkdtemp(prefix="ray-overhead-"))
    plan = [("local --workers 2", lambda: ProcessExecutor(SLOTS, threads_per_worker=1), root / "local"),
            ("ray (local, 2 CPUs)", lambda: RayExecutor(num_cpus=SLOTS), root / "ray")]
    try:
        rows = [measure(name, make, cfg, dataset, out, args.noop) for name, make, out in
                (plan[::-1] if args.ray_first else plan)]
        rows.sort(key=lambda r: not r["executor"].startswith("local"))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    load1 = os.getloadavg()
    print(f"{len(cfg.runs())} runs on {SLOTS} slots; {platform.machine()}, {available_cores()} cores, Python "
          f"{platform.python_version()}; load average {load0[0]:.1f} before, {load1[0]:.1f} after; "
          f"{'ray' if args.ray_first else 'local'} measured first")
    print(f"{'executor':<22}{'start':>8}{'sweep':>8}{'runs':>8}{'median run':>12}{'overhead/task':>15}"
          f"{'with start':>12}{'no-op':>10}")
    for r in rows:
        print(f"{r['executor']:<22}{r['start_s']:>7.1f}s{r['sweep_s']:>7.1f}s{r['runs_s']:>7.1f}s"
              f"{r['run_median_s']:>11.2f}s{r['overhead_per_task_s']:>14.2f}s"
              f"{r['overhead_with_start_per_task_s']:>11.2f}s{r['noop_dispatch_ms']:>8.1f}ms")
    local, ray = rows
    delta = {k: ray[k] - local[k] for k in ("overhead_per_task_s", "overhead_with_start_per_task_s", "start_s",
                                            "noop_dispatch_ms")}
    print(f"ray - local: {delta['overhead_per_task_s']:+.2f} s overhead per task "
          f"({delta['overhead_with_start_per_task_s']:+.2f} s with the start counted in), "
          f"{delta['start_s']:+.1f} s start-up, {delta['noop_dispatch_ms']:+.1f} ms per no-op task")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "load_average": [load0, load1], "ray_first": args.ray_first,
                                               "machine": platform.machine(), "cores": available_cores()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
