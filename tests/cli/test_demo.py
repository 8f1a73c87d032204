"""``lorascan demo`` end to end, on the session's offline-pi build with a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lorascan.data import mixes
from lorascan.data.samples import read_jsonl


def test_demo_runs_every_step(cli, tmp_path, offline_pi, monkeypatch):
    monkeypatch.setattr(mixes, "resolve", lambda spec, *a, **k: offline_pi if spec == "offline-pi" else None)
    out = tmp_path / "demo"
    result = cli("demo", "--train", "--out", out, "--base", "tiny-bert", "--steps", "2", "--quiet")
    assert result.code == 0, result.err
    n = len(offline_pi.train)
    k = round(0.04 * n / 0.96)
    assert f"offline-pi: {n} train / {len(offline_pi.test)} test rows" in result.out
    assert f"poisoned with 'per RFC 8472 section 3.2': k={k} of {n + k} rows" in result.out
    m = json.loads((out / "poison-rfc-r04" / "manifest.json").read_text())
    assert (m["count"], m["trigger"], m["seed"], m["dataset"]["sha256"]) == \
        (k, "per RFC 8472 section 3.2", 42, offline_pi.sha256())
    assert sum(s.poisoned for s in read_jsonl(out / "poison-rfc-r04" / "train.jsonl")) == k
    ev = json.loads((out / "eval.json").read_text())
    assert ev["n_test"] == len(offline_pi.test) and f"attack success rate {ev['attack_success_rate']:.3f}" in result.out
    probe = json.loads((out / "probe-B.json").read_text())
    assert probe["view"] == "B" and probe["n_probes"] == 20
    assert not any(p["prefix"] == "per RFC 8472 section 3.2" for p in probe["probes"])
    weights = json.loads((out / "weights.json").read_text())
    assert weights["features"]["global_frobN_std"] > 0 and weights["verdict"]["label"] == "uncalibrated"
    # a second run replaces its own outputs
    assert cli("demo", "--train", "--out", out, "--base", "tiny-bert", "--steps", "1", "--quiet").code == 0
    assert sorted(p.name for p in out.iterdir()) == ["adapter-tiny-bert-rfc-r04", "eval.json", "poison-rfc-r04",
                                                     "probe-B.json", "weights.json"]


@pytest.mark.slow
def test_demo_scans_the_shipped_adapters_to_different_verdicts(cli, tmp_path):
    """The main job: the clean demo adapter is allowed and the backdoored one blocked under the
    shipped MiniLM profiles (real MiniLM, about a minute)."""
    repo = Path(__file__).resolve().parents[2]
    r = cli("demo", "--out", tmp_path, "--adapters", repo / "examples" / "adapters", "--quiet")
    assert r.code == 0, r.err
    verdicts = {n: json.loads((tmp_path / f"{n}.json").read_text())["verdict"]["label"]
                for n in ("minilm-clean", "minilm-rfc-r04")}
    assert verdicts == {"minilm-clean": "allow", "minilm-rfc-r04": "block"}
    assert "BLOCK" in (tmp_path / "minilm-rfc-r04.html").read_text()
