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
from typing import Any, Callable, Sequence

from lorascan.detect.calibrate import CohortScores, calibrate
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


def profile_set(members: Sequence[CohortMember], base: str, config: ScanConfig, *, cohort_name: str,
                records: str | Path, n_boot: int = 2000, seed: int = 0,
                on_record: Callable | None = None) -> dict[str, Any]:
    """The profile-set record for ``base`` from a labelled cohort (module docstring)."""
    from lorascan.detect import DETECTORS, register_builtin_detectors

    labels = [m.label for m in members]
    if len(set(labels)) < 2:
        raise DataError("a calibration cohort needs clean and poisoned adapters")
    config = replace(config, base=base)
    rows = cohort_scores(members, config, records, on_record)
    registry = register_builtin_detectors(DETECTORS.copy())
    profiles = {}
    for name in config.detectors:
        det = registry.create(name)
        ok = [(m, r) for m in members for r in rows[m.name] if r["detector"] == name and r["status"] == "ok"]
        if len(ok) != len(members):
            bad = next(m.name for m in members if not any(mm is m for mm, _ in ok))
            raise DataError(f"detector {name} did not score cohort adapter {bad}; every member must be scored")
        contexts = [dict(r["details"].get("context") or {}) for _, r in ok]
        conditions, notes = shared_conditions(contexts)
        cohort = CohortScores(tuple(m.name for m, _ in ok), tuple(m.label for m, _ in ok),
                              tuple(r["scores"] for _, r in ok))
        profiles[name] = calibrate(cohort, detector=name, view="scan", base_model=base, conditions=conditions,
                                   decision=det.decision, n_boot=n_boot, seed=seed, direction=det.direction,
                                   detector_args=ok[0][1]["detector_args"], notes=notes)
    n_pos = sum(labels)
    desc = {"name": cohort_name, "n_clean": len(labels) - n_pos, "n_poisoned": n_pos,
            "members": [{"name": m.name, "label": m.label, "label_source": m.source} for m in members],
            "probe_data": config.probe_data, "detectors": list(config.detectors)}
    return make_set(base, profiles, desc)
