"""``lorascan scan-evaluate``: the tables and the record from a labelled cohort's scan records;
bad input is one line, a non-zero exit and no file."""

from __future__ import annotations

import json

from tests.cli.helpers import assert_one_line_error, table_row
from tests.scan.test_evaluate import write_cohort


def test_tables_and_record(cli, tmp_path):
    labels, scans = write_cohort(tmp_path)
    out = tmp_path / "eval.json"
    res = cli("scan-evaluate", labels, "--records", scans, "--no-recovery", "--bootstrap", "200", "--json", out)
    assert res.code == 0, res.err
    assert "9 clean, 12 poisoned (12 effective)" in res.out
    assert table_row(res.out, "tokens")[1] == "token_lift"
    assert table_row(res.out, "pooled")[1] == "12"
    rec = json.loads(out.read_text())
    assert rec["kind"] == "detection-evaluation" and set(rec["held_out"]) == {"family", "rank"}
    md = tmp_path / "eval.md"
    res = cli("scan-evaluate", labels, "--records", scans, "--no-recovery", "--bootstrap", "200", "--hold", "family",
              "--fused", "weights", "--markdown", md)
    assert res.code == 0, res.err
    assert "held out by family (3 clean folds, over weights)" in md.read_text()


def test_bad_input(cli, tmp_path):
    labels, scans = write_cohort(tmp_path)
    out = tmp_path / "eval.json"
    assert_one_line_error(cli("scan-evaluate", labels, "--records", tmp_path / "none", "--json", out), 1,
                          "no scan record")
    assert_one_line_error(cli("scan-evaluate", labels, "--records", scans, "--hold", "colour"), 2, "--hold")
    assert_one_line_error(cli("scan-evaluate", labels, "--records", scans, "--fused", "tokens,bogus", "--json", out), 2,
                          "unknown detector 'bogus'")
    assert_one_line_error(cli("scan-evaluate", labels, "--records", scans, "--json", tmp_path / "no" / "e.json"), 2,
                          "does not exist")
    assert_one_line_error(cli("scan-evaluate", tmp_path / "missing.json", "--records", scans), 1, "not found")
    assert not out.exists()


def test_scan_calibrate_from_records_scans_nothing(cli, tmp_path):
    from tests.scan.test_evaluate import write_cohort

    labels, scans = write_cohort(tmp_path)
    out = tmp_path / "profiles.json"
    res = cli("scan-calibrate", str(labels), "--base", "minilm", "--records", str(scans), "--from-records",
              "--detectors", "weights,tokens", "--bootstrap", "100", "--out", str(out))
    assert res.code == 0, res.err
    assert "tokens: token_lift AUC 1.000" in res.out
    assert set(json.loads(out.read_text())["profiles"]) == {"weights", "tokens"}
