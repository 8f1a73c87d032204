"""A self-contained HTML page for a scan record, rebuilt from the JSON record alone
(``lorascan report RECORD.json --html OUT``).

jinja2 with autoescape renders every string the record holds (adapter config values, module
names, probe prefixes, tokens, error messages: all attacker-controlled or derived from the
adapter) as text, never markup; the page has no script, and its charts are inline SVG bars
built here from numbers. A Content-Security-Policy meta tag forbids scripts outright.
"""

from __future__ import annotations

from typing import Any, Mapping

from lorascan import __version__


def _env():
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("lorascan.report", "templates"),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True)
    env.filters["g"] = lambda x: "n/a" if x is None else (f"{x:.4g}" if isinstance(x, float) else str(x))
    return env


def _bars(rows: list[tuple[str, float]], limit: int = 45) -> list[dict[str, Any]]:
    """Label/value rows for a horizontal bar chart (values in [0, 1])."""
    out = []
    for label, value in rows[:limit]:
        v = min(max(float(value), 0.0), 1.0)
        out.append({"label": str(label)[:120], "value": float(value), "width": round(v * 300, 1)})
    return out


def _charts(rec: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    charts: dict[str, list[dict[str, Any]]] = {}
    for d in rec.get("detectors", []):
        det = d.get("details") or {}
        if d.get("detector") == "behavioral" and det.get("probes"):
            rows = sorted(((p["prefix"], p["attack_rate"]) for p in det["probes"]), key=lambda r: -r[1])
            charts["behavioral"] = _bars(rows)
        if d.get("detector") == "tokens" and det.get("tokens"):
            charts["tokens"] = _bars([(t.get("token"), t.get("attack_rate", 0.0)) for t in det["tokens"]], 15)
        if d.get("detector") == "chat-tokens" and det.get("tokens"):
            charts["chat-tokens"] = _bars([(t.get("token"), t.get("rate", 0.0)) for t in det["tokens"]], 15)
    return charts


def to_html(rec: Mapping[str, Any]) -> str:
    template = _env().get_template("scan.html")
    return template.render(rec=rec, charts=_charts(rec), version=__version__)
