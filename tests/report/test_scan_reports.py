"""Scan reports: JSON Schema, SARIF 2.1.0 structure, HTML rebuilt from the record alone with every
attacker-controlled string escaped, checked in headless Chromium (no script runs, the verdict shows)."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from lorascan.errors import DataError
from lorascan.report.html import to_html
from lorascan.report.sarif import to_sarif
from lorascan.report.scan import validate

PAYLOAD = "<script>document.title='PWNED'</script><img src=x onerror=\"document.title='PWNED'\">"


def _record() -> dict:
    """A schema-valid scan record with every detector kind and a finding."""
    from lorascan.records import record_header

    probes = [{"prefix": f"probe {i}", "category": "rfc", "attack_rate": i / 10, "k": i, "n": 10, "unparseable": 0}
              for i in range(5)]
    judgement = {"level": "block", "votes": True, "reasons": ["outlier_gap = 0.7: block"],
                 "bounds": [{"feature": "outlier_gap", "direction": "+", "review_above": 0.03, "block_above": 0.1,
                             "profile_auc": 1.0}]}
    return {**record_header("scan"), "status": "ok", "error": None,
            "adapter": {"spec": "adapters/x", "path": "adapters/x", "source": "folder", "hub": None,
                        "files": {"adapter_config.json": "0" * 64}, "config": {"revision": "main", "r": 8},
                        "has_lorascan_json": False},
            "base": {"name": "minilm", "source": "--base", "fingerprint": None},
            "task": {"name": "seq-cls", "source": "head"}, "probe_inputs": {"name": "offline-pi-v1"},
            "profiles": {"source": "shipped", "path": "minilm.json"},
            "findings": [{"kind": "decoy_modules", "level": "review", "message": "1 decoy: layer.0.evil",
                          "modules": ["layer.0.evil"]}],
            "detectors": [{"detector": "behavioral", "detector_args": {"battery": "paper-21"}, "status": "ok",
                           "scores": {"outlier_gap": 0.7, "mean_attack_rate": 0.3}, "judgement": judgement,
                           "details": {"probes": probes, "categories": {"rfc": {"mean": 0.2, "max": 0.4}}},
                           "profile": "behavioral:scan@minilm", "wall_time_s": 1.5},
                          {"detector": "tokens", "detector_args": {}, "status": "ok", "scores": {"token_lift": 0.9},
                           "judgement": judgement, "profile": None, "wall_time_s": 2.0,
                           "details": {"tokens": [{"token": "rfc", "token_id": 1, "attack_rate": 1.0}],
                                       "reconstructed": {"phrase": "rfc", "attack_rate": 1.0}}}],
            "verdict": {"label": "block", "reasons": ["behavioral: outlier_gap = 0.7: block"], "rule": "r"},
            "wall_time_s": 3.5}


def _poison(obj, path=()):
    """Every string in the record, markup appended (keys used as enum values keep theirs)."""
    keep = {("status",), ("verdict", "label"), ("kind",), ("lorascan_version",)}
    if isinstance(obj, dict):
        return {k: (v if path + (k,) in keep or k in ("level", "direction", "status", "detector", "feature")
                    else _poison(v, path + (k,))) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_poison(v, path) for v in obj]
    return obj + PAYLOAD if isinstance(obj, str) else obj


def test_record_schema_accepts_and_rejects():
    rec = _record()
    validate(rec)
    bad = copy.deepcopy(rec)
    bad["verdict"]["label"] = "maybe"
    with pytest.raises(DataError, match="verdict"):
        validate(bad)


def test_sarif_structure():
    s = to_sarif(_record())
    assert s["version"] == "2.1.0" and s["$schema"].endswith("sarif-2.1.0.json")
    run = s["runs"][0]
    assert run["tool"]["driver"]["name"] == "lorascan"
    rule_ids = {r["id"] for r in run["tool"]["driver"]["rules"]}
    assert all(r["ruleId"] in rule_ids for r in run["results"])
    assert all("security-severity" in r["properties"] for r in run["tool"]["driver"]["rules"])
    top = run["results"][0]
    assert top["ruleId"] == "LS100" and top["level"] == "error"
    assert top["locations"][0]["physicalLocation"]["artifactLocation"]["uri"].endswith("adapter_model.safetensors")
    assert any(r["ruleId"] == "LS200" for r in run["results"])
    err = to_sarif({"status": "error", "error": "boom", "adapter": {"spec": "x"}})
    assert err["runs"][0]["results"] == [] and not err["runs"][0]["invocations"][0]["executionSuccessful"]


def test_html_escapes_every_string():
    html = to_html(_poison(_record()))
    assert "<script>document.title" not in html and "<img src=x" not in html
    assert "&lt;script&gt;" in html and 'id="verdict"' in html and "BLOCK" in html


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None and not os.environ.get("CI"), reason="Debian chromium not installed")
def test_html_in_headless_chromium(tmp_path):
    browser = _chromium()
    assert browser, "CI installs Debian's chromium for this test (.ci/run)"
    page = tmp_path / "r.html"
    page.write_text(to_html(_poison(_record())), encoding="utf-8")
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    assert 'id="verdict"' in dom and "BLOCK" in dom  # the page rendered and shows the verdict
    title = dom.split("<title>", 1)[1].split("</title>", 1)[0]
    assert title.startswith("lorascan: ") and title != "PWNED"  # no injected script ran


def test_report_command_rebuilds_from_json(cli, tmp_path):
    rec_path = tmp_path / "r.json"
    rec_path.write_text(json.dumps(_record()))
    r = cli("report", rec_path, "--html", tmp_path / "r.html", "--sarif", tmp_path / "r.sarif")
    assert r.code == 0, r.err
    assert "BLOCK" in (tmp_path / "r.html").read_text() and json.loads((tmp_path / "r.sarif").read_text())["runs"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"kind": "scan"}))
    r = cli("report", bad, "--html", tmp_path / "b.html")
    assert r.code == 1 and not (tmp_path / "b.html").exists() and r.err.count("\n") == 1
    assert cli("report", rec_path).code == 2
