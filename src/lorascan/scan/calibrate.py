"""Calibrate the profile set ``lorascan scan`` ships for a base: run the scan's own detectors,
with the scan's own arguments and probe inputs, on every adapter of a labelled cohort, and turn
each detector's scores into a :class:`~lorascan.detect.verdict.Profile` (ROC AUC with bootstrap
CI, FPR=0 threshold, the clean cohort scores the scan's review/block bounds come from).

Calibrating through the scan path, not the ``probe``/``weights`` commands, is what makes the
profile apply: the same battery view, probe set (by SHA-256), readout and formulation.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from lorascan.detect.calibrate import CohortScores, calibrate
from lorascan.detect.linear import fit_linear
from lorascan.detect.cohort import CohortMember, shared_conditions
from lorascan.detect.profiles import make_set
from lorascan.errors import DataError
from lorascan.scan.pipeline import ScanConfig


def cohort_scores(members: Sequence[CohortMember], config: ScanConfig, records: str | Path,
                  on_record: Callable[[dict[str, Any]], None] | None = None) -> dict[str, list[dict[str, Any]]]:
    """``{member name: detector rows}``: each member scanned like ``lorascan scan`` into the
    batch folder ``records`` (resumable: members already scanned with the same files are read
    back, so a calibration cut short, or one that follows ``lorascan scan MEMBERS --out
    RECORDS``, does not scan twice)."""
    from lorascan.scan.batch import record_name, run_batch

    run_batch([str(m.path) for m in members], config, records, on_record=on_record)
    out = {}
    for m in members:
        rec = json.loads((Path(records) / "records" / record_name(str(m.path))).read_text("utf-8"))
        if rec.get("status") != "ok":
            raise DataError(f"cohort adapter {m.name} could not be scanned: {rec.get('error')}")
        out[m.name] = rec["detectors"]
    return out


#: the learned weight score (issue 12's weight detector v2), the weights profile's decision when fitted
WEIGHTS_LR = "weights_lr"


def profiles_from_rows(members: Sequence[CohortMember], rows: dict[str, list[dict[str, Any]]], base: str,
                       detectors: Sequence[str], n_boot: int = 2000, seed: int = 0,
                       groups: Mapping[str, str | None] | None = None) -> dict[str, Any]:
    """``{detector: Profile}`` from the scan rows of ``members`` (``{member name: detector
    rows}``, as :func:`cohort_scores` returns); every member must be scored by every detector.
    The held-out evaluation (:mod:`lorascan.scan.evaluate`) calls this on training splits.

    With ``groups`` (member name -> trigger family), the weights profile also gets a logistic
    regression over the weight scores (:mod:`lorascan.detect.linear`): its out-of-fold probability
    ``weights_lr`` is calibrated like any score and becomes the profile's decision."""
    from lorascan.detect import DETECTORS, register_builtin_detectors

    registry = register_builtin_detectors(DETECTORS.copy())
    profiles = {}
    for name in detectors:
        det = registry.create(name)
        ok = [(m, r) for m in members for r in rows[m.name] if r["detector"] == name and r["status"] == "ok"]
        if len(ok) != len(members):
            bad = next(m.name for m in members if not any(mm is m for mm, _ in ok))
            raise DataError(f"detector {name} did not score cohort adapter {bad}; every member must be scored")
        contexts = [dict(r["details"].get("context") or {}) for _, r in ok]
        conditions, notes = shared_conditions(contexts)
        scores = [{k: v for k, v in r["scores"].items() if k != WEIGHTS_LR} for _, r in ok]
        decision, model = det.decision, None
        if name == "weights" and groups is not None:
            try:
                model, oof = fit_linear(WEIGHTS_LR, scores, [m.label for m, _ in ok],
                                        [groups.get(m.name) for m, _ in ok])
            except DataError as err:  # too small a cohort to learn from: the paper's score decides
                notes = [*notes, f"{WEIGHTS_LR} not fitted: {err}"]
            else:
                scores = [{**s, WEIGHTS_LR: v} for s, v in zip(scores, oof)]
                decision = (WEIGHTS_LR,)
                notes = [*notes, f"{WEIGHTS_LR}: L2 logistic regression over {len(model.features)} weight scores, "
                                 f"C = {model.C:g} by family-grouped CV log-loss (AUC {model.cv_auc:.3f}); the "
                                 f"cohort's {WEIGHTS_LR} scores are out-of-fold"]
        cohort = CohortScores(tuple(m.name for m, _ in ok), tuple(m.label for m, _ in ok), tuple(scores))
        profile = calibrate(cohort, detector=name, view="scan", base_model=base, conditions=conditions,
                            decision=decision, n_boot=n_boot, seed=seed, direction=det.direction,
                            detector_args=ok[0][1]["detector_args"], notes=notes)
        profiles[name] = replace(profile, model=model) if model is not None else profile
    return profiles


def profile_set_from_records(members: Sequence[CohortMember], records: Mapping[str, dict[str, Any]], base: str,
                             detectors: Sequence[str], *, cohort_name: str, n_boot: int = 2000, seed: int = 0,
                             groups: Mapping[str, str | None] | None = None) -> dict[str, Any]:
    """The profile-set record from scan records already made (``{member name: scan record}``),
    nothing rescanned: a cohort whose adapters are gone (a run folder not kept) still calibrates
    from the records it left in ``results/``. The records must come from one scan setting: their
    base, probe set and each detector's arguments must agree, or the profiles would judge a scan
    by bounds of another one."""
    _need_both_classes(members)
    settings = {}
    for m in members:
        rec = records[m.name]
        args = {r["detector"]: r.get("detector_args") for r in rec.get("detectors") or () if r["detector"] in detectors}
        key = json.dumps({"base": (rec.get("base") or {}).get("name"), "args": args,
                          "probe": (rec.get("probe_inputs") or {}).get("sha256")}, sort_keys=True, default=str)
        settings.setdefault(key, m.name)
    if len(settings) > 1:
        a, b = list(settings.values())[:2]
        raise DataError(f"the records of {a} and {b} come from different scan settings (base, probe set or "
                        "detector arguments); rescan them alike before calibrating")
    rows = {m.name: records[m.name]["detectors"] for m in members}
    profiles = profiles_from_rows(members, rows, base, detectors, n_boot, seed, groups)
    probe = next(iter(records.values())).get("probe_inputs") or {}
    return _set_record(members, base, profiles, cohort_name, probe.get("name") or probe.get("path"), detectors)


def _need_both_classes(members: Sequence[CohortMember]) -> None:
    if len({m.label for m in members}) < 2:
        raise DataError("a calibration cohort needs clean and poisoned adapters")


def _set_record(members: Sequence[CohortMember], base: str, profiles: dict[str, Any], cohort_name: str,
                probe_data: Any, detectors: Sequence[str]) -> dict[str, Any]:
    """The profile-set record: the profiles and the cohort they came from."""
    n_pos = sum(m.label for m in members)
    desc = {"name": cohort_name, "n_clean": len(members) - n_pos, "n_poisoned": n_pos,
            "members": [{"name": m.name, "label": m.label, "label_source": m.source} for m in members],
            "probe_data": probe_data, "detectors": list(detectors)}
    return make_set(base, profiles, desc)


def profile_set(members: Sequence[CohortMember], base: str, config: ScanConfig, *, cohort_name: str,
                records: str | Path, n_boot: int = 2000, seed: int = 0,
                on_record: Callable | None = None, groups: Mapping[str, str | None] | None = None) -> dict[str, Any]:
    """The profile-set record for ``base`` from a labelled cohort (module docstring); with
    ``groups`` (trigger families) the weights profile gets its learned score too."""
    _need_both_classes(members)
    config = replace(config, base=base)
    rows = cohort_scores(members, config, records, on_record)
    profiles = profiles_from_rows(members, rows, base, config.detectors, n_boot, seed, groups)
    return _set_record(members, base, profiles, cohort_name, config.probe_data, config.detectors)
