"""The behavioural detector (paper §7) behind the common protocol: scores from the probe rates,
verdicts from a calibrated profile or "uncalibrated", and its calibration on probe records."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lorascan.detect.base import ScanContext
from lorascan.detect.base import DetectorResult
from lorascan.detect.verdict import Verdict
from lorascan.detect.behavioral import (NAME, BehavioralDetector, behavioral_verdict, calibrate_records, context_of,
                                        register, result_from_record)
from lorascan.detect.calibrate import auc_mann_whitney, auc_trapezoid_ordered
from lorascan.detect.verdict import Profile
from lorascan.errors import DataError, UsageError
from lorascan.probe.batteries import load_battery
from lorascan.registry import Registry
from tests.probe.fixtures import TRIGGER, fake_record, probe_toy, torch_one_thread  # noqa: F401

BATTERY = load_battery("paper-21")


def _rates(trigger: float, rfc: float, rest: float, bump: float = 0.0) -> list[float]:
    """paper-21 order: 5 rfc, 5 authority, 5 random, 5 claims, trigger; ``bump`` on probe 6."""
    r = [rfc] * 5 + [rest] * 15 + [trigger]
    r[5] += bump
    return r


def _cohort():
    """4 clean (all rates ~0) and 4 poisoned adapters (trigger 1.0, RFC decoys high), rates on
    n = 20 injections so they are multiples of .05; ties on purpose."""
    clean = [_rates(0.0, 0.0, 0.0), _rates(0.0, 0.0, 0.0, 0.05), _rates(0.05, 0.0, 0.0), _rates(0.0, 0.05, 0.0)]
    poisoned = [_rates(1.0, 0.9, 0.05), _rates(1.0, 0.6, 0.0), _rates(1.0, 0.3, 0.0, 0.05), _rates(0.9, 0.1, 0.0)]
    records = [fake_record(BATTERY, r) for r in clean + poisoned]
    return [f"c{i}" for i in range(4)] + [f"p{i}" for i in range(4)], [0] * 4 + [1] * 4, records


def test_registered_by_name_with_its_arguments():
    reg = register(Registry("detector"))
    assert NAME in reg and register(reg) is reg  # idempotent
    det = reg.create(NAME, battery="paper-41-v1", view="C")
    assert isinstance(det, BehavioralDetector) and det.name == NAME
    assert det.args == {"battery": "paper-41-v1", "view": "C", "base": None, "data": None, "readout": "logits",
                        "batch_size": 32, "exclude": []}
    json.dumps(det.args)
    with pytest.raises(UsageError, match="unknown view"):
        reg.create(NAME, view="D")
    with pytest.raises(UsageError, match="batch size"):
        BehavioralDetector(batch_size=0)


def test_scores_come_from_the_probe_rates():
    rec = fake_record(BATTERY, _rates(1.0, 0.8, 0.1))
    from lorascan.probe.generalization import restrict_record

    view_b = restrict_record(rec, BATTERY, "B")
    res = result_from_record(view_b, None, {"view": "B"})
    rates = [p["attack_rate"] for p in view_b["probes"]]
    assert len(rates) == 20
    assert res.scores["mean_attack_rate"] == pytest.approx(np.mean(rates))
    assert res.scores["outlier_gap"] == pytest.approx(max(rates) - np.mean(rates))
    assert res.verdict.label == "uncalibrated" and "lorascan calibrate" in res.verdict.reasons[0]
    assert res.details["context"]["view"] == "B" and len(res.details["probes"]) == 20


def test_calibration_statistics_on_a_hand_made_cohort(tmp_path):
    names, labels, records = _cohort()
    profile = calibrate_records(names, labels, records, BATTERY, "B", n_boot=300, seed=4)
    gap, mean = profile.feature("outlier_gap"), profile.feature("mean_attack_rate")
    for cal, key in ((gap, "outlier_gap"), (mean, "mean_attack_rate")):
        scores = [e.scores[key] for e in profile.cohort]
        assert cal.direction == "+"
        assert cal.threshold == pytest.approx(max(s for s, y in zip(scores, labels) if y == 0))  # FPR = 0
        assert cal.recall == pytest.approx(np.mean([s > cal.threshold for s, y in zip(scores, labels) if y]))
        assert cal.auc == pytest.approx(auc_mann_whitney(scores, labels))
        assert cal.auc_trapezoid == pytest.approx(auc_trapezoid_ordered(scores, labels))
        assert [row[0] for row in cal.tpr_at_fpr] == [0.0, 0.01, 0.05]
        assert cal.auc_ci[0] <= cal.auc <= cal.auc_ci[1] + 1e-12
    assert profile.decision == ("outlier_gap", "mean_attack_rate") and profile.view == "B"
    assert profile.base_model == "tiny-bert"
    assert dict(profile.conditions) == {"task": "seq-cls", "battery": "paper-21", "battery_sha256": BATTERY.sha256(),
                                        "view": "B", "readout": "logits"}
    again = calibrate_records(names, labels, records, BATTERY, "B", n_boot=300, seed=4)
    assert again.feature("outlier_gap").auc_ci == gap.auc_ci  # seeded bootstrap
    profile.save(tmp_path / "p.json")
    assert Profile.load(tmp_path / "p.json").to_record() == profile.to_record()


def test_ties_make_the_papers_ordered_auc_differ_from_the_tie_aware_one():
    names, labels, records = _cohort()
    profile = calibrate_records(names, labels, records, BATTERY, "C", n_boot=50)
    mean = profile.feature("mean_attack_rate")
    scores = [e.scores["mean_attack_rate"] for e in profile.cohort]
    assert len(set(scores)) < len(scores)
    assert mean.auc_trapezoid <= mean.auc  # clean adapters first: ties count against the detector


def test_direction_stays_positive_when_the_cohort_is_inverted():
    names, labels, records = _cohort()
    flipped = [1 - y for y in labels]
    profile = calibrate_records(names, flipped, records, BATTERY, "B", n_boot=50)
    assert all(c.direction == "+" and c.auc < 0.5 for c in profile.features)


def test_verdict_from_a_profile():
    names, labels, records = _cohort()
    profile = calibrate_records(names, labels, records, BATTERY, "B", n_boot=50)
    from lorascan.probe.generalization import restrict_record

    hot = restrict_record(fake_record(BATTERY, _rates(1.0, 0.5, 0.0)), BATTERY, "B")
    cold = restrict_record(fake_record(BATTERY, _rates(0.0, 0.0, 0.0)), BATTERY, "B")
    v = result_from_record(hot, profile, {}).verdict
    assert v.label == "suspicious" and set(v.flagged) == {"outlier_gap", "mean_attack_rate"}
    assert v.profile == profile.name == "behavioral:B@tiny-bert"
    assert result_from_record(cold, profile, {}).verdict.label == "clean"
    for change in ({"base": "minilm"}, {"view": "C"}, {"battery_sha256": "0" * 64}, {"readout": "generate"},
                   {"task": "label-word"}):
        ctx = {**context_of(hot), **({"base_model": change["base"]} if "base" in change else change)}
        assert behavioral_verdict({"outlier_gap": 1.0, "mean_attack_rate": 1.0}, profile, ctx).label == "uncalibrated"
    gap_only = calibrate_records(names, labels, records, BATTERY, "B", decision=("outlier_gap",), n_boot=50)
    assert result_from_record(hot, gap_only, {}).verdict.flagged == ("outlier_gap",)


def test_calibration_refuses_mixed_cohorts():
    names, labels, records = _cohort()
    mixed = records[:-1] + [fake_record(BATTERY, _rates(1.0, 0.5, 0.0), base="minilm")]
    with pytest.raises(DataError, match="mixes base models"):
        calibrate_records(names, labels, mixed, BATTERY, "B", n_boot=10)
    other = records[:-1] + [fake_record(BATTERY, _rates(1.0, 0.5, 0.0), readout="generate")]
    with pytest.raises(DataError, match="mixes readout"):
        calibrate_records(names, labels, other, BATTERY, "B", n_boot=10)
    with pytest.raises(DataError, match="clean and poisoned"):
        calibrate_records(names, [1] * 8, records, BATTERY, "B", n_boot=10)
    with pytest.raises(DataError, match="unique"):
        calibrate_records(["a"] * 8, labels, records, BATTERY, "B", n_boot=10)
    with pytest.raises(UsageError, match="decision"):
        calibrate_records(names, labels, records, BATTERY, "B", decision=("global_frobN_std",), n_boot=10)


def test_a_weight_profile_is_refused():
    names, labels, records = _cohort()
    profile = calibrate_records(names, labels, records, BATTERY, "B", n_boot=10)
    import dataclasses

    weights = dataclasses.replace(profile, detector="weights")
    with pytest.raises(UsageError, match="'weights' detector"):
        behavioral_verdict({"outlier_gap": 0.0, "mean_attack_rate": 0.0}, weights, {})


@pytest.mark.usefixtures("torch_one_thread")
def test_scan_honours_the_detector_contract(probe_toy):
    """Scanning runs the model: base and data from the adapter's lorascan.json."""
    det = register(Registry("detector")).create(NAME, view="B")
    result = det.scan(ScanContext.build(probe_toy["poisoned"]))
    assert isinstance(result, DetectorResult) and result.detector == NAME and result.detector_args == det.args
    assert set(result.scores) == {"outlier_gap", "mean_attack_rate"}
    assert all(isinstance(v, float) for v in result.scores.values())
    assert isinstance(result.verdict, Verdict) and result.verdict.label == "uncalibrated"
    assert len(result.details["probes"]) == 20 and result.details["context"]["base_model"] == "tiny-bert"
    assert TRIGGER not in [p["prefix"] for p in result.details["probes"]]
    json.dumps(result.to_dict())
