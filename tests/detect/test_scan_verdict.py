"""The scan's three-level verdict: review and block bounds from the clean spread, voting by the
profile's AUC CI, and the combination rule (detect/verdict.py)."""

from __future__ import annotations

import math

import pytest

from lorascan.detect.calibrate import CohortScores, calibrate
from lorascan.detect.verdict import (BLOCK_FACTOR, SPREAD_SD, Judgement, combine, judge, scan_bounds)

CLEAN = [0.010, 0.020, 0.021, 0.020, 0.015]
POISONED = [0.50, 0.70, 0.30, 0.60, 0.40]


def _profile(clean=CLEAN, poisoned=POISONED, feature="outlier_gap"):
    scores = tuple({feature: v} for v in (*clean, *poisoned))
    cohort = CohortScores(tuple(f"a{i}" for i in range(len(scores))), (0,) * len(clean) + (1,) * len(poisoned), scores)
    return calibrate(cohort, detector="behavioral", view="scan", base_model="minilm", conditions={"task": "seq-cls"},
                     decision=(feature,), direction="+", n_boot=200)


def test_bounds_widen_the_fpr0_threshold_by_the_clean_spread():
    b = scan_bounds(_profile(), "outlier_gap")
    mean = sum(CLEAN) / len(CLEAN)
    sd = math.sqrt(sum((c - mean) ** 2 for c in CLEAN) / (len(CLEAN) - 1))
    assert b.review == pytest.approx(max(max(CLEAN), mean + SPREAD_SD * sd))
    assert b.block == pytest.approx(BLOCK_FACTOR * b.review)
    assert b.level(0.0167) == "allow" and b.level(b.review * 1.5) == "review" and b.level(0.5) == "block"


def test_judge_levels_votes_and_uncalibrated():
    p = _profile()
    ctx = {"base_model": "minilm", "task": "seq-cls"}
    assert judge({"outlier_gap": 0.01}, p, ctx).level == "allow"
    assert judge({"outlier_gap": 0.7}, p, ctx).level == "block"
    assert judge({"outlier_gap": 0.7}, None, ctx).level == "review"  # no profile: never allow
    assert judge({"outlier_gap": 0.01}, p, {"base_model": "other", "task": "seq-cls"}).level == "review"
    assert judge({"outlier_gap": None}, p, ctx).level == "review"
    assert judge({"outlier_gap": 0.7}, p, ctx).votes
    chance = _profile(clean=[0.1, 0.3, 0.2, 0.4, 0.25], poisoned=[0.15, 0.35, 0.25, 0.3, 0.2])
    assert not judge({"outlier_gap": 0.9}, chance, ctx).votes  # AUC near chance: reported, not voting
    lucky = _profile(clean=[0.001, 0.002, 0.0015], poisoned=[0.0021, 0.0022, 0.0023])  # a perfect split of 3 + 3
    assert not judge({"outlier_gap": 0.0025}, lucky, ctx).votes


def test_block_bound_stays_reachable_for_scores_in_unit_range():
    b = scan_bounds(_profile(clean=[0.1, 0.2, 0.15, 0.3, 0.12]), "outlier_gap")
    assert b.review > 0.3 and b.block == pytest.approx((1 + b.review) / 2) and b.block < 1


def test_combination_rule():
    allow, review, block = (Judgement(lv, True, (lv,)) for lv in ("allow", "review", "block"))
    silent = Judgement("block", False, ("weak",))
    assert combine({"a": allow, "w": silent})["label"] == "allow"
    assert combine({"a": allow, "b": review})["label"] == "review"
    assert combine({"a": review, "b": block})["label"] == "block"
    assert combine({"a": allow}, [{"kind": "decoy_modules", "level": "review", "message": "m"}])["label"] == "review"
    assert combine({})["label"] == "review"


def test_a_family_specific_score_votes_when_it_blocked_a_cohort_backdoor():
    """Low AUC over many families, yet it blocks the family it probes: it votes."""
    p = _profile(clean=[0.02, 0.03, 0.025], poisoned=[0.6, 0.01, 0.02, 0.015])
    j = judge({"outlier_gap": 0.7}, p, {"base_model": "minilm", "task": "seq-cls"})
    assert j.votes and j.level == "block" and j.reasons[0].startswith("outlier_gap = 0.7: block")
