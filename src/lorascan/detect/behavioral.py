"""Behavioural detector (paper §7): probe an adapter with a battery of prefixes and summarise
the per-probe attack rates r without knowing the trigger.

- ``mean_attack_rate`` = mean(r): a backdoor that generalises at the token-feature level raises
  the rates of many probes (an RFC trigger fires on other RFC citations, paper §6).
- ``outlier_gap`` = max(r) - mean(r): one probe (or a few) far above the rest.

Views (paper §7): B leaves out the trigger category and the adapter's known trigger, C also the
RFC-family categories; A keeps everything (trivially separable when the trigger is in the
battery). A verdict needs a profile from :func:`calibrate_records` (``lorascan calibrate``):
flag the adapter when any decision score is strictly above its FPR=0 threshold, the largest
score of a clean cohort adapter (the paper's thresholds on the 1.5B cohort: B gap > .025, mean
> .008). Without a profile, or with one for another base model, formulation, battery, view or
readout, the verdict is "uncalibrated".

Deviation from the paper: the scores are always oriented "+" (flag when above); the generic
calibration picks the better of both directions, which for attack rates would flag adapters
that resist the probes, so the fixed orientation is kept even when a cohort's AUC is below .5.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from lorascan.config import to_dict
from lorascan.detect.base import Detector, DetectorResult, NotApplicable, ScanContext
from lorascan.detect.verdict import Verdict
from lorascan.detect.calibrate import calibrate_feature
from lorascan.detect.verdict import CohortEntry, Profile, same_base_model, verdict
from lorascan.errors import DataError, UsageError
from lorascan.formulations import formulation_for, text_output_tasks
from lorascan.probe.batteries import VIEWS, Battery, load_battery
from lorascan.registry import Registry

NAME = "behavioral"
SCORES = ("outlier_gap", "mean_attack_rate")
CONDITIONS = ("task", "battery", "battery_sha256", "view", "readout")
# Recorded only by the trigger-blind scan (the shipped probe set the rates were measured on).
OPTIONAL_CONDITIONS = ("probe_set",)
EXTRA_DETAILS = ("probe_inputs", "unprefixed_miss_rate", "benign_false_positive_rate")


@dataclass(frozen=True)
class BehavioralConfig:
    """How to probe. ``battery``: a built-in name or a battery file; ``view``: A, B or C;
    ``base``/``data``: default to the adapter's lorascan.json; ``exclude``: extra trigger
    strings every view drops."""

    battery: str = "paper-21"
    view: str = "B"
    base: str | None = None
    data: str | None = None
    readout: str = "logits"
    batch_size: int = 32
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.view not in VIEWS:
            raise UsageError(f"unknown view '{self.view}' (use {', '.join(VIEWS)})")
        if self.readout not in ("logits", "generate"):
            raise UsageError(f"unknown readout '{self.readout}' (use logits, generate)")
        if self.batch_size < 1:
            raise UsageError(f"batch size must be >= 1, got {self.batch_size}")


def context_of(record: Mapping[str, Any]) -> dict[str, Any]:
    """What a profile must match (base model, its fingerprint when the record carries one, and
    :data:`CONDITIONS`) for a probe record."""
    fp = record.get("base_fingerprint")
    extra = {k: record[k] for k in OPTIONAL_CONDITIONS if record.get(k) is not None}
    return {"base_model": record.get("base"), **({"base_fingerprint": fp} if isinstance(fp, Mapping) else {}),
            **{k: record.get(k) for k in CONDITIONS}, **extra}


def behavioral_verdict(scores: Mapping[str, float | None], profile: Profile | None,
                       context: Mapping[str, Any]) -> Verdict:
    if profile is not None and profile.detector != NAME:
        raise UsageError(f"profile {profile.name} is for the {profile.detector!r} detector, not {NAME!r}")
    return verdict(scores, profile, context, hint="lorascan calibrate COHORT_DIR --battery NAME --view B")


def load_behavioral_profile(path: str | Path) -> Profile:
    profile = Profile.load(path)
    if profile.detector != NAME:
        raise UsageError(f"profile {path} is for the {profile.detector!r} detector, not {NAME!r}")
    return profile


def result_from_record(record: Mapping[str, Any], profile: Profile | None, args: Mapping[str, Any]) -> DetectorResult:
    """The detector result of a probe record (already restricted to its view)."""
    scores = {k: float(record[k]) for k in SCORES}
    context = context_of(record)
    return DetectorResult(
        detector=NAME, detector_args=dict(args), scores=scores, verdict=behavioral_verdict(scores, profile, context),
        details={"context": context, "battery": record["battery"], "view": record["view"],
                 "probes": list(record["probes"]), "categories": dict(record["categories"]),
                 "excluded": list(record.get("excluded", [])), "n_injections": record.get("n_injections"),
                 **{k: record[k] for k in EXTRA_DETAILS if k in record}})


class BehavioralDetector(Detector):
    """The paper's behavioural detector (§7) behind the common protocol. Scanning runs the
    adapter on the battery (base model and data from the arguments or the adapter's
    lorascan.json)."""

    name = NAME
    tasks = ("seq-cls", "label-word")
    summary = "probe battery before shipped injections: outlier_gap, mean_attack_rate (paper §7)"
    decision = SCORES
    direction = "+"

    def __init__(self, battery: str = "paper-21", view: str = "B", base: str | None = None, data: str | None = None,
                 readout: str = "logits", batch_size: int = 32, exclude: Sequence[str] = (), progress: bool = False):
        self.config = BehavioralConfig(battery, view, base, data, readout, batch_size, tuple(exclude))
        self.progress = progress
        self._battery: Battery | None = None

    @property
    def args(self) -> dict[str, Any]:
        return to_dict(self.config)

    @property
    def battery(self) -> Battery:
        if self._battery is None:
            self._battery = load_battery(self.config.battery)
        return self._battery

    def probe(self, adapter: str | Path, classifier: Any = None, pool: Any = None) -> dict[str, Any]:
        """The probe record of ``adapter`` on this detector's battery view."""
        from lorascan.probe.generalization import run_probe

        c = self.config
        return run_probe(adapter, self.battery, c.view, base=c.base, data_dir=c.data, exclude=c.exclude,
                         readout=c.readout, batch_size=c.batch_size, progress=self.progress,
                         classifier=classifier, pool=pool)

    def scan(self, context: ScanContext, profile: Profile | None = None) -> DetectorResult:
        """With probe inputs in ``context`` (the trigger-blind scan): the battery view over
        those injections, nothing excluded for being "the trigger", which a scan does not
        know. Without (``lorascan probe`` / ``calibrate`` on adapters lorascan trained): the
        adapter's own data folder, as :meth:`probe`."""
        if context.probes is None:
            return result_from_record(self.probe(context.adapter), profile, self.args)
        from lorascan.models.loading import base_fingerprint
        from lorascan.probe.generalization import probe_inputs_record

        context.require_model(NAME)
        inputs = context.require_probes(NAME)
        clf = context.classifier()
        c = self.config
        if c.readout == "generate" and not formulation_for(clf.task).text_output:
            raise NotApplicable(f"{NAME}: the generate readout needs a {' or '.join(text_output_tasks())} adapter")
        rec = probe_inputs_record(clf, inputs, self.battery.view(c.view, c.exclude), c.readout, c.batch_size,
                                  context.progress)
        rec.update(base=context.base, task=clf.task, probe_set=inputs.sha256,
                   base_fingerprint=base_fingerprint(clf.model.config))
        return result_from_record(rec, profile, self.args)


def register(registry: Registry[Detector]) -> Registry[Detector]:
    """Add the behavioural detector to ``registry`` (e.g. ``lorascan.detect.DETECTORS``) unless
    it is there; returns the registry."""
    if NAME not in registry:
        registry.register(NAME, BehavioralDetector)
    return registry


def _shared(records: Sequence[Mapping[str, Any]], key: str) -> Any:
    values = {str(r.get(key)) for r in records}
    if len(values) != 1:
        raise DataError(f"the cohort mixes {key} values ({', '.join(sorted(values))}); calibrate one profile per {key}")
    return records[0].get(key)


def calibrate_records(names: Sequence[str], labels: Sequence[int], records: Sequence[Mapping[str, Any]],
                      battery: Battery, view: str, *, decision: Sequence[str] = SCORES, n_boot: int = 2000,
                      seed: int = 0, notes: Sequence[str] = (),
                      base_fingerprint: Mapping[str, Any] | None = None) -> Profile:
    """A behavioural :class:`Profile` from labelled probe records (any view of ``battery``;
    each is cut down to ``view``, dropping its own known triggers in B and C). Scores are
    calibrated in the "+" direction only (module docstring). ``base_fingerprint``: the
    cohort's shared base shape (:func:`lorascan.detect.cohort.shared_fingerprint`)."""
    from lorascan.probe.generalization import restrict_record

    if not records or len(names) != len(records) or len(labels) != len(records):
        raise DataError("calibration needs one probe record and one label per adapter")
    if len(set(names)) != len(names):
        raise DataError("cohort adapter names must be unique")
    unknown = [d for d in decision if d not in SCORES]
    if not decision or unknown:
        raise UsageError(f"decision scores must be among {', '.join(SCORES)}")
    viewed = [restrict_record(dict(r), battery, view) for r in records]
    bases = [r.get("base") for r in viewed]
    if any(not same_base_model(bases[0], b) for b in bases):
        raise DataError(f"the cohort mixes base models ({', '.join(sorted(set(map(str, bases))))}); "
                        "calibrate one profile per base model")
    conditions = {k: str(_shared(viewed, k)) for k in CONDITIONS}
    conditions.update({k: str(_shared(viewed, k)) for k in OPTIONAL_CONDITIONS if viewed[0].get(k) is not None})
    cals = tuple(calibrate_feature(s, [r[s] for r in viewed], labels, n_boot, seed, direction="+") for s in SCORES)
    cohort = tuple(CohortEntry(n, int(y), {s: r[s] for s in SCORES}) for n, y, r in zip(names, labels, viewed))
    args = {"battery": battery.name, "view": view, "readout": conditions["readout"]}
    return Profile(detector=NAME, view=view, base_model=bases[0], conditions=tuple(sorted(conditions.items())),
                   decision=tuple(decision), features=cals, cohort=cohort, n_boot=n_boot, seed=seed,
                   notes=tuple(notes), detector_args=tuple(sorted(args.items())),
                   base_fingerprint=tuple(sorted(base_fingerprint.items())) if base_fingerprint else None)
