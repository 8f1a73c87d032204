"""Who may record a run (issue 14): a run whose lock another process holds past the executor's
lock timeout is left for the next sweep (not waited on forever, not run beside the holder), and
an attempt whose claim in status.json was taken over never writes the run's eval.json."""

from __future__ import annotations

import pytest

from lorascan.experiments import rundir
from lorascan.experiments.executors import SerialExecutor
from lorascan.experiments.sweep import plan_sweep, run_sweep
from tests.experiments.conftest import make_grid


class _Impatient(SerialExecutor):
    lock_timeout_s = 0.3


def test_a_run_locked_elsewhere_is_left_for_the_next_sweep(tmp_path, toy_folder):
    grid = make_grid(toy_folder, counts=[0], seeds=[1])
    run, out = grid.runs()[0], tmp_path / "out"
    folder = rundir.run_dir(out, run.id)
    folder.mkdir(parents=True)
    with rundir.locked(folder / rundir.LOCK_FILE) as held:  # a leftover attempt (another fd: flock conflicts)
        assert held
        outcome = run_sweep(grid, out, _Impatient(), progress=False)
    assert [(r.state, r.error) for r in outcome.interrupted] == [
        ("interrupted", "another process held the run's lock for 0.3 s; left for the next sweep")]
    assert sorted(p.name for p in folder.iterdir()) == [rundir.LOCK_FILE, rundir.RUN_FILE, rundir.STATUS_FILE]
    assert plan_sweep(grid, out).runs[0].state == "pending"
    assert [r.state for r in run_sweep(grid, out, _Impatient(), progress=False).results] == ["complete"]
    with rundir.locked(folder / rundir.LOCK_FILE, timeout=0.1) as held:
        assert held  # released by the attempt that finished


def test_an_attempt_taken_over_does_not_record_its_run(tmp_path, toy_folder, monkeypatch):
    import lorascan.evaluate.run as ev

    grid = make_grid(toy_folder, counts=[0], seeds=[1])
    run, out = grid.runs()[0], tmp_path / "out"
    folder = rundir.run_dir(out, run.id)
    real = ev.evaluate_adapter

    def overtaken(*args, **kwargs):  # meanwhile a new sweep claimed the run
        rundir.write_status(folder, run.id, "running", attempt="0123456789abcdef")
        return real(*args, **kwargs)

    monkeypatch.setattr(ev, "evaluate_adapter", overtaken)
    outcome = run_sweep(grid, out, SerialExecutor(), progress=False)
    assert [r.state for r in outcome.results] == ["interrupted"]
    assert "was taken over by attempt 0123456789abcdef; its result is not recorded" in outcome.results[0].error
    assert not (folder / rundir.EVAL_FILE).exists()
    assert rundir.read_status(folder)["attempt"] == "0123456789abcdef"  # the winner's claim is left alone
    monkeypatch.setattr(ev, "evaluate_adapter", real)
    assert [r.state for r in run_sweep(grid, out, SerialExecutor(), progress=False).results] == ["complete"]
    assert rundir.load_result(folder, run) is not None


def test_locked_waits_at_most_its_timeout(tmp_path):
    import time

    path = tmp_path / ".lock"
    with rundir.locked(path) as first:
        t0 = time.monotonic()
        with rundir.locked(path, timeout=0.4) as second:
            waited = time.monotonic() - t0
        with rundir.locked(path, wait=False) as third:
            pass
    assert (first, second, third) == (True, False, False) and 0.35 <= waited < 2.0
    with pytest.raises(ZeroDivisionError):  # the lock is released on errors too
        with rundir.locked(path, timeout=0.1):
            1 / 0
    with rundir.locked(path, wait=False) as again:
        assert again
