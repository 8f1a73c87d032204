"""Run-folder reuse that cannot be fooled (an unreadable run.json is rewritten, an eval.json of
other parameters never counts), reproducible SVG plots written with the user's umask and
without touching global matplotlib settings, and records written before plots."""

from __future__ import annotations

import json
import os
import stat

import pytest

from lorascan.errors import DataError
from lorascan.experiments import rundir
from lorascan.experiments import summary as sm
from lorascan.experiments.sweep import plan_sweep
from lorascan.report import sweep_plots
from lorascan.report.sweep_plots import write_sweep_plots, write_sweep_report
from tests.cli.helpers import assert_one_line_error
from tests.experiments.conftest import fake_record, make_grid, write_fake_run


@pytest.fixture
def two_runs(tmp_path):
    grid = make_grid("offline-pi", counts=[4], seeds=[1, 2])
    a, b = grid.runs()
    return tmp_path / "sweep", a, b


# A16 ----------------------------------------------------------------------------------------

def test_an_unreadable_run_file_is_rewritten(two_runs):
    out, run, _ = two_runs
    folder = write_fake_run(out, run, asr=0.5)
    (folder / rundir.RUN_FILE).write_text('{"params": {"trunc')
    assert rundir.check_run_file(folder, run) is False
    assert rundir.load_result(folder) is None  # no parameters to compare the result with
    rundir.prepare(folder, run)
    assert json.loads((folder / rundir.RUN_FILE).read_text())["params"] == run.to_dict()
    assert rundir.check_run_file(folder, run) is True and rundir.load_result(folder) is not None


def test_execute_rewrites_an_unreadable_run_file_of_a_complete_run(two_runs):
    out, run, _ = two_runs
    folder = write_fake_run(out, run, asr=0.5)
    (folder / rundir.RUN_FILE).write_text("[")
    result = rundir.execute(rundir.RunJob(run, out, dataset=None))  # complete: nothing is trained
    assert result.state == "skipped"
    assert json.loads((folder / rundir.RUN_FILE).read_text())["params"] == run.to_dict()
    assert plan_sweep(make_grid("offline-pi", counts=[4], seeds=[1]), out).n_complete == 1


def test_an_eval_record_of_other_parameters_never_counts(two_runs):
    out, run, other = two_runs
    folder = write_fake_run(out, run, asr=0.5)
    foreign = fake_record(other, 1.0)
    foreign["sweep"]["run_id"] = run.id  # copied in and relabelled
    (folder / rundir.EVAL_FILE).write_text(json.dumps(foreign))
    assert rundir.load_result(folder) is None and rundir.load_result(folder, run) is None
    assert rundir.valid_result(foreign, run.id, other.to_dict())  # it is a fine record of the other run
    assert not rundir.valid_result(foreign, run.id, None)
    records, census = sm.collect(out)
    assert records == [] and census["states"] == {"pending": 1}


# A15 ----------------------------------------------------------------------------------------

def _summary():
    grid = make_grid("offline-pi", counts=[0, 4, 8], seeds=[1, 2])
    return sm.summarize([fake_record(r, min(1.0, r.count / 8)) for r in grid.runs()])


def test_the_same_summary_gives_byte_identical_svgs_and_leaves_global_settings_alone(tmp_path):
    import matplotlib

    before = {k: matplotlib.rcParams[k] for k in ("svg.hashsalt", "text.parse_math")}
    summary = _summary()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _, svg_a = write_sweep_plots(summary, tmp_path / "a" / "s")
    _, svg_b = write_sweep_plots(summary, tmp_path / "b" / "s")
    assert svg_a.read_bytes() == svg_b.read_bytes() and b"<svg" in svg_a.read_bytes()[:2000]
    assert {k: matplotlib.rcParams[k] for k in before} == before


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_plots_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        paths = write_sweep_plots(_summary(), tmp_path / "s")
    finally:
        os.umask(old)
    assert {stat.S_IMODE(p.stat().st_mode) for p in paths} == {mode}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.png", "s.svg"]


# C-partial ------------------------------------------------------------------------------------

def test_the_sweep_summary_is_written_before_the_plots(two_runs, monkeypatch):
    out, run, other = two_runs
    write_fake_run(out, run, asr=0.5)
    write_fake_run(out, other, asr=0.7)

    def broken(*args, **kwargs):
        raise DataError("cannot write plot: disk full")

    monkeypatch.setattr(sweep_plots, "write_sweep_plots", broken)
    with pytest.raises(DataError, match="disk full"):
        write_sweep_report(out)
    assert json.loads((out / "sweep-summary.json").read_text())["n_runs"] == 2
    assert (out / "sweep-cohort.json").is_file()


def test_weights_calibrate_writes_the_profile_before_the_plot(cli, tmp_path):
    from tests.detect.adapters import make_adapter

    root = tmp_path / "cohort"
    for i in range(4):
        make_adapter(root / f"ad{i}", seed=i, spike=(1, "down_proj") if i >= 2 else None)
        (root / f"ad{i}" / "lorascan.json").write_text(json.dumps({"poison": {"count": 20 if i >= 2 else 0}}))
    prof = tmp_path / "p.json"
    res = cli("weights-calibrate", root, "--out", prof, "--bootstrap", "10", "--plot", tmp_path / "no" / "roc.png")
    assert_one_line_error(res, 1, "cannot write plot")
    assert json.loads(prof.read_text())["kind"] == "detector_profile"
