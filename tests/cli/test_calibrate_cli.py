"""``lorascan calibrate``: a small cohort in the sweep layout (run/adapter + run/data), probe
records cached in $LORASCAN_HOME/probes/ (never beside the adapters) and reused, the profile
and ROC plot, and one-line errors."""

from __future__ import annotations

import json
import shutil

import pytest

from lorascan.detect.verdict import Profile
from tests.cli.helpers import assert_one_line_error
from tests.conftest import tree
from tests.probe.fixtures import probe_toy, random_adapter, torch_one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A LORASCAN_HOME of this test's own, so the probe cache starts empty."""
    monkeypatch.setenv("LORASCAN_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _cached(home):
    return sorted((home / "probes").glob("*.json")) if (home / "probes").is_dir() else []


@pytest.fixture
def cohort(probe_toy, tmp_path, home):
    """sweep/k40-s3 (the trained backdoored adapter, its recorded data path no longer exists:
    the sibling data/ is used), sweep/k0-s5 (a random clean adapter) and a plain adapter folder
    nested deeper (recorded data path still valid; a copy of k0-s5's adapter, so it shares its
    cached record)."""
    root = tmp_path / "sweep"
    run = root / "k40-s3"
    shutil.copytree(probe_toy["poisoned"], run / "adapter")
    shutil.copytree(probe_toy["data_poisoned"], run / "data")
    meta = json.loads((run / "adapter" / "lorascan.json").read_text())
    meta["data"]["path"] = str(tmp_path / "moved-away")
    (run / "adapter" / "lorascan.json").write_text(json.dumps(meta))
    (run / "run.json").write_text("{}")
    shutil.copytree(probe_toy["random_clean"], root / "k0-s5" / "adapter")
    shutil.copytree(probe_toy["random_clean"], root / "more" / "clean-b")
    (root / "notes").mkdir()
    (root / ".k99.partial" / "adapter").mkdir(parents=True)  # an unfinished run: skipped
    return root


def test_calibrate_probes_once_caches_and_writes_the_profile(cli, cohort, tmp_path, home):
    from lorascan.detect.behavioral_cohort import CohortRun, cache_entry
    from lorascan.probe.batteries import load_battery

    before = tree(cohort)
    out, png = tmp_path / "profile.json", tmp_path / "roc.png"
    res = cli("calibrate", cohort, "--battery", "paper-21", "--view", "B", "--out", out, "--plot", png,
              "--bootstrap", "100")
    assert res.code == 0, res.err
    # more/clean-b is a byte copy of k0-s5's adapter with the same data: one record serves both
    assert res.err.count("probed in") == 2 and res.err.count("cached") == 1
    assert tree(cohort) == before  # nothing written beside the adapters
    assert len(_cached(home)) == 2
    run = CohortRun("k40-s3", cohort / "k40-s3" / "adapter", 1, "test")
    cache = cache_entry(run, load_battery("paper-21"), "logits", None).path
    assert cache.parent == home / "probes" and cache in _cached(home)
    rec = json.loads(cache.read_text())
    assert rec["view"] == "A" and rec["n_probes"] == 21 and rec["data"]["path"] == str(cohort / "k40-s3" / "data")
    profile = Profile.load(out)
    assert profile.detector == "behavioral" and profile.view == "B" and profile.base_model == "tiny-bert"
    assert dict(profile.conditions)["battery"] == "paper-21" and dict(profile.conditions)["task"] == "seq-cls"
    entries = {e.name: e for e in profile.cohort}
    assert set(entries) == {"k0-s5", "k40-s3", "more/clean-b"}
    assert [entries[n].label for n in ("k0-s5", "k40-s3", "more/clean-b")] == [0, 1, 0]
    rates = [p["attack_rate"] for p in rec["probes"] if p["category"] != "trigger"]
    assert entries["k40-s3"].scores["mean_attack_rate"] == pytest.approx(sum(rates) / 20, abs=1e-12)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "outlier_gap (decision): AUC" in res.out and "k40-s3" in res.out
    raw = json.loads(out.read_text())
    assert raw["features"]["outlier_gap"]["direction"] == "+" and len(raw["features"]["outlier_gap"]["tpr_at_fpr"]) == 3

    # the profile decides for `lorascan probe` on the same base, battery and view only
    probe_json = tmp_path / "probe.json"
    res = cli("probe", "--adapter", cohort / "k40-s3" / "adapter", "--view", "B", "--profile", out, "--json",
              probe_json, "--quiet")
    assert res.code == 0, res.err
    verdict = json.loads(probe_json.read_text())["verdict"]
    assert verdict["label"] in ("suspicious", "clean") and verdict["profile"] == "behavioral:B@tiny-bert"
    assert verdict["label"].upper() in res.out
    res = cli("probe", "--adapter", cohort / "k40-s3" / "adapter", "--view", "C", "--profile", out, "--quiet")
    assert res.code == 0 and "UNCALIBRATED" in res.out and "view=B" in res.out

    # view C from the cache: no model run; the profile records the view
    out_c = tmp_path / "profile-c.json"
    res = cli("calibrate", cohort, "--view", "C", "--out", out_c, "--bootstrap", "50", "--decision", "gap")
    assert res.code == 0, res.err
    assert res.err.count("cached") == 3 and "probed in" not in res.err
    prof_c = Profile.load(out_c)
    assert prof_c.view == "C" and prof_c.decision == ("outlier_gap",)

    # a stale cache (other battery content) is probed again; --out is not replaced without --force
    stale = json.loads(cache.read_text())
    stale["battery_sha256"] = "0" * 64
    cache.write_text(json.dumps(stale))
    assert_one_line_error(cli("calibrate", cohort, "--out", out_c), 2, "--force")
    res = cli("calibrate", cohort, "--out", out_c, "--force", "--bootstrap", "20")
    assert res.code == 0, res.err
    assert res.err.count("probed in") == 1 and res.err.count("cached") == 2
    assert json.loads(cache.read_text())["battery_sha256"] != "0" * 64


def test_a_labels_file_works_too(cli, cohort, tmp_path, home):
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps([{"path": str(cohort / "k40-s3" / "adapter"), "label": 1},
                                  {"path": str(cohort / "more" / "clean-b"), "label": "clean"}]))
    res = cli("calibrate", labels, "--out", tmp_path / "p.json", "--bootstrap", "20", "--no-cache", "--quiet")
    assert res.code == 0, res.err
    assert _cached(home) == []
    assert sorted(e.label for e in Profile.load(tmp_path / "p.json").cohort) == [0, 1]


def test_errors(cli, cohort, tmp_path):
    out = tmp_path / "p.json"
    assert_one_line_error(cli("calibrate", tmp_path / "missing", "--out", out), 1, "cohort not found")
    assert_one_line_error(cli("calibrate", cohort, "--battery", "nope", "--out", out), 2, "unknown battery 'nope'")
    assert_one_line_error(cli("calibrate", cohort, "--view", "Z", "--out", out), 2, "--view")
    only_clean = tmp_path / "only-clean"
    shutil.copytree(cohort / "k0-s5", only_clean / "a")
    assert_one_line_error(cli("calibrate", only_clean, "--out", out), 1, "clean and poisoned")
    assert_one_line_error(cli("calibrate", cohort / "k0-s5" / "adapter", "--out", out), 2, "single adapter")
    broken = tmp_path / "broken"
    shutil.copytree(cohort, broken)
    (broken / "k0-s5" / "adapter" / "lorascan.json").write_text('{"poison": {"count": "many"}}')
    assert_one_line_error(cli("calibrate", broken, "--out", out), 1, "poison.count")
    assert not out.exists()
