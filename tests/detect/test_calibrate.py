"""Calibration statistics against brute force and hand-worked cases, profiles, verdicts,
cohort reading and the detector registry contract."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lorascan.detect.base import ScanContext
from lorascan.detect import DETECTORS, register_builtin_detectors
from lorascan.detect.verdict import Verdict
from lorascan.detect.calibrate import (
    CohortScores,
    auc_mann_whitney,
    auc_trapezoid_ordered,
    best_direction,
    bootstrap_ci,
    calibrate,
    fpr0_threshold,
    roc_points,
    tpr_at_fpr,
)
from lorascan.detect.cohort import calibrate_cohort, read_cohort
from lorascan.detect.verdict import Profile, verdict
from lorascan.detect.weights import WeightDetector
from lorascan.errors import DataError, UsageError
from lorascan.registry import Registry
from tests.detect.adapters import make_adapter


def _brute_auc(scores, labels):
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    return sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(5))
def test_tie_aware_auc_equals_brute_force_and_roc_area(seed):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 6, size=30).astype(float)  # many ties
    labels = rng.integers(0, 2, size=30)
    labels[:2] = [0, 1]
    auc = auc_mann_whitney(scores, labels)
    assert auc == pytest.approx(_brute_auc(scores, labels), abs=1e-12)
    fpr, tpr = zip(*roc_points(scores, labels))
    assert np.trapezoid(tpr, fpr) == pytest.approx(auc, abs=1e-12)
    assert auc_mann_whitney(scores, labels, "-") == pytest.approx(1 - auc, abs=1e-12)


def test_paper_trapezoid_breaks_ties_by_input_order():
    # clean listed first, as in the paper's cohort (4 clean, then 30 poisoned)
    scores, labels = [0.2, 0.5, 0.5, 0.9], [0, 0, 1, 1]
    assert auc_mann_whitney(scores, labels) == pytest.approx(0.875)  # the tie counts one half
    # sorted descending and stable: 0.9 (p), 0.5 (clean, listed first), 0.5 (p), 0.2 (clean)
    assert auc_trapezoid_ordered(scores, labels) == pytest.approx(0.75)
    assert auc_trapezoid_ordered([0.2, 0.5, 0.5, 0.9], [0, 1, 0, 1]) == pytest.approx(1.0)
    no_ties = [0.1, 0.4, 0.3, 0.9]
    assert auc_trapezoid_ordered(no_ties, labels) == pytest.approx(auc_mann_whitney(no_ties, labels))


def test_direction_and_fpr0_threshold():
    clean, poisoned = [1.024e-4, 1.03e-4, 1.052e-4, 1.04e-4], [1.062e-4, 1.118e-4, 1.07e-4, 1.05e-4]
    scores, labels = clean + poisoned, [0] * 4 + [1] * 4
    assert best_direction(scores, labels) == ("+", pytest.approx(_brute_auc(scores, labels)))
    threshold, recall = fpr0_threshold(scores, labels, "+")
    assert threshold == 1.052e-4 and recall == 0.75  # max clean; flag strictly above (paper §7)
    neg = [-s for s in scores]
    assert best_direction(neg, labels)[0] == "-"
    assert fpr0_threshold(neg, labels, "-") == (-1.052e-4, 0.75)


def test_tpr_at_fpr_allows_floor_alpha_false_positives():
    rng = np.random.default_rng(0)
    clean, poisoned = rng.normal(0, 1, 200), rng.normal(1.5, 1, 100)
    scores, labels = np.concatenate([clean, poisoned]), [0] * 200 + [1] * 100
    for level, allowed in ((0.0, 0), (0.01, 2), (0.05, 10)):
        thr, tpr, fpr = tpr_at_fpr(scores, labels, "+", level)
        assert np.sum(clean > thr) == allowed and fpr == allowed / 200
        assert tpr == pytest.approx(np.mean(poisoned > thr))
    assert tpr_at_fpr(scores, labels, "+", 0.0)[1] <= tpr_at_fpr(scores, labels, "+", 0.05)[1]
    with pytest.raises(UsageError):
        tpr_at_fpr(scores, labels, "+", 1.0)


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    rng = np.random.default_rng(1)
    scores = np.concatenate([rng.normal(0, 1, 15), rng.normal(1, 1, 15)])
    labels = [0] * 15 + [1] * 15
    a = bootstrap_ci(scores, labels, "+", n_boot=500, seed=7)
    assert a == bootstrap_ci(scores, labels, "+", n_boot=500, seed=7)
    assert a != bootstrap_ci(scores, labels, "+", n_boot=500, seed=8)
    lo, hi = a["auc"]
    assert lo < auc_mann_whitney(scores, labels) < hi
    assert bootstrap_ci([0, 1, 2, 3], [0, 0, 1, 1], "+", 200)["auc"] == (1.0, 1.0)


@pytest.mark.parametrize("scores,labels,fragment", [
    ([1.0, 2.0], [0, 0], "clean and poisoned"),
    ([1.0, float("nan")], [0, 1], "finite"),
    ([1.0, 2.0], [0, 2], "labels must be"),
])
def test_bad_calibration_input(scores, labels, fragment):
    with pytest.raises(DataError, match=fragment):
        auc_mann_whitney(scores, labels)


def _cohort():
    rows = [{"std": 1.0 + i * 0.01, "mean": 5.0 - i, "half": None if i == 0 else 1.0} for i in range(4)]
    rows += [{"std": 2.0 + i, "mean": 1.0 + i * 3, "half": 2.0} for i in range(4)]
    return CohortScores(tuple(f"a{i}" for i in range(8)), (0,) * 4 + (1,) * 4, tuple(rows))


def test_calibrate_profile_round_trip_and_verdicts(tmp_path):
    profile = calibrate(_cohort(), detector="weights", view="weights", base_model="Qwen/Qwen2.5-1.5B-Instruct",
                        conditions={"rank": "16"}, n_boot=100)
    assert profile.decision == ("std",)  # best AUC (1.0) first among ties in name order
    assert [f.feature for f in profile.features] == ["mean", "std"]
    assert any("'half' skipped" in n for n in profile.notes)
    std = profile.feature("std")
    assert (std.direction, std.threshold, std.recall, std.auc) == ("+", 1.03, 1.0, 1.0)
    path = profile.save(tmp_path / "p.json")
    rec = json.loads(path.read_text())
    assert rec["schema_version"] == 1 and rec["kind"] == "detector_profile" and rec["n_poisoned"] == 4
    assert rec["cohort"][0] == {"label": 0, "name": "a0", "scores": {"mean": 5.0, "std": 1.0}}
    loaded = Profile.load(path)
    assert loaded == profile or loaded.to_record() == profile.to_record()
    ctx = {"base_model": "qwen/qwen2.5-1.5b-instruct/", "rank": "16"}  # whole names, case and slash insensitive
    assert verdict({"std": 1.5}, loaded, ctx).label == "suspicious"
    v = verdict({"std": 1.03}, loaded, ctx)
    assert v.label == "clean" and v.flagged == () and "is not > 1.03" in v.reasons[0]
    assert verdict({"std": 9}, None).label == "uncalibrated"
    assert verdict({"std": 9}, loaded, {"base_model": "meta-llama/Llama-3.1-8B"}).label == "uncalibrated"
    assert verdict({"std": 9}, loaded, {"rank": "8"}).label == "uncalibrated"
    assert verdict({"std": None}, loaded, ctx).label == "uncalibrated"


def test_decision_rule_any_feature_and_lower_direction():
    profile = calibrate(_cohort(), detector="weights", view="weights", base_model=None,
                        decision=["std", "mean"], n_boot=50)
    assert profile.feature("mean").direction == "+"
    assert verdict({"std": 1.0, "mean": 99.0}, profile).flagged == ("mean",)
    with pytest.raises(UsageError, match="not calibrated"):
        calibrate(_cohort(), detector="weights", view="weights", base_model=None, decision=["nope"], n_boot=10)
    with pytest.raises(DataError, match="'half' is missing"):
        calibrate(_cohort(), detector="weights", view="weights", base_model=None, features=["half"], n_boot=10)


@pytest.mark.parametrize("content", ['{"kind": "weight_scan"}', "[]", '{"kind": "detector_profile", '
                                     '"schema_version": 1, "features": {"x": {"auc": "high"}}}', "{oops"])
def test_malformed_profile_is_a_data_error(tmp_path, content):
    (tmp_path / "p.json").write_text(content)
    with pytest.raises(DataError):
        Profile.load(tmp_path / "p.json")


def _labelled_cohort(root, n_clean=3, n_poisoned=3, base="org/base-model"):
    for i in range(n_clean + n_poisoned):
        poisoned = i >= n_clean
        ad = root / f"ad{i}"
        make_adapter(ad, seed=i, scale_b=0.02 if poisoned else 0.01, config={"base_model_name_or_path": base})
        (ad / "lorascan.json").write_text(json.dumps({"poison": {"count": 20 if poisoned else 0, "trigger": "t"}}))
    return root


def test_cohort_folder_and_labels_files(tmp_path):
    root = _labelled_cohort(tmp_path / "cohort")
    (root / "plots").mkdir()
    members, notes = read_cohort(root)
    assert [(m.name, m.label) for m in members] == [(f"ad{i}", int(i >= 3)) for i in range(6)]
    assert notes == ["subfolder 'plots' ignored: not an adapter"]
    (tmp_path / "labels.csv").write_text("path,label\ncohort/ad0,clean\ncohort/ad4,1\n")
    assert [(m.name, m.label) for m in read_cohort(tmp_path / "labels.csv")[0]] == [("ad0", 0), ("ad4", 1)]
    (tmp_path / "labels.json").write_text(json.dumps({str(root / "ad1"): False, "cohort/ad5": True}))
    assert [m.label for m in read_cohort(tmp_path / "labels.json")[0]] == [0, 1]
    profile = calibrate_cohort(members, WeightDetector(), view="weights", n_boot=50, notes=notes)
    assert profile.base_model == "org/base-model" and dict(profile.conditions) == {"rank": "4", "scaling": "none"}
    assert profile.feature("frobN_mean").auc == 1.0 and "subfolder 'plots' ignored: not an adapter" in profile.notes


@pytest.mark.parametrize("case,fragment", [
    ("no manifest", "adapter manifest not found"),
    ("bad count", "poison.count must be"),
    ("one class", "needs clean and poisoned"),
    ("bad label", "label must be"),
])
def test_cohort_errors(tmp_path, case, fragment):
    root = _labelled_cohort(tmp_path / "c")
    if case == "no manifest":
        (root / "ad1" / "lorascan.json").unlink()
    elif case == "bad count":
        (root / "ad1" / "lorascan.json").write_text(json.dumps({"poison": {"count": -1}}))
    elif case == "one class":
        for i in range(3, 6):
            (root / f"ad{i}" / "lorascan.json").write_text(json.dumps({"poison": None}))
    else:
        root = tmp_path / "l.csv"
        root.write_text("path,label\nc/ad0,maybe\n")
    with pytest.raises(DataError, match=fragment):
        read_cohort(root)


def test_cohort_mixing_base_models_is_refused(tmp_path):
    root = _labelled_cohort(tmp_path / "c")
    make_adapter(root / "ad5", seed=5, scale_b=0.02, config={"base_model_name_or_path": "other/model"})
    with pytest.raises(DataError, match="mixes base models"):
        calibrate_cohort(read_cohort(root)[0], WeightDetector(), view="weights", n_boot=10)


def test_roc_plot_is_written(tmp_path):
    from lorascan.report.plots import write_roc_plot

    profile = calibrate(_cohort(), detector="weights", view="weights", base_model=None, n_boot=10)
    path = write_roc_plot(profile, tmp_path / "roc.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["roc.png"]


def test_registry_is_explicit_and_resettable():
    fresh = register_builtin_detectors(Registry("detector"))
    names = ["behavioral", "chat-tokens", "generative", "neural-cleanse", "phrases", "strip", "tokens", "weights"]
    assert fresh.names() == names and fresh is not DETECTORS
    assert register_builtin_detectors(fresh).names() == names  # idempotent
    with pytest.raises(UsageError, match="unknown detector"):
        Registry("detector").create("weights")


# smaller budgets where a detector's defaults would make the contract test slow (the paper's
# 1,600-prefix Neural-Cleanse search, the phrase search's beam; the searches themselves are tested in
# tests/detect/test_baselines.py and tests/detect/test_phrases.py)
CONTRACT_ARGS = {"neural-cleanse": {"starts": 8, "rounds": 1, "swaps": 8},
                 "phrases": {"anchors": 8, "global_top": 4, "beam": 2, "length": 3}}


@pytest.mark.parametrize("name", register_builtin_detectors(Registry("detector")).names())
def test_every_registered_detector_honours_the_contract(tiny_adapters, name, tmp_path):
    """Every registered detector scans a real (tiny) poisoned adapter through the scan's context
    (base and shipped probe inputs handed over), records the arguments it was built with (they
    rebuild the same detector), and fails cleanly on a missing adapter."""
    from lorascan.errors import LorascanError
    from lorascan.probe.inputs import load_probe_inputs

    registry = register_builtin_detectors(Registry("detector"))
    det = registry.create(name, **CONTRACT_ARGS.get(name, {}))
    # a detector of chat adapters reads the causal-LM adapter as the scan reads one that does
    # not answer in label words; every other one the seq-cls adapter
    base, task, kind = (("tiny-bert", "seq-cls", "seq-cls") if det.tasks is None or "seq-cls" in det.tasks
                        else ("tiny-qwen2", det.tasks[0], "label-word"))
    adapter = tiny_adapters[(base, kind, "poisoned")]
    result = det.scan(ScanContext.build(adapter, base=base, task=task, probes=load_probe_inputs()))
    assert result.detector == name == det.name
    assert result.detector_args == det.args and registry.create(name, **det.args).args == det.args
    json.dumps(result.to_dict())
    assert result.scores and all(v is None or isinstance(v, float) for v in result.scores.values())
    assert isinstance(result.verdict, Verdict) and result.verdict.label == "uncalibrated"
    assert det.summary and det.cost >= 0
    with pytest.raises(LorascanError):
        det.scan(ScanContext.build(tmp_path / "missing", base=base, probes=load_probe_inputs()))
    with pytest.raises(ValueError):
        Verdict("maybe")
