"""Markdown tables of a detection-evaluation record (``lorascan scan-evaluate --markdown``):
the README's tables come from this, not from hand copying. Triggers and tokens are
attacker-controlled in general (here: our own cohort's), so every cell is escaped for Markdown."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from lorascan.text import printable

_MD = str.maketrans({c: f"\\{c}" for c in "\\`*_[]<>|"})  # what can break a table cell or add markup


def cell(value: Any, limit: int = 60) -> str:
    """A table cell: printable, cut, Markdown metacharacters escaped."""
    return printable(str(value), limit).translate(_MD)


def num(x: Any, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def auc(a: Mapping[str, Any] | None) -> str:
    if not a or a.get("auc") is None:
        return "-"
    return f"{a['auc']:.3f} [{a['ci'][0]:.2f}, {a['ci'][1]:.2f}]"


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|",
            *("| " + " | ".join(r) + " |" for r in rows)]


def summary_rows(rec: Mapping[str, Any]) -> list[tuple[str, ...]]:
    """The one-table view (issue 12): per decision score, the weight model and the fused verdict,
    AUC all / effective (in-sample, threshold-free), recall of effective backdoors at zero false
    positives and the false-positive rate on held-out clean adapters (thresholds from other
    adapters, families held out), the held-out-family AUC on effective backdoors (mean and
    minimum over families), and the seconds per adapter. Cells are plain text: the caller escapes
    the first two (names) for its medium."""
    held = {(h["detector"], h["score"]): h for h in rec.get("scores_held_out", [])}
    rows = []
    for s in rec["scores"]:
        h = held.get((s["detector"], s["score"]), {})
        rows.append((str(s["detector"]), str(s["score"]), auc(s["all"]), auc(s["effective"]),
                     num(h.get("recall_fpr0_effective")), num(h.get("fpr_held_out")),
                     f"{num(h.get('group_auc_effective_mean'))} (min {num(h.get('group_auc_effective_min'))})",
                     num(s["seconds_per_adapter"], 1)))
    w = rec.get("weights_v2") or {}
    if "lr" in w:
        rows.append(("weights v2", "logistic regression", auc(w["lr"]["all"]), auc(w["lr"]["effective"]),
                     num(w["lr"].get("recall_fpr0_effective")), num(w["lr"].get("fpr_held_out")),
                     f"{num(w['lr']['effective'].get('auc'))} (pooled)", "-"))
    fam = (rec.get("held_out") or {}).get("family") or {}
    if "pooled" in fam:
        p = fam["pooled"]
        rows.append(("lorascan scan", "fused verdict (block)", "-", "-", num(p["recall_block_effective"]),
                     num(p["fpr_block"]), f"{auc(p['auc_levels_effective'])} (levels, pooled)", "-"))
        rows.append(("lorascan scan", "fused verdict (review)", "-", "-", num(p["recall_review_effective"]),
                     num(p["fpr_review"]), "", "-"))
    return rows


SUMMARY_HEAD = ("detector", "score", "AUC all", "AUC effective", "recall eff. at FPR 0 (held out)",
                "clean FPR (held out)", "held-out-family AUC eff.", "s / adapter")


def markdown(rec: Mapping[str, Any]) -> str:
    """Every table of the record, in the order ``scan-evaluate`` prints them."""
    out = [f"{rec['n_clean']} clean, {rec['n_poisoned']} poisoned ({rec['n_effective']} effective); families: "
           + ", ".join(cell(f) for f in rec["families"]), ""]
    out += _table(SUMMARY_HEAD, [(cell(r[0]), cell(r[1]), *r[2:]) for r in summary_rows(rec)]) + [""]
    out += _table(("detector", "score", "AUC all", "AUC effective", "s / adapter"),
                  [(cell(s["detector"]), cell(s["score"]), auc(s["all"]), auc(s["effective"]),
                    num(s["seconds_per_adapter"], 1)) for s in rec["scores"]]) + [""]
    w = rec.get("weights_v2") or {}
    if "lr" in w:
        out += _table(("weight score, families held out", "AUC all", "AUC effective"),
                      [(name, auc(w[key]["all"]), auc(w[key]["effective"]))
                       for name, key in (("logistic regression (v2)", "lr"), ("global_frobN_std (paper)",
                                                                               "global_frobN_std"),
                                         ("best single score (chosen per fold)", "best_single"))]) + [""]
    for key, h in rec.get("held_out", {}).items():
        if "skipped" in h:
            out += [f"held out by {key}: skipped ({cell(h['skipped'], 200)})", ""]
            continue
        rows = [(cell(g["group"]), str(g["n_poisoned"]), str(g["n_effective"]), num(g["recall_review"]),
                 num(g["recall_block"]), num(g["recall_review_effective"]), num(g["recall_block_effective"]),
                 num(g["fpr_review"]), num(g["fpr_block"]), auc(g["auc_levels_effective"]))
                for g in [*h["groups"], {"group": "pooled", **h["pooled"]}]]
        over = f", over {', '.join(cell(d) for d in h['detectors'])}" if h.get("detectors") else ""
        out += [f"Fused verdict, held out by {key} ({h['folds']} clean folds{over}):", ""]
        out += _table((key, "poisoned", "effective", "recall >= review", "recall block", "effective >= review",
                       "effective block", "clean FPR review", "clean FPR block", "AUC of levels (effective)"),
                      rows) + [""]
    r = rec.get("recovery")
    if r:
        out += _table(("family", "adapters", "top-10", "rank 1-3", "rank 1", "phrase >= trigger", "working other"),
                      [(cell(f), str(s["n"]), num(s["top10"], 2), num(s["top3"], 2), num(s["top1"], 2),
                        num(s["reconstructed_ok"], 2), num(s["working_different"], 2))
                       for f, s in [*r["families"].items(), ("effective", r["effective"]), ("all", r["all"])]]) + [""]
        out += _table(("family", "trigger", "r", "ASR", "trigger rate", "rank", "top token (rate)",
                       "reconstructed (rate)", "token_lift"),
                      [(cell(x["family"]), cell(x['trigger'], 40), str(x["rank_lora"]), num(x["asr"]),
                        num(x["trigger_rate"]), "-" if x["rank"] is None else str(x["rank"]),
                        f"{cell(x.get('top_token'), 30)} ({num(x.get('top_rate'), 2)})",
                        f"{cell(x.get('reconstructed'), 50)} ({num(x.get('reconstructed_rate'), 2)})",
                        num(x.get("token_lift")))
                       for x in r["rows"]]) + [""]
    return "\n".join(out)
