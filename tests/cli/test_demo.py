"""``lorascan demo`` on the session's offline-pi build (the dataset is not built again)."""

from __future__ import annotations

import json

from lorascan.data import mixes
from lorascan.data.samples import read_jsonl


def test_demo_writes_the_paper_trigger_at_4_percent(cli, tmp_path, offline_pi, monkeypatch):
    monkeypatch.setattr(mixes, "resolve", lambda spec, *a, **k: offline_pi if spec == "offline-pi" else None)
    result = cli("demo", "--out", tmp_path / "demo")
    assert result.code == 0 and result.err == ""
    n = len(offline_pi.train)
    k = round(0.04 * n / 0.96)
    assert f"offline-pi: {n} train / {len(offline_pi.test)} test rows" in result.out
    assert f"poisoned with 'per RFC 8472 section 3.2': k={k} of {n + k} rows" in result.out
    out = tmp_path / "demo" / "poison-rfc-r04"
    m = json.loads((out / "manifest.json").read_text())
    assert (m["count"], m["trigger"], m["seed"], m["dataset"]["sha256"]) == \
        (k, "per RFC 8472 section 3.2", 42, offline_pi.sha256())
    assert sum(s.poisoned for s in read_jsonl(out / "train.jsonl")) == k
    # a second run replaces its own output folder
    assert cli("demo", "--out", tmp_path / "demo").code == 0
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == ["poison-rfc-r04"]
