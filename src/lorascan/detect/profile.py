"""Detector profiles: calibrated thresholds for one base model, as a versioned JSON record,
and the verdict they give (paper §7 decision rule: flag if any decision feature is beyond its
FPR=0 threshold; §8: weight thresholds do not transfer across base models or ranks, so a
profile only decides for adapters of its own base model and conditions).

A profile applies to an adapter when (:func:`applies`)

- the base model names match as whole strings (:func:`base_key`: case, slashes and a trailing
  slash are ignored, and a packaged model's path is taken from ``site-packages/`` on, so the
  same asset in another virtual environment matches; a last-path-segment match is not enough:
  the ``minilm`` alias's path ends in ``.../model``, like many local folders);
- when both the profile and the adapter carry a base fingerprint (model_type, hidden_size,
  num_hidden_layers, ... from lorascan.json), the fingerprints are equal;
- every recorded condition (rank, scaling, battery, view, ...) is present in the adapter's
  context with the same value. A condition the context lacks is "uncalibrated", never skipped.

Thresholds, AUCs and recalls must be finite (a NaN threshold would make every comparison false,
i.e. every adapter "clean"); profile files with ``NaN``/``Infinity`` constants are refused.

Built by :func:`lorascan.detect.calibrate.calibrate`; this module holds no statistics.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from lorascan.config import from_dict, to_dict
from lorascan.detect.adapter import check_fingerprint
from lorascan.detect.base import Verdict
from lorascan.detect.jsonfile import MAX_PROFILE_BYTES, read_json_untrusted
from lorascan.errors import DataError, LorascanError
from lorascan.records import SCHEMA_VERSION, record_header, write_json_atomic

KIND = "detector_profile"


@dataclass(frozen=True)
class FeatureCalibration:
    """One feature on one cohort. ``direction`` "+" flags scores above ``threshold``, "-" below.
    ``tpr_at_fpr`` rows are (FPR level, threshold, TPR, achieved FPR); ``roc`` (FPR, TPR)."""

    feature: str
    direction: str
    threshold: float
    auc: float
    auc_trapezoid: float
    recall: float
    tpr_at_fpr: tuple[tuple[float, ...], ...]
    auc_ci: tuple[float, ...]
    recall_ci: tuple[float, ...]
    n_clean: int
    n_poisoned: int
    roc: tuple[tuple[float, ...], ...]

    def __post_init__(self) -> None:
        if self.direction not in ("+", "-"):
            raise ValueError(f"direction must be '+' or '-', got {self.direction!r}")
        if not math.isfinite(self.threshold):
            raise ValueError(f"threshold of {self.feature!r} must be a finite number, got {self.threshold}")
        for key in ("auc", "auc_trapezoid", "recall"):
            value = getattr(self, key)
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise ValueError(f"{key} of {self.feature!r} must be in [0, 1], got {value}")
        rows = (*self.tpr_at_fpr, self.auc_ci, self.recall_ci, *self.roc)
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for row in rows for v in row):
            raise ValueError(f"the ROC, TPR and interval rows of {self.feature!r} must hold finite numbers")

    def flags(self, score: float) -> bool:
        return score > self.threshold if self.direction == "+" else score < self.threshold


@dataclass(frozen=True)
class CohortEntry:
    name: str
    label: int
    scores: Mapping[str, float | None]


def base_key(name: str) -> str:
    """The form base model names are compared in (module docstring)."""
    key = name.replace("\\", "/").rstrip("/").lower()
    marker = "/site-packages/"
    return key.rsplit(marker, 1)[1] if marker in key else key


def same_base_model(a: str | None, b: str | None) -> bool:
    """Whether two declared base models are the same: whole names compared by :func:`base_key`
    (a hub id matches itself in any case, not a local folder that happens to share its last
    segment). Two undeclared bases match each other, never a declared one."""
    if a is None or b is None:
        return a is None and b is None
    return base_key(a) == base_key(b)


@dataclass(frozen=True)
class Profile:
    """Per-feature calibrations of a detector for one base model (and conditions such as rank
    and scaling), the decision features, and the cohort it came from."""

    detector: str
    view: str
    base_model: str | None
    conditions: tuple[tuple[str, str], ...]
    decision: tuple[str, ...]
    features: tuple[FeatureCalibration, ...]
    cohort: tuple[CohortEntry, ...]
    n_boot: int = 2000
    seed: int = 0
    notes: tuple[str, ...] = ()
    detector_args: tuple[tuple[str, Any], ...] = ()
    base_fingerprint: tuple[tuple[str, Any], ...] | None = None  # shared by every cohort adapter

    def __post_init__(self) -> None:
        names = [f.feature for f in self.features]
        missing = [d for d in self.decision if d not in names]
        if not self.decision or missing:
            raise ValueError(f"decision features must be calibrated features (missing: {missing})")

    @property
    def name(self) -> str:
        return f"{self.detector}:{self.view}@{self.base_model or 'any'}"

    def feature(self, name: str) -> FeatureCalibration:
        for f in self.features:
            if f.feature == name:
                return f
        raise KeyError(name)

    def to_record(self) -> dict[str, Any]:
        n_pos = sum(e.label for e in self.cohort)
        fp = dict(self.base_fingerprint) if self.base_fingerprint is not None else None
        return {**record_header(KIND), "detector": self.detector, "view": self.view,
                "base_model": self.base_model, "base_fingerprint": fp, "conditions": dict(self.conditions),
                "detector_args": dict(self.detector_args), "decision": list(self.decision),
                "rule": "flag if any decision feature is beyond its FPR=0 threshold (paper §7)",
                "features": {f.feature: {k: v for k, v in to_dict(f).items() if k != "feature"} for f in self.features},
                "cohort": [{"name": e.name, "label": e.label, "scores": dict(e.scores)} for e in self.cohort],
                "n_clean": len(self.cohort) - n_pos, "n_poisoned": n_pos,
                "bootstrap": {"n": self.n_boot, "seed": self.seed}, "notes": list(self.notes)}

    @classmethod
    def from_record(cls, rec: Any, where: str = "profile") -> "Profile":
        try:
            return _from_record(rec, where)
        except LorascanError as err:
            raise DataError(f"{where}: not a valid profile: {err}") from None
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise DataError(f"{where}: not a valid profile ({type(err).__name__}: {str(err)[:160]})") from None

    def save(self, path: str | os.PathLike) -> Path:
        try:
            return write_json_atomic(path, self.to_record())
        except OSError as err:
            raise DataError(f"cannot write profile {path}: {err.strerror or err}") from None

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Profile":
        """Read a profile file (size-capped, NaN constants refused) and validate it."""
        return cls.from_record(read_json_untrusted(path, "profile", MAX_PROFILE_BYTES), str(path))


def _from_record(rec: Any, where: str) -> Profile:
    if not isinstance(rec, dict) or rec.get("kind") != KIND:
        raise DataError(f"expected a record of kind '{KIND}'")
    if rec.get("schema_version") != SCHEMA_VERSION:
        raise DataError(f"schema_version {rec.get('schema_version')!r} is not {SCHEMA_VERSION}")
    feats = rec["features"]
    if not isinstance(feats, dict) or not feats:
        raise DataError("no calibrated features")
    cals = tuple(from_dict(FeatureCalibration, {"feature": k, **v}, f"features.{k}") for k, v in feats.items())
    cohort = tuple(CohortEntry(str(e["name"]), int(e["label"]), dict(e.get("scores") or {})) for e in rec["cohort"])
    base = rec.get("base_model")
    fp = rec.get("base_fingerprint")
    fingerprint = tuple(check_fingerprint(fp, "base_fingerprint").items()) if fp is not None else None
    return Profile(detector=str(rec["detector"]), view=str(rec["view"]),
                   base_model=base if isinstance(base, str) else None, base_fingerprint=fingerprint,
                   conditions=tuple(sorted((str(k), str(v)) for k, v in dict(rec.get("conditions") or {}).items())),
                   decision=tuple(str(d) for d in rec["decision"]), features=cals, cohort=cohort,
                   n_boot=int(rec.get("bootstrap", {}).get("n", 0)), seed=int(rec.get("bootstrap", {}).get("seed", 0)),
                   notes=tuple(str(n) for n in rec.get("notes") or ()),
                   detector_args=tuple(sorted(dict(rec.get("detector_args") or {}).items())))


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def applies(profile: Profile, context: Mapping[str, Any]) -> str | None:
    """Why ``profile`` does not apply to an adapter with ``context`` (None when it does); see
    the module docstring."""
    base = context.get("base_model")
    if not same_base_model(profile.base_model, base):
        return (f"profile {profile.name} is for base model {profile.base_model}, the adapter declares "
                f"{base}; thresholds do not transfer (paper §8)")
    fp = context.get("base_fingerprint")
    if profile.base_fingerprint is not None and isinstance(fp, Mapping) and dict(fp) != dict(profile.base_fingerprint):
        return (f"profile {profile.name} was calibrated on a base of shape {_fp(dict(profile.base_fingerprint))}, "
                f"the adapter's lorascan.json records {_fp(dict(fp))}; thresholds do not transfer (paper §8)")
    for key, want in profile.conditions:
        got = context.get(key)
        if got is None:
            return f"profile {profile.name} was calibrated with {key}={want}, this scan does not say its {key}"
        if str(got) != want:
            return f"profile {profile.name} was calibrated with {key}={want}, this scan has {key}={got}"
    return None


def _fp(fp: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(fp.items()))


def verdict(scores: Mapping[str, float | None], profile: Profile | None,
            context: Mapping[str, Any] | None = None, hint: str | None = None) -> Verdict:
    """"suspicious" when a decision feature is beyond its threshold, "clean" when none is,
    "uncalibrated" without a profile or when the profile does not apply (:func:`applies`) or
    a decision score is missing or not finite. ``hint``: the command that calibrates a
    profile for this detector, named in the "no profile" reason."""
    if profile is None:
        how = f" ({hint})" if hint else ""
        return Verdict("uncalibrated", (f"no profile: calibrate one on labelled adapters of this base model{how} "
                                        "and pass it with --profile",))
    why = applies(profile, dict(context or {}))
    if why is not None:
        return Verdict("uncalibrated", (why,))
    reasons, flagged = [], []
    for name in profile.decision:
        cal, score = profile.feature(name), scores.get(name)
        if score is None or not math.isfinite(score):
            return Verdict("uncalibrated", (f"score {name} is undefined for this adapter",), profile=profile.name)
        op = ">" if cal.direction == "+" else "<"
        beyond = cal.flags(score)
        flagged += [name] if beyond else []
        reasons.append(f"{name} = {_fmt(score)} {'is' if beyond else 'is not'} {op} {_fmt(cal.threshold)} "
                       f"(FPR=0 threshold; cohort AUC {cal.auc:.3f}, recall {cal.recall:.3f})")
    label = "suspicious" if flagged else "clean"
    return Verdict(label, tuple(reasons), tuple(flagged), profile.name)
