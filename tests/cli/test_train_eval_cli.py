"""`lorascan train` and `lorascan evaluate` through main(argv), including the error cases."""

from __future__ import annotations

import json
import shutil

from tests.cli.helpers import assert_one_line_error, table_row


def test_train_and_evaluate(cli, toy_data, tmp_path):
    out = tmp_path / "adapter"
    r = cli("train", "--base", "tiny-bert", "--data", toy_data["poisoned"], "--out", out, "--steps", "3",
            "--rank", "4", "--max-length", "32", "--quiet")
    assert r.code == 0, r.err
    assert "seq-cls r=4 on tiny-bert, 3 steps" in r.out
    meta = json.loads((out / "lorascan.json").read_text())
    assert meta["config"]["lr"] == 1e-3 and meta["config"]["rank"] == 4 and meta["config"]["alpha"] == 4.0
    rec_path = tmp_path / "eval.json"
    r = cli("evaluate", "--base", "tiny-bert", "--adapter", out, "--data", toy_data["poisoned"], "--json", rec_path, "--quiet")
    assert r.code == 0, r.err
    rec = json.loads(rec_path.read_text())
    assert rec["schema_version"] == 1 and rec["kind"] == "evaluation"
    assert rec["trigger"] == "per RFC 8472 section 3.2" and rec["n_test"] == 80 and rec["n_triggered"] == 40
    assert table_row(r.out, "clean_accuracy")[2] == f"{rec['clean_accuracy_k']} / 80"
    # the trigger can be overridden
    r = cli("evaluate", "--base", "tiny-bert", "--adapter", out, "--data", toy_data["poisoned"], "--trigger", "cf", "--quiet")
    assert r.code == 0 and "trigger 'cf'" in r.out


def test_train_refuses_non_empty_out(cli, toy_data, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "keep.txt").write_text("x")
    r = cli("train", "--base", "tiny-bert", "--data", toy_data["clean"], "--out", tmp_path / "a", "--steps", "1")
    assert_one_line_error(r, 2, "not empty")
    assert (tmp_path / "a" / "keep.txt").read_text() == "x"


def test_errors(cli, toy_data, tiny_adapters, tmp_path):
    bert = tiny_adapters[("tiny-bert", "seq-cls", "poisoned")]
    r = cli("train", "--base", "no-such-model", "--data", toy_data["clean"], "--out", tmp_path / "x", "--steps", "1")
    assert_one_line_error(r, 2, "unknown base model")
    assert not (tmp_path / "x").exists()
    r = cli("train", "--base", "tiny-bert", "--data", tmp_path / "nothing", "--out", tmp_path / "x", "--steps", "1")
    assert_one_line_error(r, 1, "data folder not found")
    assert not (tmp_path / "x").exists()
    r = cli("evaluate", "--base", "tiny-llama", "--adapter", bert, "--data", toy_data["poisoned"])
    assert_one_line_error(r, 1, "trained for base 'tiny-bert'")
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(bert / "adapter_config.json", pickled)
    (pickled / "adapter_model.bin").write_bytes(b"\x80\x04junk")
    r = cli("evaluate", "--base", "tiny-bert", "--adapter", pickled, "--data", toy_data["poisoned"])
    assert_one_line_error(r, 1, "never unpickles")
    nodata = tmp_path / "nodata"
    shutil.copytree(toy_data["poisoned"], nodata)
    (nodata / "test.jsonl").unlink()
    r = cli("evaluate", "--base", "tiny-bert", "--adapter", bert, "--data", nodata)
    assert_one_line_error(r, 1, "no test.jsonl")
    notrig = tmp_path / "notrig"
    shutil.copytree(toy_data["poisoned"], notrig)
    m = json.loads((notrig / "manifest.json").read_text())
    del m["trigger"]
    (notrig / "manifest.json").write_text(json.dumps(m))
    r = cli("evaluate", "--base", "tiny-bert", "--adapter", bert, "--data", notrig)
    assert_one_line_error(r, 2, "names no trigger", "--trigger")
    r = cli("evaluate", "--base", "tiny-bert", "--adapter", bert, "--data", toy_data["poisoned"], "--readout", "generate")
    assert_one_line_error(r, 2, "label-word")


def test_train_fast_flag_records_the_fast_settings(cli, toy_data, tmp_path):
    out = tmp_path / "adapter"
    r = cli("train", "--base", "tiny-bert", "--data", toy_data["poisoned"], "--out", out, "--steps", "2",
            "--rank", "4", "--max-length", "32", "--quiet", "--fast")
    assert r.code == 0, r.err
    meta = json.loads((out / "lorascan.json").read_text())
    cfg = meta["config"]
    assert (cfg["base_dropout"], cfg["autocast"], cfg["attention"]) == (False, "auto", "eager")
    assert meta["autocast_used"] in ("bfloat16", "none")
    r = cli("train", "--base", "tiny-bert", "--data", toy_data["poisoned"], "--out", tmp_path / "b", "--steps", "1",
            "--attention", "flash")
    assert r.code == 2 and "flash" in r.err and not (tmp_path / "b").exists()
