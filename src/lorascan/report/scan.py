"""The scan record on disk and on the terminal: JSON (validated against the shipped JSON
Schema), HTML and SARIF rebuilt from it, and the short text summary."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from lorascan.errors import DataError
from lorascan.records import dumps, write_text_atomic


def schema() -> dict[str, Any]:
    return json.loads(resources.files("lorascan.report").joinpath("schema/scan.schema.json").read_text("utf-8"))


def validate(rec: Any, where: str = "scan record") -> None:
    """A DataError naming the first place ``rec`` breaks the schema."""
    import jsonschema

    errors = sorted(jsonschema.Draft202012Validator(schema()).iter_errors(rec), key=lambda e: list(e.path))
    if errors:
        e = errors[0]
        at = "/".join(map(str, e.path)) or "(top)"
        raise DataError(f"{where} is not a valid scan record: at {at}: {e.message[:200]}")


def render(rec: Mapping[str, Any], fmt: str) -> str:
    if fmt == "json":
        return dumps(rec)
    if fmt == "html":
        from lorascan.report.html import to_html

        return to_html(rec)
    if fmt == "sarif":
        from lorascan.report.sarif import to_sarif

        return dumps(to_sarif(rec))
    raise ValueError(fmt)


def write_reports(rec: Mapping[str, Any], targets: Mapping[str, str | None]) -> list[str]:
    """Render every format first, then write each atomically: a failure leaves no partial file."""
    texts = {fmt: render(rec, fmt) for fmt, path in targets.items() if path}
    written: list[str] = []
    try:
        for fmt, text in texts.items():
            write_text_atomic(targets[fmt], text)
            written.append(str(targets[fmt]))
    except DataError:
        for path in written:  # all the reports or none
            Path(path).unlink(missing_ok=True)
        raise
    return written


def summary_lines(rec: Mapping[str, Any]) -> list[str]:
    """The terminal summary (plain text; the caller escapes it for the console)."""
    a = rec.get("adapter") or {}
    v = rec["verdict"]
    if rec.get("status") != "ok":
        return [f"{a.get('spec')}: ERROR {rec.get('error')}"]
    lines = [f"{a.get('spec')}: {v['label'].upper()}  (base {rec['base']['name']}, task {rec['task']['name'] or 'none'}, "
             f"{rec.get('wall_time_s', 0):.1f} s)"]
    for d in rec["detectors"]:
        j = d["judgement"]
        lines.append(f"  {d['detector']:<11} {j['level']:<7}{'' if j['votes'] else ' (not voting)'} "
                     f"{(j['reasons'] or [''])[0]}")
    lines += [f"  reason: {r}" for r in v["reasons"][:4]]
    loc = rec.get("localisation")
    if loc:
        lines.append(localisation_line(loc))
    return lines


def carrier_text(c: Mapping[str, Any]) -> str:
    """One carrier (:mod:`lorascan.scan.localise`) in words: type, layers, ASR with it removed."""
    layers = f"layer {c['start']}" if c["start"] == c["end"] else f"layers {c['start']}-{c['end']}"
    return f"{c['label']} {layers} (ASR {c['asr']:.3f}, -{c['relative_drop']:.0%})"


def localisation_line(loc: Mapping[str, Any]) -> str:
    """The localisation in one line: the candidate and the modules that carry it, or why not."""
    if loc.get("status") != "ok":
        return f"  localisation {'skipped' if loc.get('status') == 'skipped' else 'failed'}: {loc.get('reason')}"
    cand = loc["candidate"]
    where = "; ".join(carrier_text(c) for c in loc["carriers"]) or "no single window lowers it"
    return (f"  localisation: candidate {cand['trigger']!r} (ASR {loc['unpatched']['asr']:.3f} unpatched, base as "
            f"reference, {loc['window']}-layer windows): carried by {where}")
