"""Calibration of any detector's scores on a labelled cohort (label 1 = poisoned), paper §7-§8.

For each feature: tie-aware ROC AUC (Mann-Whitney U / n1·n0, ties count one half) and, for
comparison, the paper's trapezoid over scores sorted with ties broken by input order (it gives
battery C gap .908 where the tie-aware AUC is .925); the better direction ("+": poisoned score
higher, "-": lower; paper §8 takes the better of the two); the FPR=0 threshold (the most extreme
clean score; flag strictly beyond it, paper §7) and its recall; TPR at FPR <= 0, .01, .05 (with
few clean adapters these coincide: floor(alpha·n_clean) false positives are allowed); stratified
bootstrap 95% percentile intervals (seeded numpy Generator) for AUC and for FPR=0 recall, the
threshold re-derived in every resample; and the tie-aware ROC points.

:class:`Profile` (in :mod:`lorascan.detect.verdict`) stores the result per base model;
:func:`verdict` applies it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from lorascan.detect.verdict import CohortEntry, FeatureCalibration, Profile, verdict
from lorascan.errors import DataError, UsageError

__all__ = ["CohortEntry", "FeatureCalibration", "Profile", "verdict", "auc_mann_whitney", "auc_trapezoid_ordered",
           "best_direction", "fpr0_threshold", "tpr_at_fpr", "roc_points", "bootstrap_ci", "calibrate_feature",
           "calibrate"]

FPR_LEVELS = (0.0, 0.01, 0.05)


def _arrays(scores: Sequence[float], labels: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels)
    if s.ndim != 1 or s.shape != y.shape:
        raise UsageError(f"scores and labels must be equal-length lists ({s.shape} vs {y.shape})")
    if not np.isin(y, (0, 1)).all():
        raise DataError("labels must be 0 (clean) or 1 (poisoned)")
    if not np.isfinite(s).all():
        raise DataError("scores must be finite numbers")
    pos, neg = s[y == 1], s[y == 0]
    if pos.size == 0 or neg.size == 0:
        raise DataError(f"calibration needs clean and poisoned adapters (got {neg.size} clean, {pos.size} poisoned)")
    return s, pos, neg


def _oriented(values: np.ndarray, direction: str) -> np.ndarray:
    if direction not in ("+", "-"):
        raise UsageError(f"direction must be '+' or '-', got {direction!r}")
    return values if direction == "+" else -values


def auc_mann_whitney(scores: Sequence[float], labels: Sequence[int], direction: str = "+") -> float:
    """P(poisoned score > clean score) + ½·P(tie): the tie-aware ROC AUC."""
    _, pos, neg = _arrays(scores, labels)
    pos, neg = _oriented(pos, direction), _oriented(neg, direction)
    neg_sorted = np.sort(neg)
    below = np.searchsorted(neg_sorted, pos, side="left")
    not_above = np.searchsorted(neg_sorted, pos, side="right")
    return float(np.sum(below + not_above) / (2.0 * pos.size * neg.size))


def auc_trapezoid_ordered(scores: Sequence[float], labels: Sequence[int], direction: str = "+") -> float:
    """The paper's AUC: sort by score (descending, stable, so tied adapters keep their input
    order), step through one adapter at a time, integrate TPR over FPR with trapezoids."""
    s, _, _ = _arrays(scores, labels)
    y = np.asarray(labels)
    order = np.argsort(-_oriented(s, direction), kind="stable")
    hits = y[order]
    tpr = np.concatenate(([0.0], np.cumsum(hits) / hits.sum()))
    fpr = np.concatenate(([0.0], np.cumsum(1 - hits) / (hits.size - hits.sum())))
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def best_direction(scores: Sequence[float], labels: Sequence[int]) -> tuple[str, float]:
    """The direction with the higher tie-aware AUC ("+" on a tie) and that AUC."""
    auc = auc_mann_whitney(scores, labels, "+")
    return ("+", auc) if auc >= 0.5 else ("-", 1.0 - auc)


def tpr_at_fpr(scores: Sequence[float], labels: Sequence[int], direction: str, fpr: float) -> tuple[float, float, float]:
    """(threshold, TPR, achieved FPR) of the most sensitive rule "flag if beyond threshold"
    whose false-positive rate is at most ``fpr``."""
    if not 0.0 <= fpr < 1.0:
        raise UsageError(f"FPR level must be in [0, 1), got {fpr}")
    _, pos, neg = _arrays(scores, labels)
    pos, neg = _oriented(pos, direction), _oriented(neg, direction)
    allowed = math.floor(fpr * neg.size + 1e-9)
    thr = np.sort(neg)[::-1][allowed]
    threshold = float(thr if direction == "+" else -thr)
    return threshold, float(np.mean(pos > thr)), float(np.mean(neg > thr))


def fpr0_threshold(scores: Sequence[float], labels: Sequence[int], direction: str = "+") -> tuple[float, float]:
    """Paper §7: the threshold is the most extreme clean score, flag strictly beyond it.
    Returns (threshold, recall)."""
    threshold, tpr, _ = tpr_at_fpr(scores, labels, direction, 0.0)
    return threshold, tpr


def roc_points(scores: Sequence[float], labels: Sequence[int], direction: str = "+") -> list[tuple[float, float]]:
    """Tie-aware ROC: one (FPR, TPR) point per distinct score, from (0, 0) to (1, 1)."""
    _, pos, neg = _arrays(scores, labels)
    pos, neg = _oriented(pos, direction), _oriented(neg, direction)
    points = [(0.0, 0.0)]
    for t in np.unique(np.concatenate((pos, neg)))[::-1]:
        points.append((float(np.mean(neg >= t)), float(np.mean(pos >= t))))
    return points


def bootstrap_ci(scores: Sequence[float], labels: Sequence[int], direction: str, n_boot: int = 2000,
                 seed: int = 0, level: float = 0.95) -> dict[str, tuple[float, float]]:
    """Percentile intervals of AUC and FPR=0 recall over stratified resamples (clean and
    poisoned adapters resampled separately, so every resample has both)."""
    if n_boot < 1:
        raise UsageError(f"bootstrap resamples must be >= 1, got {n_boot}")
    _, pos, neg = _arrays(scores, labels)
    pos, neg = _oriented(pos, direction), _oriented(neg, direction)
    rng = np.random.Generator(np.random.PCG64(seed))
    w_pos = rng.multinomial(pos.size, np.full(pos.size, 1.0 / pos.size), size=n_boot).astype(np.float64)
    w_neg = rng.multinomial(neg.size, np.full(neg.size, 1.0 / neg.size), size=n_boot).astype(np.float64)
    wins = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    aucs = np.einsum("bi,ij,bj->b", w_pos, wins, w_neg) / (pos.size * neg.size)
    thr = np.where(w_neg > 0, neg[None, :], -np.inf).max(axis=1)
    recalls = (w_pos * (pos[None, :] > thr[:, None])).sum(axis=1) / pos.size
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    return {"auc": tuple(float(v) for v in np.percentile(aucs, q)),  # type: ignore[dict-item]
            "recall": tuple(float(v) for v in np.percentile(recalls, q))}


def calibrate_feature(name: str, scores: Sequence[float], labels: Sequence[int], n_boot: int = 2000,
                      seed: int = 0, direction: str | None = None) -> FeatureCalibration:
    """Everything above for one feature, in its better direction (``direction=None``, paper
    §8) or in a fixed one ("+": flag scores above the threshold, "-": below), whatever the
    cohort's AUC in it."""
    if direction is None:
        direction, auc = best_direction(scores, labels)
    else:
        auc = auc_mann_whitney(scores, labels, direction)
    threshold, recall = fpr0_threshold(scores, labels, direction)
    ci = bootstrap_ci(scores, labels, direction, n_boot, seed)
    n_pos = int(np.sum(np.asarray(labels) == 1))
    return FeatureCalibration(
        feature=name, direction=direction, threshold=threshold, auc=auc,
        auc_trapezoid=auc_trapezoid_ordered(scores, labels, direction), recall=recall,
        tpr_at_fpr=tuple((lvl, *tpr_at_fpr(scores, labels, direction, lvl)) for lvl in FPR_LEVELS),
        auc_ci=ci["auc"], recall_ci=ci["recall"], n_clean=len(labels) - n_pos, n_poisoned=n_pos,
        roc=tuple(roc_points(scores, labels, direction)))


@dataclass(frozen=True)
class CohortScores:
    """Scores of a labelled cohort: one row per adapter, in cohort order."""

    names: tuple[str, ...]
    labels: tuple[int, ...]
    scores: tuple[Mapping[str, float | None], ...]


def calibrate(cohort: CohortScores, *, detector: str, view: str, base_model: str | None,
              conditions: Mapping[str, str] | None = None, decision: Sequence[str] | None = None,
              features: Sequence[str] | None = None, n_boot: int = 2000, seed: int = 0,
              detector_args: Mapping[str, Any] | None = None, notes: Sequence[str] = (),
              direction: str | None = None, base_fingerprint: Mapping[str, Any] | None = None) -> Profile:
    """A :class:`Profile` from a cohort. ``features`` defaults to every score present and
    finite for all adapters (the others are named in ``notes``); ``decision`` (flag if any of
    these is beyond its threshold) defaults to the single feature with the best tie-aware AUC,
    the first listed on a tie. ``direction``: None = each feature's better direction, "+" or
    "-" = that one for all. ``base_fingerprint``: the cohort's shared base shape, recorded so
    the profile does not apply to adapters of another base."""
    if direction not in (None, "+", "-"):
        raise UsageError(f"direction must be None, '+' or '-', got {direction!r}")
    if len(set(cohort.names)) != len(cohort.names):
        raise DataError("cohort adapter names must be unique")
    notes = list(notes)
    candidates = list(features) if features else sorted({k for row in cohort.scores for k in row})
    usable = []
    for feat in candidates:
        values = [row.get(feat) for row in cohort.scores]
        if all(v is not None and math.isfinite(v) for v in values):
            usable.append(feat)
        elif features:
            raise DataError(f"feature {feat!r} is missing or undefined for some cohort adapters")
        else:
            notes.append(f"feature {feat!r} skipped: missing or undefined for some adapters")
    if not usable:
        raise DataError("no feature is defined for every adapter of the cohort")
    cals = tuple(calibrate_feature(f, [row[f] for row in cohort.scores], cohort.labels,  # type: ignore[misc]
                                   n_boot, seed, direction) for f in usable)
    if decision:
        unknown = [d for d in decision if d not in usable]
        if unknown:
            raise UsageError(f"decision feature {unknown[0]!r} is not calibrated (known: {', '.join(usable)})")
        chosen = tuple(decision)
    else:
        chosen = (max(cals, key=lambda c: (c.auc, -usable.index(c.feature))).feature,)
    entries = tuple(CohortEntry(n, int(y), {k: v for k, v in row.items() if k in usable})
                    for n, y, row in zip(cohort.names, cohort.labels, cohort.scores))
    return Profile(detector=detector, view=view, base_model=base_model,
                   conditions=tuple(sorted((conditions or {}).items())), decision=chosen, features=cals,
                   cohort=entries, n_boot=n_boot, seed=seed, notes=tuple(notes),
                   detector_args=tuple(sorted((detector_args or {}).items())),
                   base_fingerprint=tuple(sorted(base_fingerprint.items())) if base_fingerprint else None)
