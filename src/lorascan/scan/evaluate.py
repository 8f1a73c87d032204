"""Detection measured like a product (issue 12): every detector score and the fused scan verdict
on a labelled cohort's scan records, with thresholds chosen on other adapters than those scored.

Inputs: a labels file from ``lorascan sweep report`` (each adapter's ``label`` by poison count,
``effective`` by measured ASR >= 0.5, ``family``, ``rank``, ``trigger``) and the batch folder of
scan records ``lorascan scan-calibrate --records`` (or ``lorascan scan LIST --out``) wrote for
them. Nothing is rescanned here; the scores are read back.

Figures (``+``: poisoned higher, the registered direction of each detector's decision scores):

- ``auc_all`` / ``auc_effective``: ROC AUC, clean vs every poisoned adapter / vs the effective
  ones, with a percentile bootstrap CI (threshold-free, so in-sample is honest here);
- held-out groups (``--hold family`` and ``--hold rank``): for each group G in turn, the clean
  adapters split into ``folds`` seeded folds; per fold the profiles are calibrated exactly as
  ``scan-calibrate`` does (:func:`lorascan.scan.calibrate.profiles_from_rows`) on the clean
  adapters outside the fold plus the poisoned adapters outside G, and the scan's own judgement
  and combination rule (:mod:`lorascan.detect.verdict`) is applied to G's poisoned adapters of
  that fold and to the fold's clean ones. Every adapter is therefore judged by bounds that never
  saw it, and G's family (or rank) never reached the profile that judges it. Reported per G and
  pooled: recall at the review and at the block level, the false-positive rate of the held-out
  clean adapters at both, and the AUC of the held-out levels (allow < review < block);
- per decision score, families held out (:func:`score_held_out`): the threshold of zero false
  positives is the highest score of the clean adapters outside the held-out clean fold (poisoned
  adapters of the held-out family never set it; a raw score learns nothing from other families,
  so only the clean fold matters); recall at that threshold on the held-out family's poisoned
  adapters, and the false-positive rate it gives on the held-out clean fold, pooled over families
  and folds; and the AUC of each family against all clean adapters, its mean and its minimum
  over families (the registered direction is fixed a priori, so no fold is needed for the AUC);
- ``seconds``: each detector's mean wall time per adapter as recorded in the scan records.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from lorascan.detect.calibrate import auc_mann_whitney, bootstrap_ci
from lorascan.detect.cohort import CohortMember, read_cohort
from lorascan.detect.jsonfile import read_json_untrusted
from lorascan.detect.verdict import LEVELS, Judgement, combine, judge
from lorascan.errors import DataError, UsageError
from lorascan.records import record_header
from lorascan.scan.pipeline import DEFAULT_DETECTORS

HOLD_KEYS = ("family", "rank")
MIN_FOLDS = 2


@dataclass(frozen=True)
class Labelled:
    """A cohort member and what the evaluation groups it by."""

    member: CohortMember
    family: str | None
    rank: int | None
    trigger: str | None
    effective: bool | None
    asr: float | None

    @property
    def name(self) -> str:
        return self.member.name

    @property
    def label(self) -> int:
        return self.member.label

    def group(self, key: str) -> Any:
        return self.family if key == "family" else self.rank


def read_labelled(path: str | Path) -> list[Labelled]:
    """The members of a labels file (``lorascan sweep report``'s ``*-cohort.json``) with their
    family, rank, trigger, effect label and ASR (None where the file has none)."""
    members, _ = read_cohort(path)
    rows = read_json_untrusted(Path(path), "labels file")
    if not isinstance(rows, list) or len(rows) != len(members):
        raise DataError(f"{path}: the evaluation needs a list of labelled rows (from 'lorascan sweep report')")
    out = []
    for m, row in zip(members, rows):
        eff, asr = row.get("effective"), row.get("attack_success_rate")
        rank = row.get("rank")
        out.append(Labelled(m, _str_or_none(row.get("family")), rank if isinstance(rank, int) else None,
                            _str_or_none(row.get("trigger")), eff if isinstance(eff, bool) else None,
                            float(asr) if isinstance(asr, (int, float)) else None))
    return out


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def read_records(members: Sequence[Labelled], records: str | Path) -> dict[str, dict[str, Any]]:
    """``{member name: scan record}`` from a batch folder; every member must have an ok record.
    A record is found by the batch's own file name for the member's path, else by the last two
    parts of the adapter path it records (``<run id>/adapter``), so a cohort's records copied
    into ``results/`` evaluate without the adapters beside them."""
    from lorascan.scan.batch import record_name

    folder = Path(records) / "records"
    by_tail: dict[tuple[str, ...], Path] | None = None
    out = {}
    for m in members:
        path = folder / record_name(str(m.member.path))
        if not path.is_file():
            if by_tail is None:
                by_tail = _records_by_tail(folder)
            path = by_tail.get(Path(m.member.path).parts[-2:], path)
        if not path.is_file():
            raise DataError(f"{records}: no scan record for {m.name}; scan the cohort first "
                            f"(lorascan scan-calibrate COHORT --records {records} ...)")
        rec = read_json_untrusted(path, "scan record")
        if not isinstance(rec, dict) or rec.get("status") != "ok":
            error = rec.get("error") if isinstance(rec, dict) else "not a scan record"
            raise DataError(f"cohort adapter {m.name} was not scanned: {str(error)[:200]}")
        out[m.name] = rec
    return out


def reference_sources(rec: Mapping[str, Any]) -> set[str]:
    """sha256 of the adapters the token scan's clean reference in scan record ``rec`` was built from."""
    for row in rec.get("detectors") or ():
        ref = (row.get("details") or {}).get("reference") if isinstance(row, dict) else None
        if isinstance(ref, dict) and isinstance(ref.get("sources_sha256"), list):
            return {str(h) for h in ref["sources_sha256"]}
    return set()


def without_reference_sources(members: Sequence[Labelled], records: Mapping[str, dict[str, Any]]
                              ) -> tuple[list[Labelled], list[str]]:
    """The members whose adapter did not build the token reference their scans used, and the
    names of those left out: a reference never scores the adapters it came from."""
    sources: set[str] = set()
    for rec in records.values():
        sources |= reference_sources(rec)
    keep, dropped = [], []
    for m in members:
        files = (records[m.name].get("adapter") or {}).get("files") or {}
        (dropped if files.get("adapter_model.safetensors") in sources else keep).append(m)
    return keep, [m.name for m in dropped]


def _records_by_tail(folder: Path) -> dict[tuple[str, ...], Path]:
    out: dict[tuple[str, ...], Path] = {}
    for f in sorted(folder.glob("*.json")) if folder.is_dir() else ():
        try:
            rec = read_json_untrusted(f, "scan record")
            out[Path(str(rec["adapter"]["path"])).parts[-2:]] = f
        except (DataError, KeyError, TypeError):
            continue
    return out


def _auc(scores: Sequence[float], labels: Sequence[int], direction: str, n_boot: int, seed: int) -> dict[str, Any]:
    n_pos = int(sum(labels))
    if n_pos == 0 or n_pos == len(labels):
        return {"auc": None, "ci": None, "n_clean": len(labels) - n_pos, "n_poisoned": n_pos}
    ci = bootstrap_ci(scores, labels, direction, n_boot, seed)["auc"]
    return {"auc": auc_mann_whitney(scores, labels, direction), "ci": [float(ci[0]), float(ci[1])],
            "n_clean": len(labels) - n_pos, "n_poisoned": n_pos}


def score_aucs(members: Sequence[Labelled], records: Mapping[str, dict[str, Any]], n_boot: int = 2000,
               seed: int = 0) -> list[dict[str, Any]]:
    """AUC all / effective of every detector's decision scores (registered direction), and the
    mean recorded seconds per adapter of each detector."""
    from lorascan.detect import DETECTORS, register_builtin_detectors

    registry = register_builtin_detectors(DETECTORS.copy())
    out = []
    detectors = scored_detectors(records)
    for name in detectors:
        det = registry.create(name) if name in registry else None
        rows = {m.name: next((r for r in records[m.name]["detectors"] if r["detector"] == name), None)
                for m in members}
        secs = [r["wall_time_s"] for r in rows.values() if r is not None and "wall_time_s" in r]
        for score in (det.decision if det else ()):
            have = [m for m in members if rows[m.name] is not None and rows[m.name]["status"] == "ok"
                    and rows[m.name]["scores"].get(score) is not None]
            values = [float(rows[m.name]["scores"][score]) for m in have]
            eff = [(v, m.label) for v, m in zip(values, have) if m.label == 0 or m.effective]
            out.append({"detector": name, "score": score, "direction": det.direction,
                        "n_scored": len(have), "n_members": len(members),
                        "all": _auc(values, [m.label for m in have], det.direction, n_boot, seed),
                        "effective": _auc([v for v, _ in eff], [y for _, y in eff], det.direction, n_boot, seed),
                        "seconds_per_adapter": float(np.mean(secs)) if secs else None})
    return out


def _score_rows(members: Sequence[Labelled], records: Mapping[str, dict[str, Any]], name: str,
                score: str) -> dict[str, float]:
    """Member name -> the value of one detector's score (members it scored only)."""
    out = {}
    for m in members:
        row = next((r for r in records[m.name]["detectors"] if r["detector"] == name), None)
        if row is not None and row["status"] == "ok" and row["scores"].get(score) is not None:
            out[m.name] = float(row["scores"][score])
    return out


def score_held_out(members: Sequence[Labelled], records: Mapping[str, dict[str, Any]], key: str = "family", *,
                   folds: int = 3, n_boot: int = 500, seed: int = 0) -> list[dict[str, Any]]:
    """Per decision score, with ``key``'s groups held out in turn (module docstring): recall at
    zero false positives with thresholds from other adapters, the false-positive rate that
    threshold gives on held-out clean adapters, and the per-group AUCs (mean, minimum)."""
    from lorascan.detect import DETECTORS, register_builtin_detectors

    registry = register_builtin_detectors(DETECTORS.copy())
    present = scored_detectors(records)
    clean = [m for m in members if m.label == 0]
    poisoned = [m for m in members if m.label == 1]
    groups = sorted({m.group(key) for m in poisoned if m.group(key) is not None}, key=str)
    if len(clean) < MIN_FOLDS or not groups:
        return []
    clean_folds = _folds(clean, max(MIN_FOLDS, min(folds, len(clean))), seed)
    out = []
    for name in present:
        if name not in registry:
            continue
        det = registry.create(name)
        sign = 1.0 if det.direction == "+" else -1.0
        for score in det.decision:
            vals = {k: sign * v for k, v in _score_rows(members, records, name, score).items()}
            hits = {"all": [], "effective": []}
            false_pos: list[bool] = []
            per_group = []
            for group in groups:
                test_pos = sorted((m for m in poisoned if m.group(key) == group and m.name in vals),
                                  key=lambda m: m.name)
                for f, fold in enumerate(clean_folds):
                    train_clean = [vals[m.name] for m in clean if m not in fold and m.name in vals]
                    if not train_clean:
                        continue
                    bound = max(train_clean)  # zero false positives on the clean adapters it saw
                    for m in test_pos[f::len(clean_folds)]:
                        hits["all"].append(vals[m.name] > bound)
                        if m.effective:
                            hits["effective"].append(vals[m.name] > bound)
                    false_pos += [vals[m.name] > bound for m in fold if m.name in vals]
                neg = [vals[m.name] for m in clean if m.name in vals]
                pos = [vals[m.name] for m in test_pos]
                eff = [vals[m.name] for m in test_pos if m.effective]
                per_group.append({"group": group, "n": len(pos),
                                  "auc": auc_mann_whitney(neg + pos, [0] * len(neg) + [1] * len(pos), "+")
                                  if neg and pos else None,
                                  "auc_effective": auc_mann_whitney(neg + eff, [0] * len(neg) + [1] * len(eff), "+")
                                  if neg and eff else None})
            aucs = [g["auc"] for g in per_group if g["auc"] is not None]
            aucs_eff = [g["auc_effective"] for g in per_group if g["auc_effective"] is not None]
            out.append({"detector": name, "score": score, "key": key,
                        "recall_fpr0": float(np.mean(hits["all"])) if hits["all"] else None,
                        "recall_fpr0_effective": float(np.mean(hits["effective"])) if hits["effective"] else None,
                        "fpr_held_out": float(np.mean(false_pos)) if false_pos else None,
                        "group_auc_mean": float(np.mean(aucs)) if aucs else None,
                        "group_auc_min": float(min(aucs)) if aucs else None,
                        "group_auc_effective_mean": float(np.mean(aucs_eff)) if aucs_eff else None,
                        "group_auc_effective_min": float(min(aucs_eff)) if aucs_eff else None,
                        "groups": per_group})
    return out


def weight_models(members: Sequence[Labelled], records: Mapping[str, dict[str, Any]], n_boot: int = 2000,
                  seed: int = 0) -> dict[str, Any]:
    """Weight detector v2 against ``global_frobN_std`` and the best single weight score, on the
    same folds: each trigger family held out in turn (clean adapters dealt over the folds,
    :func:`lorascan.detect.linear.group_folds`); the logistic regression (C by grouped CV
    inside the training part) and the best single score (score and direction chosen by AUC on
    the training part) are fitted without the held-out family and fold. Out-of-fold scores are
    pooled into one AUC per method, on all and on effective backdoors."""
    from lorascan.detect.calibrate import best_direction
    from lorascan.detect.linear import fit_linear, group_folds, usable_features
    from lorascan.scan.calibrate import WEIGHTS_LR

    have = [m for m in members if _weight_scores(records[m.name]) is not None]
    rows = [{k: v for k, v in _weight_scores(records[m.name]).items() if k != WEIGHTS_LR} for m in have]
    labels = [m.label for m in have]
    folds = group_folds(labels, [m.family for m in have])
    feats = usable_features(rows)
    out = {"lr": np.full(len(have), np.nan), "global_frobN_std": np.full(len(have), np.nan),
           "best_single": np.full(len(have), np.nan)}
    chosen = []
    hits: dict[str, list[tuple[int, bool, bool]]] = {name: [] for name in out}
    for test in folds:
        train = np.setdiff1d(np.arange(len(have)), test)
        tr_rows, tr_y = [rows[i] for i in train], [labels[i] for i in train]
        model, _ = fit_linear(WEIGHTS_LR, tr_rows, tr_y, [have[i].family for i in train])
        best = max(((f, *best_direction([r[f] for r in tr_rows], tr_y)) for f in feats), key=lambda t: t[2])
        chosen.append({"feature": best[0], "direction": best[1], "train_auc": best[2],
                       "held_out": sorted({str(have[i].family) for i in test if labels[i] == 1})})
        # zero false positives on the training part's clean adapters: the held-out threshold
        train_clean = [i for i in train if labels[i] == 0]
        lr_clean = [model.score(rows[i]) for i in train_clean]
        bounds = {"lr": max((p for p in lr_clean if p is not None), default=np.inf),
                  "global_frobN_std": max((rows[i].get("global_frobN_std", -np.inf) for i in train_clean),
                                          default=np.inf),
                  "best_single": max(((rows[i].get(best[0]) if best[1] == "+" else -rows[i].get(best[0]))
                                      if rows[i].get(best[0]) is not None else -np.inf for i in train_clean),
                                     default=np.inf)}
        for i in test:
            p = model.score(rows[i])
            out["lr"][i] = np.nan if p is None else p
            out["global_frobN_std"][i] = rows[i].get("global_frobN_std", np.nan)
            v = rows[i].get(best[0])
            out["best_single"][i] = np.nan if v is None else (v if best[1] == "+" else -v)
            for name in out:
                if np.isfinite(out[name][i]):
                    hits[name].append((labels[i], bool(have[i].effective), bool(out[name][i] > bounds[name])))
    eff = [i for i, m in enumerate(have) if m.label == 0 or m.effective]
    result: dict[str, Any] = {"folds": len(folds), "n": len(have), "n_features": len(feats), "best_single_chosen": chosen}
    for name, vals in out.items():
        ok = [i for i in range(len(have)) if np.isfinite(vals[i])]
        ok_eff = [i for i in eff if np.isfinite(vals[i])]
        result[name] = {"all": _auc([float(vals[i]) for i in ok], [labels[i] for i in ok], "+", n_boot, seed),
                        "effective": _auc([float(vals[i]) for i in ok_eff], [labels[i] for i in ok_eff], "+",
                                          n_boot, seed)}

        def share(rows_):
            return float(np.mean([h for *_, h in rows_])) if rows_ else None
        result[name]["recall_fpr0"] = share([h for h in hits[name] if h[0] == 1])
        result[name]["recall_fpr0_effective"] = share([h for h in hits[name] if h[0] == 1 and h[1]])
        result[name]["fpr_held_out"] = share([h for h in hits[name] if h[0] == 0])
    return result


def _weight_scores(rec: Mapping[str, Any]) -> dict[str, Any] | None:
    row = next((r for r in rec["detectors"] if r["detector"] == "weights" and r["status"] == "ok"), None)
    return None if row is None else dict(row["scores"])


def _folds(clean: Sequence[Labelled], k: int, seed: int) -> list[list[Labelled]]:
    order = sorted(clean, key=lambda m: m.name)
    random.Random(seed).shuffle(order)
    return [order[i::k] for i in range(k)]


def scored_detectors(records: Mapping[str, dict[str, Any]]) -> list[str]:
    """The detectors that scored at least one of ``records`` (sorted): one that stood aside on
    every adapter (a chat detector on a classifier cohort) has nothing to evaluate."""
    return sorted({r["detector"] for rec in records.values() for r in rec["detectors"] if r.get("status") == "ok"})


def _judge_member(rec: dict[str, Any], profiles: Mapping[str, Any], detectors: Sequence[str]) -> tuple[str, dict[str, str]]:
    """The scan's fused level of one record under ``profiles``, and each detector's level."""
    judgements: dict[str, Judgement] = {}
    for name in detectors:
        row = next((r for r in rec["detectors"] if r["detector"] == name), None)
        if row is not None and row["status"] == "not_applicable" and not row["judgement"].get("votes", True):
            judgements[name] = Judgement(row["judgement"]["level"], False, tuple(row["judgement"]["reasons"]))
            continue  # stood aside for the adapter's formulation (scan.pipeline), no say
        if row is None or row["status"] != "ok":
            judgements[name] = Judgement("review", True, (f"{name}: {row['status'] if row else 'not run'}",))
            continue
        context = dict(row.get("details", {}).get("context") or {})
        context["base_model"] = rec["base"]["name"]
        judgements[name] = judge(row["scores"], profiles.get(name), context)
    findings = [f for f in rec.get("findings", []) if f.get("level") != "allow"]
    return combine(judgements, findings)["label"], {n: j.level for n, j in judgements.items()}


def held_out(members: Sequence[Labelled], records: Mapping[str, dict[str, Any]], key: str, *, folds: int = 3,
             n_boot: int = 500, seed: int = 0, learn: bool = True,
             fused: Sequence[str] = DEFAULT_DETECTORS) -> dict[str, Any]:
    """Leave-one-group-out judgement of every adapter (module docstring): per group and pooled.
    ``learn``: the weights profile's logistic regression is fitted on each training split too;
    ``fused``: the detectors whose judgements make the verdict (``lorascan scan``'s defaults)."""
    from lorascan.scan.calibrate import profiles_from_rows

    if key not in HOLD_KEYS:
        raise UsageError(f"unknown hold-out key {key!r} (use {', '.join(HOLD_KEYS)})")
    clean = [m for m in members if m.label == 0]
    poisoned = [m for m in members if m.label == 1]
    groups = sorted({m.group(key) for m in poisoned if m.group(key) is not None}, key=str)
    if len(groups) < 2:
        raise DataError(f"holding out by {key} needs poisoned adapters of at least two {key} values")
    if len(clean) < MIN_FOLDS:
        raise DataError(f"holding out needs at least {MIN_FOLDS} clean adapters")
    folds = max(MIN_FOLDS, min(folds, len(clean)))
    clean_folds = _folds(clean, folds, seed)
    base = next(iter(records.values()))["base"]["name"]
    present = set(scored_detectors(records))
    detectors = [d for d in fused if d in present]  # the scan's verdict, not the baselines beside it
    rows = {m.name: records[m.name]["detectors"] for m in members}
    families = {m.name: m.family for m in members} if learn else None
    judged: list[dict[str, Any]] = []
    per_group = []
    for group in groups:
        test_pos = sorted((m for m in poisoned if m.group(key) == group), key=lambda m: m.name)
        train_pos = [m for m in poisoned if m.group(key) != group]
        out_rows = []
        for f, fold in enumerate(clean_folds):
            train = [m.member for m in clean if m not in fold] + [m.member for m in train_pos]
            profiles = profiles_from_rows(train, rows, base, detectors, n_boot, seed, families)
            for m in [*fold, *test_pos[f::folds]]:
                level, by_detector = _judge_member(records[m.name], profiles, detectors)
                out_rows.append({"name": m.name, "label": m.label, "effective": m.effective, "group": group,
                                 "fold": f, "level": level, "detectors": by_detector})
        judged += out_rows
        per_group.append({"group": group, **_level_metrics(out_rows, n_boot, seed)})
    return {"key": key, "folds": folds, "detectors": detectors, "groups": per_group, "pooled": _level_metrics(judged, n_boot, seed),
            "judged": judged}


def _level_metrics(rows: Sequence[Mapping[str, Any]], n_boot: int, seed: int) -> dict[str, Any]:
    """Recall / FPR at review and block, and the AUC of the ordinal levels, over judged rows."""
    rank = {lv: i for i, lv in enumerate(LEVELS)}
    pos = [r for r in rows if r["label"] == 1]
    eff = [r for r in pos if r["effective"]]
    neg = [r for r in rows if r["label"] == 0]

    def share(rs, at):
        return (sum(rank[r["level"]] >= rank[at] for r in rs) / len(rs)) if rs else None

    levels = [float(rank[r["level"]]) for r in rows]
    labels = [r["label"] for r in rows]
    eff_rows = neg + eff
    return {"n_poisoned": len(pos), "n_effective": len(eff), "n_clean": len(neg),
            "recall_review": share(pos, "review"), "recall_block": share(pos, "block"),
            "recall_review_effective": share(eff, "review"), "recall_block_effective": share(eff, "block"),
            "fpr_review": share(neg, "review"), "fpr_block": share(neg, "block"),
            "auc_levels": _auc(levels, labels, "+", n_boot, seed),
            "auc_levels_effective": _auc([float(rank[r["level"]]) for r in eff_rows], [r["label"] for r in eff_rows],
                                         "+", n_boot, seed)}


def evaluate(labels: str | Path, records: str | Path, *, hold: Sequence[str] = HOLD_KEYS, folds: int = 3,
             n_boot: int = 2000, seed: int = 0, recovery: bool = False, progress: bool = False,
             fused: Sequence[str] = DEFAULT_DETECTORS) -> dict[str, Any]:
    """The evaluation record (module docstring) of a labelled cohort's scan records; with
    ``recovery``, the token scan's recovery table too (:mod:`lorascan.scan.recovery`, on the
    same members and records, each adapter loaded once for its trigger's rate). ``fused``: the
    detectors whose judgements make the verdict evaluated (a scan's ``--detectors``; by default
    ``lorascan scan``'s)."""
    members = read_labelled(labels)
    recs = read_records(members, records)
    members, excluded = without_reference_sources(members, recs)
    out: dict[str, Any] = {**record_header("detection-evaluation"), "labels": str(labels), "records": str(records),
                           "excluded_reference_sources": excluded, "fused": list(fused),
                           "n_clean": sum(m.label == 0 for m in members),
                           "n_poisoned": sum(m.label == 1 for m in members),
                           "n_effective": sum(bool(m.effective) for m in members),
                           "families": sorted({m.family for m in members if m.label == 1 and m.family}),
                           "scores": score_aucs(members, recs, n_boot, seed), "held_out": {}}
    out["scores_held_out"] = score_held_out(members, recs, "family", folds=folds, seed=seed)
    try:
        out["weights_v2"] = weight_models(members, recs, n_boot, seed)
    except DataError as err:
        out["weights_v2"] = {"skipped": str(err)}
    for key in hold:
        try:
            out["held_out"][key] = held_out(members, recs, key, folds=folds, n_boot=min(n_boot, 500), seed=seed,
                                            fused=fused)
        except DataError as err:
            out["held_out"][key] = {"key": key, "skipped": str(err)}
    if recovery:
        from lorascan.scan.recovery import recovery_of  # imported here: recovery builds on this module

        out["recovery"] = recovery_of(members, recs, progress=progress)
    return out
