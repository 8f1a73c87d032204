"""Sweeps on a local Ray (2 CPUs, shared by the module): tasks in Ray workers with their
resources and one shared dataset, the same run folders as the local executor (a sweep started
locally is continued on Ray and reported), a worker killed mid-run retried or left resumable
and never recorded as done, and a driver killed mid-sweep resumed with no run lost or done
twice."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest

from lorascan.errors import DataError, UsageError
from lorascan.experiments import rundir
from lorascan.experiments.executors import SerialExecutor, Shared, share, unshare
from lorascan.experiments.ray_executor import RayExecutor, RayShared
from lorascan.experiments.summary import collect
from lorascan.experiments.sweep import plan_sweep, run_sweep
from tests.experiments.conftest import make_grid, write_grid
from tests.experiments.ray_cluster import KillOnce, Wrapped, attempts, kill_when, local_ray


@pytest.fixture(scope="module")
def ray_up():
    return local_ray()


def _digests(out: Path) -> dict[str, str]:
    return {p.parent.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (out / "runs").glob("*/eval.json")}


def _where(job: dict) -> dict:
    """A job's view of its worker."""
    if job.get("fail"):
        raise UsageError("refused inside the task")
    return {"n": job["n"], "pid": os.getpid(), "omp": os.environ.get("OMP_NUM_THREADS"), "cwd": os.getcwd(),
            "handle": type(job["data"]).__name__, "data": unshare(job["data"])}


class _GpuJob(dict):
    needs_gpu = True


class _Named(dict):
    """A job with a spec (what KillOnce keys on)."""

    @property
    def spec(self) -> str:
        return self["spec"]


def test_tasks_run_in_ray_workers_with_their_resources_and_a_shared_value(ray_up, tmp_path, monkeypatch):
    ex = RayExecutor()
    assert ex.workers == 2 and ex.threads == 1 and not ex._owned  # the module's Ray, used as it is
    value = {"rows": list(range(1000))}
    handle = share(ex, value)
    assert isinstance(handle, RayShared) and not hasattr(handle, "_value")  # only the reference travels
    assert isinstance(share(SerialExecutor(), value), Shared) and unshare(share(SerialExecutor(), value)) is value
    monkeypatch.chdir(tmp_path)  # tasks run in the driver's working directory
    results = list(ex.map(_where, [{"n": n, "data": handle} for n in range(4)]))
    assert sorted(r["n"] for r in results) == [0, 1, 2, 3]
    assert os.getpid() not in {r["pid"] for r in results}
    assert {(r["omp"], r["cwd"], r["handle"]) for r in results} == {("1", str(tmp_path), "RayShared")}
    assert all(r["data"] == value for r in results)
    with pytest.raises(UsageError, match="refused inside the task"):  # fn's own errors, as locally
        list(ex.map(_where, [{"n": 0, "data": 1, "fail": True}]))
    with pytest.raises(UsageError, match=r"ask for CUDA \(a GPU\) per task but no node"):
        list(ex.map(_where, [_GpuJob(n=0, data=1)]))
    with pytest.raises(UsageError, match="ask for 3 CPUs per task"):
        list(RayExecutor(cpus_per_task=3).map(_where, [{"n": 0, "data": 1}]))
    with pytest.raises(UsageError, match="--ray-address 'nohost'"):
        RayExecutor(address="nohost")


def test_a_sweep_started_locally_is_continued_on_ray_and_reported(ray_up, tmp_path, toy_folder):
    out = tmp_path / "out"
    first = make_grid(toy_folder, counts=[0], seeds=[1])
    run_sweep(first, out, SerialExecutor(), progress=False)
    local = _digests(out)
    grid = make_grid(toy_folder, counts=[0, 6], seeds=[1])
    ex = Wrapped(RayExecutor(), lambda fn: fn)
    outcome = run_sweep(grid, out, ex, progress=False)
    assert [r.state for r in outcome.results] == ["complete"] and outcome.n_complete == 2
    assert len(ex.jobs) == 1 and isinstance(ex.jobs[0].dataset, RayShared)  # the dataset by reference
    after = _digests(out)
    assert sorted(after) == sorted(r.id for r in grid.runs()) and all(after[i] == local[i] for i in local)
    on_ray = json.loads((rundir.run_dir(out, grid.runs()[1].id) / "eval.json").read_text())
    from_local = json.loads((rundir.run_dir(out, grid.runs()[0].id) / "eval.json").read_text())
    assert set(on_ray) == set(from_local) and set(on_ray["sweep"]) == set(from_local["sweep"])
    assert on_ray["adapter"] == str(rundir.run_dir(out, grid.runs()[1].id) / "adapter")  # same paths as locally
    records, census = collect(out)
    assert len(records) == 2 and dict(census["states"]) == {"complete": 2}


def test_a_worker_killed_mid_run_is_retried_and_the_run_recorded_once(ray_up, tmp_path, toy_folder):
    grid = make_grid(toy_folder, counts=[0, 6], seeds=[1])
    victim, other = grid.runs()[1].id, grid.runs()[0].id
    out, marks = tmp_path / "out", tmp_path / "marks"
    marks.mkdir()
    ex = Wrapped(RayExecutor(max_retries=1), lambda fn: KillOnce(fn, victim, str(marks)))
    outcome = run_sweep(grid, out, ex, progress=False)
    assert (marks / "killed").exists()  # it did die, after training, before its evaluation
    assert sorted(attempts(marks)) == sorted([victim, victim, other])
    assert [r.state for r in outcome.results] == ["complete", "complete"] and not outcome.interrupted
    assert {i: rundir.read_status(rundir.run_dir(out, i))["attempts"] for i in (victim, other)} == {victim: 2, other: 1}
    assert rundir.load_result(rundir.run_dir(out, victim), grid.runs()[1]) is not None


def test_a_worker_lost_for_good_leaves_its_run_resumable(ray_up, tmp_path, toy_folder):
    grid = make_grid(toy_folder, counts=[0, 6], seeds=[1])
    victim = grid.runs()[0].id
    out, marks = tmp_path / "out", tmp_path / "marks"
    marks.mkdir()
    ex = Wrapped(RayExecutor(max_retries=0), lambda fn: KillOnce(fn, victim, str(marks)))
    outcome = run_sweep(grid, out, ex, progress=False)
    assert [r.run_id for r in outcome.interrupted] == [victim]
    assert "worker lost after 1 attempt: WorkerCrashedError" in outcome.interrupted[0].error
    assert outcome.n_complete == 1 and not (rundir.run_dir(out, victim) / "eval.json").exists()
    assert [st.state for st in plan_sweep(grid, out).runs] == ["interrupted", "complete"]
    before = _digests(out)
    again = run_sweep(grid, out, RayExecutor(), progress=False)
    assert [(r.run_id, r.state) for r in again.results] == [(victim, "complete")]
    assert _digests(out)[grid.runs()[1].id] == before[grid.runs()[1].id]
    assert rundir.read_status(rundir.run_dir(out, victim))["attempts"] == 2
    (tmp_path / "marks2").mkdir()
    with pytest.raises(DataError, match="1 of 2 tasks lost their worker"):  # jobs without lost(): an error
        list(RayExecutor(max_retries=0).map(KillOnce(_where, "x", str(tmp_path / "marks2"), "os:getcwd"),
                                            [_Named(n=0, data=1, spec="x"), _Named(n=1, data=1, spec="y")]))


def test_a_driver_killed_mid_sweep_resumes_with_no_run_lost_or_done_twice(ray_up, tmp_path, toy_folder):
    config = write_grid(tmp_path / "grid.yaml", toy_folder, counts=[0, 6, 12], seeds=[1])
    out = tmp_path / "out"
    address = ray_up.get_runtime_context().gcs_address  # the module's cluster: Ray ends a dead driver's tasks
    kill_when([sys.executable, "-m", "lorascan", "sweep", "run", str(config), "--out", str(out), "--executor", "ray",
               "--ray-address", address, "--quiet"], lambda: bool(_digests(out)), tmp_path / "log")
    before = _digests(out)
    assert 1 <= len(before) < 3, (tmp_path / "log").read_text()[-800:]
    grid = make_grid(toy_folder, counts=[0, 6, 12], seeds=[1])
    outcome = run_sweep(grid, out, RayExecutor(), progress=False)
    after = _digests(out)
    assert sorted(after) == sorted(r.id for r in grid.runs()) and all(after[i] == before[i] for i in before)
    assert sorted(r.run_id for r in outcome.results) == sorted(set(after) - set(before))
    assert all(rundir.read_status(rundir.run_dir(out, i))["attempts"] == 1 for i in before)


def test_sweep_cli_on_ray(ray_up, cli, tmp_path, toy_folder):
    config = write_grid(tmp_path / "grid.yaml", toy_folder, counts=[0], seeds=[1])
    result = cli("sweep", "run", config, "--out", tmp_path / "out", "--executor", "ray", "--quiet")
    assert result.code == 0, result.err
    assert "toy: 1 runs, 0 complete, 1 to run on Ray (this process's Ray, 2 task slots)" in result.err
    assert result.out.splitlines()[-1] == f"toy: 1 of 1 runs complete in {tmp_path / 'out'} (1 run now, 0 failed)"
    assert ray_up.is_initialized()  # a Ray it did not start is left running
