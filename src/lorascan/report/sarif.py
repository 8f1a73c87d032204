"""SARIF 2.1.0 for a scan record (OASIS SARIF v2.1.0), rebuilt from the JSON record alone.

One rule per finding kind; each rule carries ``security-severity`` (the 0-10 scale code-scanning
tools sort by): a blocked adapter's verdict 9.0, review 5.0, a detector's own findings by their
level. The location is the adapter's weights file. The verdict's result carries the localisation
(:mod:`lorascan.scan.localise`) in its properties and names the carrying modules in its message. A record of an adapter that could not be
scanned becomes a failed invocation with no results, never a clean run.
"""

from __future__ import annotations

from typing import Any, Mapping

from lorascan import __version__

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
LEVEL = {"block": "error", "review": "warning", "allow": "note"}
SEVERITY = {"block": "9.0", "review": "5.0", "allow": "0.0"}
RULES = {
    "LS100": ("backdoor-verdict", "The combined scan verdict for the adapter (allow, review or block)."),
    "LS101": ("behavioral-battery", "Probe battery attack rates (paper §7: outlier_gap, mean_attack_rate)."),
    "LS102": ("weight-statistics", "Weight-level features of the LoRA update B·A (paper §8)."),
    "LS103": ("token-scan", "Vocabulary tokens that flip injections to benign when placed as a trigger."),
    "LS104": ("detector", "Another registered detector's judgement."),
    "LS200": ("decoy-modules", "LoRA modules for modules the base model does not have (ignored when loaded)."),
    "LS201": ("structural-finding", "A structural finding about the adapter's files."),
}
DETECTOR_RULES = {"behavioral": "LS101", "weights": "LS102", "tokens": "LS103"}


def _location(rec: Mapping[str, Any]) -> list[dict[str, Any]]:
    adapter = rec.get("adapter") or {}
    path = str(adapter.get("path") or adapter.get("spec") or "")
    uri = (path.rstrip("/") + "/adapter_model.safetensors") if path else "adapter_model.safetensors"
    return [{"physicalLocation": {"artifactLocation": {"uri": uri}}}]


def _result(rule: str, level: str, text: str, rec: Mapping[str, Any], props: Mapping[str, Any]) -> dict[str, Any]:
    return {"ruleId": rule, "level": LEVEL.get(level, "warning"), "message": {"text": text},
            "locations": _location(rec), "properties": {"lorascan-level": level, **props}}


def _localisation_text(loc: Mapping[str, Any] | None) -> str:
    """The verdict message's tail: the modules that carry the backdoor, when localised."""
    from lorascan.report.scan import carrier_text

    if not loc or loc.get("status") != "ok" or not loc.get("carriers"):
        return ""
    return ". Carried by " + "; ".join(carrier_text(c) for c in loc["carriers"])


def _localisation_props(loc: Mapping[str, Any] | None) -> dict[str, Any]:
    """The verdict result's ``localisation`` property: status, reason, candidate and carriers."""
    if not loc:
        return {}
    keep = {k: loc.get(k) for k in ("status", "reason", "candidate", "window", "carriers") if k in loc}
    if "unpatched" in loc:
        keep["unpatched_asr"] = loc["unpatched"].get("asr")
    return {"localisation": keep}


def to_sarif(rec: Mapping[str, Any]) -> dict[str, Any]:
    results = []
    ok = rec.get("status") == "ok"
    if ok:
        v = rec["verdict"]
        results.append(_result("LS100", v["label"], f"verdict {v['label']}: " + "; ".join(v["reasons"][:5])
                               + _localisation_text(rec.get("localisation")), rec,
                               {"security-severity": SEVERITY.get(v["label"], "5.0"),
                                **_localisation_props(rec.get("localisation"))}))
        for d in rec.get("detectors", []):
            j = d.get("judgement") or {}
            level = j.get("level", "review")
            if level == "allow":
                continue
            reasons = "; ".join(j.get("reasons", [])[:3]) or d.get("reason", "")
            results.append(_result(DETECTOR_RULES.get(d["detector"], "LS104"), level,
                                   f"{d['detector']}: {reasons}", rec,
                                   {"security-severity": SEVERITY.get(level, "5.0"), "detector": d["detector"],
                                    "status": d.get("status"), "votes": j.get("votes")}))
        for f in rec.get("findings", []):
            level = f.get("level", "review")
            if level == "allow":
                continue
            rule = "LS200" if f.get("kind") == "decoy_modules" else "LS201"
            results.append(_result(rule, level, f"{f.get('kind')}: {f.get('message')}", rec,
                                   {"security-severity": SEVERITY.get(level, "5.0")}))
    rules = [{"id": rid, "name": name, "shortDescription": {"text": desc},
              "properties": {"security-severity": "9.0" if rid == "LS100" else "5.0"}}
             for rid, (name, desc) in RULES.items()]
    invocation = {"executionSuccessful": ok}
    if not ok:
        invocation["toolExecutionNotifications"] = [{"level": "error", "message": {"text": str(rec.get("error"))}}]
    return {"$schema": SCHEMA, "version": "2.1.0",
            "runs": [{"tool": {"driver": {"name": "lorascan", "version": __version__, "semanticVersion": __version__,
                                          "rules": rules}},
                      "invocations": [invocation], "results": results}]}
