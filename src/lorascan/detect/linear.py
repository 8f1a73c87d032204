"""A regularised logistic regression over a detector's scores, stored in its profile as plain
JSON (issue 12's weight detector v2; the approach of arXiv 2602.15195, a logistic regression on
spectral ΔW statistics, here fitted per base on our own cohort).

Fitting (scikit-learn, :func:`fit_linear`): each feature is log10-transformed when it is
positive on every training adapter (norms span orders of magnitude across ranks and learning
rates), standardised, and fed to an L2 logistic regression with balanced class weights. The
regularisation strength C is chosen from :data:`CS` by the log-loss of grouped cross-validation
(log-loss, not AUC: the scan's bounds need probabilities that are calibrated, not only ranked;
the groups
are trigger families, so the choice rewards what carries over to a family the model has not
seen; clean adapters are spread over the folds), and the same grouped folds give every training
adapter an out-of-fold score: those, not the in-sample fit, are what the profile's bounds are
calibrated on. Scoring (:meth:`LinearModel.score`) is numpy only: the coefficients, means and
scales come from the profile, never from a pickle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from lorascan.errors import DataError

CS = (0.01, 0.1, 1.0, 10.0)
MAX_FEATURES = 1024
MIN_CLASS = 2


@dataclass(frozen=True)
class LinearModel:
    """p = σ(Σ coef_i · (t_i(x_i) - mean_i) / scale_i + intercept), t_i = log10 where ``log``.

    The score is the probability, not the logit: it lies in [0, 1] with clean adapters near 0,
    which is what the scan's block bound is defined for (3x the review bound, or halfway to 1;
    :func:`lorascan.detect.verdict.scan_bounds`); a logit is negative on clean adapters."""

    name: str
    features: tuple[str, ...]
    log: tuple[bool, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    C: float
    n_train: int
    cv_auc: float | None = None

    def __post_init__(self) -> None:
        n = len(self.features)
        if not 0 < n <= MAX_FEATURES or any(len(v) != n for v in (self.log, self.mean, self.scale, self.coef)):
            raise DataError(f"linear model {self.name!r}: features, log, mean, scale and coef must have one "
                            f"entry per feature (1..{MAX_FEATURES})")
        nums = (*self.mean, *self.scale, *self.coef, self.intercept, self.C)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in nums):
            raise DataError(f"linear model {self.name!r}: every number must be finite")
        if any(s <= 0 for s in self.scale) or self.C <= 0:
            raise DataError(f"linear model {self.name!r}: scales and C must be > 0")

    def score(self, scores: Mapping[str, float | None]) -> float | None:
        """The probability for one adapter's scores; None when a feature is missing, not finite, or
        not positive where the model takes its log (the adapter is not like the cohort)."""
        x = []
        for feat, log in zip(self.features, self.log):
            v = scores.get(feat)
            if v is None or not math.isfinite(v) or (log and v <= 0):
                return None
            x.append(math.log10(v) if log else float(v))
        z = (np.asarray(x) - np.asarray(self.mean)) / np.asarray(self.scale)
        logit = float(np.dot(z, np.asarray(self.coef)) + self.intercept)
        return sigmoid(logit) if math.isfinite(logit) else None

    def to_record(self) -> dict[str, Any]:
        return {"name": self.name, "features": list(self.features), "log": list(self.log), "mean": list(self.mean),
                "scale": list(self.scale), "coef": list(self.coef), "intercept": self.intercept, "C": self.C,
                "n_train": self.n_train, "cv_auc": self.cv_auc}

    @classmethod
    def from_record(cls, rec: Any, where: str = "linear model") -> "LinearModel":
        if not isinstance(rec, dict):
            raise DataError(f"{where}: expected an object")
        try:
            return cls(name=str(rec["name"]), features=tuple(str(f) for f in rec["features"]),
                       log=tuple(bool(b) for b in rec["log"]), mean=tuple(rec["mean"]), scale=tuple(rec["scale"]),
                       coef=tuple(rec["coef"]), intercept=rec["intercept"], C=rec["C"], n_train=int(rec["n_train"]),
                       cv_auc=rec.get("cv_auc"))
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"{where}: malformed ({type(err).__name__}: {str(err)[:80]})") from None


def sigmoid(t: float) -> float:
    """1 / (1 + e^-t) without overflow for large |t|."""
    if t >= 0:
        return 1.0 / (1.0 + math.exp(-t))
    e = math.exp(t)
    return e / (1.0 + e)


def _design(rows: Sequence[Mapping[str, float | None]], features: Sequence[str], log: Sequence[bool]) -> np.ndarray:
    x = np.array([[float(r[f]) for f in features] for r in rows], dtype=np.float64)  # type: ignore[arg-type]
    for j, take_log in enumerate(log):
        if take_log:
            x[:, j] = np.log10(x[:, j])
    return x


def usable_features(rows: Sequence[Mapping[str, float | None]], exclude: Sequence[str] = ()) -> list[str]:
    """Features finite for every row, not constant, in sorted order."""
    keys = sorted({k for r in rows for k in r} - set(exclude))
    out = []
    for k in keys:
        vals = [r.get(k) for r in rows]
        if all(v is not None and math.isfinite(v) for v in vals) and len({float(v) for v in vals}) > 1:  # type: ignore[arg-type]
            out.append(k)
    return out[:MAX_FEATURES]


def group_folds(labels: Sequence[int], groups: Sequence[str | None], k: int = 5) -> list[np.ndarray]:
    """Test-index arrays: poisoned adapters by group (a family never split across folds), clean
    adapters dealt round-robin; at most ``k`` folds, each with both classes where possible."""
    pos_groups = sorted({str(g) for g, y in zip(groups, labels) if y == 1})
    k = max(2, min(k, len(pos_groups) or 2))
    fold_of: dict[int, int] = {}
    for i, (g, y) in enumerate(zip(groups, labels)):
        if y == 1:
            fold_of[i] = pos_groups.index(str(g)) % k
    clean = [i for i, y in enumerate(labels) if y == 0]
    for j, i in enumerate(clean):
        fold_of[i] = j % k
    return [np.array(sorted(i for i, f in fold_of.items() if f == fold)) for fold in range(k)]


def _fit(x: np.ndarray, y: np.ndarray, C: float) -> tuple[Any, np.ndarray, np.ndarray]:
    from sklearn.linear_model import LogisticRegression

    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale <= 0] = 1.0
    clf = LogisticRegression(C=C, class_weight="balanced", max_iter=5000)
    clf.fit((x - mean) / scale, y)
    return clf, mean, scale


def _oof(x: np.ndarray, y: np.ndarray, folds: Sequence[np.ndarray], C: float) -> np.ndarray | None:
    out = np.full(len(y), np.nan)
    for test in folds:
        train = np.setdiff1d(np.arange(len(y)), test)
        if len(test) == 0 or len(set(y[train])) < 2:
            return None
        clf, mean, scale = _fit(x[train], y[train], C)
        out[test] = [sigmoid(float(t)) for t in clf.decision_function((x[test] - mean) / scale)]
    return out


def fit_linear(name: str, rows: Sequence[Mapping[str, float | None]], labels: Sequence[int],
               groups: Sequence[str | None], exclude: Sequence[str] = ()) -> tuple[LinearModel, list[float]]:
    """The model fitted on every row (C by grouped CV) and each row's out-of-fold probability."""
    from sklearn.metrics import log_loss, roc_auc_score

    y = np.asarray(labels, dtype=int)
    if min(int(y.sum()), int(len(y) - y.sum())) < MIN_CLASS:
        raise DataError(f"a linear model needs at least {MIN_CLASS} clean and {MIN_CLASS} poisoned adapters")
    features = usable_features(rows, exclude)
    if not features:
        raise DataError("no feature is finite and varying over the cohort")
    log = [all(float(r[f]) > 0 for r in rows) for f in features]  # type: ignore[arg-type]
    x = _design(rows, features, log)
    folds = group_folds(labels, groups)
    best: tuple[float, float, np.ndarray] | None = None
    for C in CS:
        oof = _oof(x, y, folds, C)
        if oof is None:
            continue
        loss = float(log_loss(y, np.clip(oof, 1e-12, 1 - 1e-12), labels=[0, 1]))
        if best is None or loss < best[0]:
            best = (loss, C, oof)
    if best is None:
        raise DataError("the cohort's folds cannot each be trained on (too few adapters per class)")
    _, C, oof = best
    auc = float(roc_auc_score(y, oof))
    clf, mean, scale = _fit(x, y, C)
    model = LinearModel(name=name, features=tuple(features), log=tuple(log), mean=tuple(float(v) for v in mean),
                        scale=tuple(float(v) for v in scale), coef=tuple(float(v) for v in clf.coef_[0]),
                        intercept=float(clf.intercept_[0]), C=float(C), n_train=len(y), cv_auc=auc)
    return model, [float(v) for v in oof]
