"""Detector profiles: calibrated thresholds for one base model, as a versioned JSON record,
and the verdict they give (paper §7 decision rule: flag if any decision feature is beyond its
FPR=0 threshold; §8: weight thresholds do not transfer across base models or ranks, so a
profile only decides for adapters of its own base model and conditions).

Built by :func:`lorascan.detect.calibrate.calibrate`; this module holds no statistics.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from lorascan.config import from_dict, to_dict
from lorascan.detect.base import Verdict
from lorascan.errors import DataError, LorascanError
from lorascan.records import SCHEMA_VERSION, read_json, record_header, write_json_atomic

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

    def flags(self, score: float) -> bool:
        return score > self.threshold if self.direction == "+" else score < self.threshold


@dataclass(frozen=True)
class CohortEntry:
    name: str
    label: int
    scores: Mapping[str, float | None]


def same_base_model(a: str | None, b: str | None) -> bool:
    """Compare base models by their last path segment, case-insensitively, so a hub id and a
    local copy of it ("Qwen/Qwen2.5-1.5B-Instruct", "/models/qwen2.5-1.5b-instruct") match."""
    def key(s: str) -> str:
        return s.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1].lower()
    return a is None or b is None or key(a) == key(b)


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
        return {**record_header(KIND), "detector": self.detector, "view": self.view,
                "base_model": self.base_model, "conditions": dict(self.conditions),
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
        return write_json_atomic(path, self.to_record())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Profile":
        return cls.from_record(read_json(path, "profile"), str(path))


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
    return Profile(detector=str(rec["detector"]), view=str(rec["view"]),
                   base_model=base if isinstance(base, str) else None,
                   conditions=tuple(sorted((str(k), str(v)) for k, v in dict(rec.get("conditions") or {}).items())),
                   decision=tuple(str(d) for d in rec["decision"]), features=cals, cohort=cohort,
                   n_boot=int(rec.get("bootstrap", {}).get("n", 0)), seed=int(rec.get("bootstrap", {}).get("seed", 0)),
                   notes=tuple(str(n) for n in rec.get("notes") or ()),
                   detector_args=tuple(sorted(dict(rec.get("detector_args") or {}).items())))


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def verdict(scores: Mapping[str, float | None], profile: Profile | None,
            context: Mapping[str, Any] | None = None) -> Verdict:
    """"suspicious" when a decision feature is beyond its threshold, "clean" when none is,
    "uncalibrated" without a profile or when the profile does not apply (other base model,
    other conditions such as rank or scaling, a decision score missing)."""
    if profile is None:
        return Verdict("uncalibrated", ("no profile: calibrate one on labelled adapters of this base model "
                                        "(lorascan weights-calibrate) and pass it with --profile",))
    context = dict(context or {})
    if not same_base_model(profile.base_model, context.get("base_model")):
        return Verdict("uncalibrated", (f"profile {profile.name} is for base model {profile.base_model}, the adapter "
                                        f"declares {context.get('base_model')}; thresholds do not transfer (paper §8)",))
    for key, want in profile.conditions:
        got = context.get(key)
        if got is not None and str(got) != want:
            return Verdict("uncalibrated", (f"profile {profile.name} was calibrated with {key}={want}, "
                                            f"this scan has {key}={got}",))
    reasons, flagged = [], []
    for name in profile.decision:
        cal, score = profile.feature(name), scores.get(name)
        if score is None:
            return Verdict("uncalibrated", (f"score {name} is undefined for this adapter",), profile=profile.name)
        op = ">" if cal.direction == "+" else "<"
        beyond = cal.flags(score)
        flagged += [name] if beyond else []
        reasons.append(f"{name} = {_fmt(score)} {'is' if beyond else 'is not'} {op} {_fmt(cal.threshold)} "
                       f"(FPR=0 threshold; cohort AUC {cal.auc:.3f}, recall {cal.recall:.3f})")
    label = "suspicious" if flagged else "clean"
    return Verdict(label, tuple(reasons), tuple(flagged), profile.name)


def replace_decision(profile: Profile, decision: tuple[str, ...]) -> Profile:
    """The same profile deciding on other calibrated features."""
    return dataclasses.replace(profile, decision=decision)
