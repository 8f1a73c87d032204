"""``lorascan patch`` end to end on tiny-bert adapters built by hand: the record and heatmap, the
summary with attacker-controlled text escaped, and one-line errors that write nothing."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tests.cli.helpers import assert_one_line_error, table_row
from tests.evaluate.test_patching import TRIGGER, assert_planted_cell_found, one_thread, write_adapter_pair  # noqa: F401

TYPES = ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
         "intermediate.dense", "output.dense"]


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    root = tmp_path_factory.mktemp("patch-cli")
    poisoned, clean = write_adapter_pair(root, "tiny-bert", seed=5)
    return {"poisoned": poisoned, "clean": clean, "root": root}


def test_record_heatmap_and_summary(cli, adapters, tmp_path):
    out, png = tmp_path / "patch.json", tmp_path / "patch.png"
    res = cli("patch", "--poisoned", adapters["poisoned"], "--reference", adapters["clean"], "--window", "1",
              "--n", "6", "--batch-size", "4", "--json", out, "--plot", png, "--quiet")
    assert res.code == 0, res.err
    rec = json.loads(out.read_text(encoding="utf-8"))
    assert rec["kind"] == "patching" and rec["schema_version"] == 1
    cfg = rec["config"]
    assert (cfg["base"], cfg["task"], cfg["trigger"], cfg["placement"]) == ("tiny-bert", "seq-cls", TRIGGER, "prefix")
    assert rec["injections"]["name"] == "offline-pi-v1" and rec["injections"]["n"] == 6
    assert rec["layers"] == 2 and rec["window"] == 1 and rec["window_starts"] == [0, 1]
    assert [t["type"] for t in rec["types"]] == TYPES and rec["heatmap"]["rows"] == TYPES
    assert np.array(rec["heatmap"]["asr"]).shape == (6, 2) and len(rec["cells"]) == 12
    for typ, best in rec["minimum"].items():
        assert best["asr"] == min(c["asr"] for c in rec["cells"] if c["type"] == typ)
        assert best["asr_n"] == 6 and best["end"] == best["start"]
    assert [e["module"] for e in rec["extras"]] == ["bert.pooler.dense", "classifier"]
    assert_planted_cell_found(rec, "output.dense")
    assert rec["full_substitution"]["asr"] == rec["reference"]["asr"]
    assert rec["timings"]["patched_runs"] == 12 and rec["timings"]["per_run_s"] > 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    row = table_row(res.out, "output.dense")
    best = rec["minimum"]["output.dense"]
    assert row[1:4] == [f"{best['asr']:.3f}", f"{best['asr_k']} / 6", f"{best['start']}-{best['end']}"]
    assert f"unpatched ASR {rec['unpatched']['asr']:.3f}" in res.out and "wrote" in res.out


def test_base_reference_and_escaped_trigger(cli, adapters, tmp_path):
    evil = "[red]boom[/red]\x1b[2J"
    res = cli("patch", "--poisoned", adapters["poisoned"], "--reference", "base", "--trigger", evil, "--window", "2",
              "--n", "4", "--quiet", "--json", tmp_path / "r.json")
    assert res.code == 0, res.err
    assert "\x1b" not in res.out and "[red]boom[/red]" in res.out and "patched from base" in res.out
    rec = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert rec["config"]["reference"] == "base" and rec["config"]["trigger"] == evil
    assert rec["window_starts"] == [0] and rec["full_substitution"]["max_abs_margin_diff"] < 1e-5


def _other_base_adapter(folder):
    """A BERT adapter for a narrower BERT than tiny-bert (same module names, other shapes)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import BertConfig, BertForSequenceClassification

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = BertForSequenceClassification(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                                                         num_attention_heads=4, intermediate_size=64))
        get_peft_model(model, LoraConfig(r=2, target_modules=["query", "value"])).save_pretrained(str(folder))
    return folder


@pytest.mark.parametrize("case", ["no-poisoned", "unknown-reference", "fingerprint", "other-shapes", "window",
                                  "no-trigger", "no-base", "too-many"])
def test_bad_input_is_one_line_and_writes_nothing(cli, adapters, tmp_path, case):
    poisoned, clean = adapters["poisoned"], adapters["clean"]
    args = ["--poisoned", poisoned, "--reference", clean, "--n", "4"]
    code, fragment = 1, ""
    if case == "no-poisoned":
        args[1], fragment = tmp_path / "missing", "adapter folder not found"
    elif case == "unknown-reference":
        args[3], fragment = "nowhere", "reference adapter folder not found: nowhere"
    elif case == "fingerprint":  # an adapter whose lorascan.json says it was trained for minilm
        other = tmp_path / "minilm-adapter"
        shutil.copytree(clean, other)
        fp = {"model_type": "bert", "hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12,
              "intermediate_size": 1536, "vocab_size": 30522}
        (other / "lorascan.json").write_text(json.dumps({"base": "minilm", "base_fingerprint": fp}), encoding="utf-8")
        args[3], fragment = other, "was trained for base 'minilm'"
    elif case == "other-shapes":
        args[3], fragment = _other_base_adapter(tmp_path / "narrow"), "does not fit this base model"
    elif case == "window":
        args += ["--window", "3"]
        code, fragment = 2, "--window 3 is larger than the model's 2 layers"
    elif case == "no-trigger":
        args = ["--poisoned", clean, "--reference", "base", "--base", "tiny-bert"]
        code, fragment = 2, "pass --trigger"
    elif case == "no-base":
        args = ["--poisoned", clean, "--reference", "base", "--trigger", TRIGGER]
        code, fragment = 2, "pass --base"
    elif case == "too-many":
        args[-1], code, fragment = "61", 2, "--n 61 is more than the 60 injections"
    out = tmp_path / "outputs"
    out.mkdir()
    res = cli("patch", *args, "--json", out / "p.json", "--plot", out / "p.png", "--quiet")
    assert_one_line_error(res, code, fragment)
    assert list(out.iterdir()) == []
