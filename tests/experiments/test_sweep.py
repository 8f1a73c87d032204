"""Sweeps on the tiny model: every run exactly once, resumed after a crash or a SIGKILL with no
lost and no repeated run, half-written folders redone, failures recorded."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from lorascan.errors import DataError, UsageError
from lorascan.experiments import rundir
from lorascan.experiments.executors import ProcessExecutor, SerialExecutor
from lorascan.experiments.sweep import plan_sweep, run_sweep, sweep_lock
from tests.experiments.conftest import make_grid, write_fake_run, write_grid
from tests.train.conftest import toy_splits

REPO = Path(__file__).resolve().parents[2]


class SimulatedCrash(BaseException):
    """Stands for the process dying: not an Exception, so nothing records it as a failure."""


@pytest.fixture
def calls(monkeypatch):
    """Counts of train/evaluate/dataset-resolve calls (train by run id); ``crash_eval_on`` makes
    the evaluation of that run id die the way a killed process would."""
    import lorascan.data.mixes as mixes
    import lorascan.evaluate.run as ev
    import lorascan.train.lora as lora

    seen = {"train": Counter(), "eval": Counter(), "resolve": 0, "crash_eval_on": None, "fail_train_on": None}
    real_train, real_eval, real_resolve = lora.train_adapter, ev.evaluate_adapter, mixes.resolve

    def train(base, data_dir, out, cfg, force=False, progress=True):
        run_id = Path(out).parent.name
        seen["train"][run_id] += 1
        if run_id == seen["fail_train_on"]:
            raise DataError("injected training failure")
        return real_train(base, data_dir, out, cfg, force=force, progress=progress)

    def evaluate(base, adapter_dir, data_dir, *args, **kwargs):
        run_id = Path(adapter_dir).parent.name
        seen["eval"][run_id] += 1
        if run_id == seen["crash_eval_on"]:
            raise SimulatedCrash()
        return real_eval(base, adapter_dir, data_dir, *args, **kwargs)

    def resolve(spec, *args, **kwargs):
        seen["resolve"] += 1
        return real_resolve(spec, *args, **kwargs)

    monkeypatch.setattr(lora, "train_adapter", train)
    monkeypatch.setattr(ev, "evaluate_adapter", evaluate)
    monkeypatch.setattr(mixes, "resolve", resolve)
    return seen


def _digests(out: Path) -> dict[str, str]:
    """sha256 of every run's eval.json, by run id."""
    return {p.parent.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (out / "runs").glob(f"*/{rundir.EVAL_FILE}")}


def test_crash_then_resume_runs_each_run_exactly_once(tmp_path, toy_folder, calls):
    grid = make_grid(toy_folder)
    ids = [r.id for r in grid.runs()]
    out = tmp_path / "out"
    calls["crash_eval_on"] = ids[2]  # dies after writing run 3's adapter, before its evaluation
    with pytest.raises(SimulatedCrash):
        run_sweep(grid, out, SerialExecutor(), progress=False)
    assert sorted(_digests(out)) == sorted(ids[:2])
    half = rundir.run_dir(out, ids[2])
    assert (half / "adapter" / "adapter_model.safetensors").is_file() and not (half / "eval.json").exists()
    assert rundir.read_status(half)["state"] == "running"
    (half / ".data.1234abcd.partial").mkdir()  # what a kill inside an atomic write leaves
    before = _digests(out)
    assert [st.state for st in plan_sweep(grid, out).runs] == ["complete", "complete", "interrupted", "pending"]

    calls["crash_eval_on"] = None
    calls["train"].clear()
    outcome = run_sweep(grid, out, SerialExecutor(), progress=False)
    assert sorted(calls["train"]) == sorted(ids[2:]) and set(calls["train"].values()) == {1}
    assert calls["resolve"] == 2  # once per sweep process, not per run
    after = _digests(out)
    assert sorted(after) == sorted(ids) and all(after[i] == before[i] for i in before)
    assert (outcome.n_complete, outcome.n_ran, len(outcome.failed)) == (4, 2, 0)
    assert not (half / ".data.1234abcd.partial").exists()
    attempts = {i: rundir.read_status(rundir.run_dir(out, i))["attempts"] for i in ids}
    assert attempts == {ids[0]: 1, ids[1]: 1, ids[2]: 2, ids[3]: 1}
    rec = json.loads((half / "eval.json").read_text())
    assert rec["sweep"]["params"]["seed"] == rec["poison"]["seed"] == grid.runs()[2].seed
    assert rec["sweep"]["wall_time_s"] > 0 and rec["sweep"]["train_wall_time_s"] > 0
    meta = json.loads((half / "adapter" / "lorascan.json").read_text())
    assert meta["seed"] == grid.runs()[2].seed and meta["poison"]["count"] == grid.runs()[2].count

    # damaged results are not complete: a truncated eval.json and a missing one are redone
    (rundir.run_dir(out, ids[0]) / "eval.json").write_text('{"kind": "evaluation", "attack_succ')
    (rundir.run_dir(out, ids[3]) / "eval.json").unlink()
    calls["train"].clear()
    run_sweep(grid, out, SerialExecutor(), progress=False)
    assert sorted(calls["train"]) == sorted([ids[0], ids[3]])
    assert _digests(out)[ids[1]] == before[ids[1]]

    calls["train"].clear()  # all complete: nothing runs, nothing is resolved
    resolved = calls["resolve"]
    rundir.write_status(rundir.run_dir(out, ids[1]), ids[1], "running")  # killed just after its eval.json
    assert run_sweep(grid, out, SerialExecutor(), progress=False).n_ran == 0
    assert not calls["train"] and calls["resolve"] == resolved
    assert rundir.read_status(rundir.run_dir(out, ids[1]))["state"] == "complete"


def test_sigkill_mid_sweep_then_resume(tmp_path, toy_folder, calls):
    config = write_grid(tmp_path / "grid.yaml", toy_folder, counts=[0, 6], seeds=[1])
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    log = tmp_path / "log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "lorascan", "sweep", "run", str(config), "--out", str(out),
                                 "--quiet"], stdout=fh, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 120
        while not _digests(out) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = _digests(out)
    assert len(before) == 1, f"the sweep should have been killed mid-way: {log.read_text()[-500:]}"
    grid = make_grid(toy_folder, counts=[0, 6], seeds=[1])
    run_sweep(grid, out, SerialExecutor(), progress=False)
    after = _digests(out)
    assert sorted(after) == sorted(r.id for r in grid.runs())
    assert all(after[i] == before[i] for i in before)
    assert sorted(calls["train"]) == sorted(set(after) - set(before)) and set(calls["train"].values()) == {1}
    assert list(out.rglob("*.partial")) == []


def test_a_failed_run_is_recorded_and_retried(tmp_path, toy_folder, calls):
    grid = make_grid(toy_folder, counts=[0, 6], seeds=[1])
    bad = grid.runs()[1].id
    calls["fail_train_on"] = bad
    out = tmp_path / "out"
    outcome = run_sweep(grid, out, SerialExecutor(), progress=False)
    assert [(r.run_id, r.error) for r in outcome.failed] == [(bad, "injected training failure")]
    status = rundir.read_status(rundir.run_dir(out, bad))
    assert (status["state"], status["error"], status["attempts"]) == ("failed", "injected training failure", 1)
    assert [st.state for st in plan_sweep(grid, out).runs] == ["complete", "failed"]
    calls["fail_train_on"] = None
    calls["train"].clear()
    assert not run_sweep(grid, out, SerialExecutor(), progress=False).failed
    assert list(calls["train"]) == [bad]
    assert rundir.read_status(rundir.run_dir(out, bad))["attempts"] == 2


def test_a_folder_from_other_settings_is_refused(tmp_path):
    grid = make_grid("offline-pi", counts=[4], seeds=[1])
    write_fake_run(tmp_path, grid.runs()[0], asr=0.5)
    assert plan_sweep(grid, tmp_path).n_complete == 1
    changed = make_grid("offline-pi", counts=[4], seeds=[1], train={"steps": 3, "max_length": 48})
    assert changed.runs()[0].id == grid.runs()[0].id
    with pytest.raises(UsageError, match=r"holds a run made with other settings \(train.max_length: 32 then, 48 now\)"):
        run_sweep(changed, tmp_path, progress=False)


def test_one_sweep_per_folder_and_unwritable_folders(tmp_path):
    grid = make_grid("offline-pi", counts=[4], seeds=[1])
    out = tmp_path / "out"
    out.mkdir()
    with sweep_lock(out):
        with pytest.raises(UsageError, match="another 'lorascan sweep run' is writing to"):
            run_sweep(grid, out, progress=False, dataset=toy_splits(8, 4))
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="cannot write to .*: .*file is not a folder"):
        run_sweep(grid, tmp_path / "file" / "sub" / "out", progress=False)
    with pytest.raises(UsageError, match="exists and is not a folder"):
        run_sweep(grid, tmp_path / "file", progress=False)


def _whoami(x: int) -> tuple[int, int, str | None]:
    return x, os.getpid(), os.environ.get("OMP_NUM_THREADS")


def test_process_executor_runs_jobs_in_other_processes():
    results = list(ProcessExecutor(2, threads_per_worker=1).map(_whoami, [1, 2, 3]))
    assert sorted(r[0] for r in results) == [1, 2, 3]
    assert os.getpid() not in {r[1] for r in results} and {r[2] for r in results} == {"1"}
    with pytest.raises(UsageError):
        ProcessExecutor(0)
