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
from typing import Any, Mapping, Sequence

from lorascan.config import from_dict, to_dict
from lorascan.detect.adapter import check_fingerprint
from lorascan.detect.linear import LinearModel
from lorascan.detect.jsonfile import MAX_PROFILE_BYTES, read_json_untrusted
from lorascan.errors import DataError, LorascanError
from lorascan.records import SCHEMA_VERSION, record_header, write_json_atomic

KIND = "detector_profile"
LABELS = ("suspicious", "clean", "uncalibrated")


@dataclass(frozen=True)
class Verdict:
    """The decision on one adapter.

    ``label`` is "suspicious", "clean" or "uncalibrated" (no profile, or one that does not
    apply to this adapter: another base model, rank or scaling). ``reasons`` are one-line
    explanations; ``flagged`` the features beyond their thresholds; ``profile`` names the
    profile used (None when uncalibrated).
    """

    label: str
    reasons: tuple[str, ...] = ()
    flagged: tuple[str, ...] = ()
    profile: str | None = None

    def __post_init__(self) -> None:
        if self.label not in LABELS:
            raise ValueError(f"verdict label must be one of {LABELS}, got {self.label!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "reasons": list(self.reasons), "flagged": list(self.flagged),
                "profile": self.profile}




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
    model: LinearModel | None = None  # a learned score over the detector's scores (issue 12)

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
                "bootstrap": {"n": self.n_boot, "seed": self.seed}, "notes": list(self.notes),
                "model": self.model.to_record() if self.model is not None else None}

    def with_model(self, scores: Mapping[str, float | None]) -> dict[str, float | None]:
        """``scores`` plus the profile's learned score (when it has a model) under its name."""
        out = dict(scores)
        if self.model is not None:
            out[self.model.name] = self.model.score(scores)
        return out

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
                   detector_args=tuple(sorted(dict(rec.get("detector_args") or {}).items())),
                   model=LinearModel.from_record(rec["model"], "model") if rec.get("model") is not None else None)


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


# --- the scan's three-level verdict (allow | review | block) -----------------------------------
#
# A profile's FPR=0 threshold is the largest score of its clean cohort adapters: a clean adapter
# of another seed, rank or data sample lands above it as often as not when the cohort is small
# (issue 12: the view-B profile from 4 clean adapters flagged one of two held-out clean ones).
# The scan therefore widens it by the clean spread before it calls anything suspicious, and asks
# for a clear margin before it blocks:
#
# - review bound  t_r = max(FPR=0 threshold, mean_clean + SPREAD_SD * sd_clean), in the
#   feature's direction ("+" above, "-" below); with SPREAD_SD = 3 a clean score beyond it is a
#   3-sigma event under the clean cohort's spread;
# - block bound   t_b = t_r * BLOCK_FACTOR for "+" features whose clean scores are >= 0 (attack
#   rates, gaps, lifts), BLOCK_FACTOR = 3: for the paper's outlier_gap the review bound of its
#   clean cohort is ~.03, so the block bound is ~.10, the paper's own v0.1 rule (gap > .10).
#   For a score that lives in [0, 1] (every clean score and t_r below 1) whose review bound is
#   already high, 3 t_r would lie beyond 1, out of reach: there the block bound is halfway
#   from t_r to 1, whichever is lower (the token scan's attack rate: arbitrary words flip 10-20%
#   of injections on clean MiniLM adapters, so t_r ~ .4 and t_b ~ .7).
#   "-" features and features that can be negative never block on their own: they review.
# - a score votes only where its profile shows it works on this base: the lower end of the
#   bootstrap 95% CI of its cohort ROC AUC reaches MIN_VOTING_AUC (on a cohort of at least
#   MIN_AUC_CLASS adapters of each class: on fewer, a bootstrap CI of a perfect split is [1, 1]
#   whatever the feature, and one of 20 orderings of 3 + 3 adapters is a perfect split by
#   chance), or at least one poisoned
#   cohort adapter scores beyond its block bound (it has caught a backdoor on this base while,
#   by construction, no clean cohort adapter passes its review bound; a family-specific
#   detector such as the paper's battery has a low AUC over a cohort of many trigger families
#   yet blocks the family it probes). On the MiniLM cohort the paper's global_frobN_std is at
#   chance (AUC .53) and would send every other clean adapter to review; on a cohort of a few
#   adapters a weight feature reaches AUC .9 by chance, with a CI reaching down to .6. A
#   detector none of whose scores votes is still reported.
#
# The combination rule: block if any voting detector blocks; else review if any voting detector
# reviews, or any detector could not judge (uncalibrated, not applicable, failed), or a
# structural finding says so (unanalysed or decoy tensors); else allow. No profile, no allow.

SPREAD_SD = 3.0
BLOCK_FACTOR = 3.0
MIN_VOTING_AUC = 0.75  # lower end of the cohort AUC's bootstrap 95% CI
MIN_AUC_CLASS = 5
LEVELS = ("allow", "review", "block")


@dataclass(frozen=True)
class Bounds:
    feature: str
    direction: str
    review: float
    block: float | None
    auc: float
    auc_low: float = 0.0

    def level(self, score: float) -> str:
        beyond = (lambda t: score > t) if self.direction == "+" else (lambda t: score < t)
        if self.block is not None and beyond(self.block):
            return "block"
        return "review" if beyond(self.review) else "allow"

    def to_dict(self) -> dict[str, Any]:
        return {"feature": self.feature, "direction": self.direction, "review_above" if self.direction == "+"
                else "review_below": self.review, "block_above": self.block, "profile_auc": self.auc,
                "profile_auc_ci_low": self.auc_low}


def scan_bounds(profile: Profile, feature: str) -> Bounds:
    """The review and block bounds of ``feature`` (module comment above)."""
    cal = profile.feature(feature)
    clean = [float(e.scores[feature]) for e in profile.cohort
             if e.label == 0 and e.scores.get(feature) is not None and math.isfinite(float(e.scores[feature]))]
    t0 = cal.threshold
    if len(clean) >= 2:
        mean = sum(clean) / len(clean)
        sd = math.sqrt(sum((c - mean) ** 2 for c in clean) / (len(clean) - 1))
        spread = mean + SPREAD_SD * sd if cal.direction == "+" else mean - SPREAD_SD * sd
        review = max(t0, spread) if cal.direction == "+" else min(t0, spread)
    else:
        review = t0
    block = None
    if cal.direction == "+" and clean and min(clean) >= 0 and review > 0:
        block = review * BLOCK_FACTOR
        if max(clean) <= 1 and review < 1:
            block = min(block, (1 + review) / 2)
    return Bounds(feature, cal.direction, review, block, cal.auc, float(cal.auc_ci[0]) if cal.auc_ci else 0.0)


@dataclass(frozen=True)
class Judgement:
    """One detector's say in the scan verdict."""

    level: str
    votes: bool
    reasons: tuple[str, ...]
    bounds: tuple[Bounds, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "votes": self.votes, "reasons": list(self.reasons),
                "bounds": [b.to_dict() for b in self.bounds]}


def judge(scores: Mapping[str, float | None], profile: Profile | None, context: Mapping[str, Any]) -> Judgement:
    """Level of one detector's scores under ``profile`` (review when it cannot judge)."""
    if profile is None:
        return Judgement("review", True, ("uncalibrated: no profile for this base model, so the scores cannot "
                                          "be called clean",))
    why = applies(profile, dict(context))
    if why is not None:
        return Judgement("review", True, (f"uncalibrated: {why}",))
    scores = profile.with_model(scores)
    bounds, reasons, voting, levels = [], [], [], []
    for name in profile.decision:
        score = scores.get(name)
        if score is None or not math.isfinite(score):
            return Judgement("review", True, (f"score {name} is undefined for this adapter",))
        b = scan_bounds(profile, name)
        bounds.append(b)
        lv = b.level(float(score))
        votes = (b.auc_low >= MIN_VOTING_AUC and _class_sizes(profile) >= MIN_AUC_CLASS) or _caught(profile, b)
        (voting if votes else levels).append(lv)
        op = ">" if b.direction == "+" else "<"
        limits = f"review {op} {_fmt(b.review)}" + (f", block {op} {_fmt(b.block)}" if b.block is not None else "")
        reasons.append((not votes, -LEVELS.index(lv), f"{name} = {_fmt(float(score))}: {lv} ({limits}; cohort AUC "
                        f"{b.auc:.3f}, CI low {b.auc_low:.3f}{'' if votes else '; not voting'})"))
    level = max(voting or levels, key=LEVELS.index)
    reasons = [text for *_, text in sorted(reasons, key=lambda r: r[:2])]  # the deciding score first
    if not voting:
        reasons.append(f"not used for the verdict: no score has shown it separates this base's cohort "
                       f"(AUC CI low end below {MIN_VOTING_AUC}, no poisoned adapter past the block bound)")
    return Judgement(level, bool(voting), tuple(reasons), tuple(bounds))


def _class_sizes(profile: Profile) -> int:
    n_pos = sum(1 for e in profile.cohort if e.label == 1)
    return min(n_pos, len(profile.cohort) - n_pos)


def _caught(profile: Profile, b: Bounds) -> bool:
    """Whether a poisoned cohort adapter scores beyond ``b``'s block bound."""
    return b.block is not None and any(
        e.label == 1 and e.scores.get(b.feature) is not None and b.level(float(e.scores[b.feature])) == "block"
        for e in profile.cohort)


def combine(judgements: Mapping[str, Judgement], findings: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """The scan verdict from each detector's judgement and the structural findings (the rule in
    the module comment above)."""
    reasons: list[str] = []
    level = "allow"
    for name, j in judgements.items():
        if not j.votes:
            continue
        if LEVELS.index(j.level) > LEVELS.index(level):
            level = j.level
        if j.level != "allow":
            reasons.append(f"{name}: {j.reasons[0]}")
    for f in findings:
        lv = f.get("level", "review")
        if LEVELS.index(lv) > LEVELS.index(level):
            level = lv
        reasons.append(f"{f.get('kind')}: {f.get('message')}")
    if not judgements:
        level = max(level, "review", key=LEVELS.index)
        reasons.append("no detector could judge this adapter")
    if level == "allow":
        reasons.append("every calibrated detector scored within its clean cohort's spread")
    return {"label": level, "reasons": reasons, "rule": COMBINATION_RULE}


COMBINATION_RULE = ("block if any voting score (cohort AUC CI low end >= 0.75 on >= 5 adapters a class, or one that "
                    "blocked a poisoned cohort adapter) is beyond its block bound; "
                    "review if one is beyond its review bound (clean mean + 3 sd, at least the FPR=0 threshold; "
                    "block bound 3x that, or halfway to 1 for scores in [0, 1]), "
                    "cannot judge, or a structural finding asks for it; allow otherwise")
