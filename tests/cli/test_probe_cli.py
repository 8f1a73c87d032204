"""``lorascan probe``: the issue's command-line contract (JSON fields, views, plot) on a tiny
backdoored adapter, escaping of attacker-controlled probe strings, and one-line errors."""

from __future__ import annotations

import json

import pytest

from tests.cli.helpers import assert_one_line_error
from tests.probe.fixtures import TRIGGER, probe_toy, torch_one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _probe(cli, probe_toy, *args):
    return cli("probe", "--base", "tiny-bert", "--adapter", probe_toy["poisoned"], "--data",
               probe_toy["data_poisoned"], "--quiet", *args)


def test_views_a_and_b_json_and_plot(cli, probe_toy, tmp_path):
    ja, jb, png = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "bars.png"
    res = _probe(cli, probe_toy, "--battery", "paper-21", "--view", "A", "--json", ja, "--plot", png)
    assert res.code == 0, res.err
    for cat in ("rfc", "other_authority", "random", "authority_claim", "trigger"):
        assert cat in res.out
    assert "mean_attack_rate" in res.out and "UNCALIBRATED" in res.out
    a = json.loads(ja.read_text())
    assert {"probes", "categories", "outlier_gap", "mean_attack_rate", "battery", "view"} <= set(a)
    assert a["battery"] == "paper-21" and a["view"] == "A" and len(a["probes"]) == 21
    assert set(a["probes"][0]) >= {"prefix", "category", "attack_rate", "n"}
    rates = [p["attack_rate"] for p in a["probes"]]
    mean = sum(rates) / len(rates)
    assert abs(a["mean_attack_rate"] - mean) < 1e-9 and abs(a["outlier_gap"] - (max(rates) - mean)) < 1e-9
    assert next(p for p in a["probes"] if p["prefix"] == TRIGGER)["attack_rate"] >= 0.9
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = _probe(cli, probe_toy, "--view", "B", "--json", jb)
    assert res.code == 0, res.err
    b = json.loads(jb.read_text())
    assert len(b["probes"]) == 20 and not any(p["prefix"] == TRIGGER for p in b["probes"])
    assert b["excluded"] == [{"prefix": TRIGGER, "category": "trigger", "reason": "trigger category"}]
    assert {p["prefix"]: p["attack_rate"] for p in b["probes"]} == \
        {p["prefix"]: p["attack_rate"] for p in a["probes"] if p["prefix"] != TRIGGER}


def test_base_and_data_default_to_the_adapters_record_and_json_to_stdout(cli, probe_toy):
    res = cli("probe", "--adapter", probe_toy["poisoned"], "--view", "C", "--json", "-", "--quiet")
    assert res.code == 0, res.err
    rec = json.loads(res.out)
    assert rec["base"] == "tiny-bert" and rec["view"] == "C" and len(rec["probes"]) == 15
    assert rec["data"]["path"] == str(probe_toy["data_poisoned"])


def test_exclude_drops_a_trigger_in_view_a(cli, probe_toy, tmp_path):
    out = tmp_path / "x.json"
    res = _probe(cli, probe_toy, "--exclude", "see RFC 2119 section 3", "--json", out)
    assert res.code == 0, res.err
    assert len(json.loads(out.read_text())["probes"]) == 20


def test_attacker_controlled_probes_are_escaped(cli, probe_toy, tmp_path):
    battery = tmp_path / "evil.yaml"
    battery.write_text(json.dumps({"name": "evil", "categories": {
        "[bold red]cat[/]": ["[link=http://x]click[/link]", "$\\frac{unbalanced$", "bell\u0007ring"]}}),
        encoding="utf-8")
    res = _probe(cli, probe_toy, "--battery", battery, "--per-probe", "--plot", tmp_path / "evil.png")
    assert res.code == 0, res.err
    assert "[bold red]cat[/]" in res.out and "[link=http://x]click[/link]" in res.out
    assert "\u0007" not in res.out and "bell\\x07ring" in res.out
    assert (tmp_path / "evil.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("args,code,fragment", [
    (("--battery", "paper-99"), 2, "unknown battery 'paper-99'"),
    (("--view", "D"), 2, "--view"),
    (("--batch-size", "0"), 2, "--batch-size"),
    (("--readout", "generate"), 2, "label-word"),
])
def test_usage_errors(cli, probe_toy, args, code, fragment):
    assert_one_line_error(_probe(cli, probe_toy, *args), code, fragment)


def test_data_errors(cli, probe_toy, tmp_path):
    res = cli("probe", "--base", "tiny-bert", "--adapter", tmp_path / "none", "--data", probe_toy["data_poisoned"])
    assert_one_line_error(res, 1, "adapter folder not found")
    res = cli("probe", "--base", "tiny-bert", "--adapter", probe_toy["poisoned"], "--data", tmp_path / "nodata")
    assert_one_line_error(res, 1, "data folder not found")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ncategories: {a: []}\n", encoding="utf-8")
    assert_one_line_error(_probe(cli, probe_toy, "--battery", bad), 1, "categories.a")
    weights_profile = tmp_path / "w.json"
    weights_profile.write_text("{}", encoding="utf-8")
    assert_one_line_error(_probe(cli, probe_toy, "--profile", weights_profile), 1, "not a valid profile")
