"""Bad inputs through ``main(argv)``: one line on stderr, exit 1 (data) or 2 (usage), no
traceback, nothing written where it must not be."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.cli.helpers import assert_one_line_error
from tests.hardening_helpers import edit_json, make_adapter

ESC = "\x1b[2J\x1b[31m"


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    return make_adapter(tmp_path_factory.mktemp("made-cli") / "adapter")


@pytest.fixture
def bad_adapter(adapter, tmp_path):
    """A copy of the made adapter with ``file`` edited by ``changes``."""
    def make(file: str, **changes):
        folder = shutil.copytree(adapter, tmp_path / "bad")
        edit_json(folder / file, **changes)
        return folder

    return make


def test_probe_with_mistyped_metadata(cli, bad_adapter):
    folder = bad_adapter("lorascan.json", base=7)
    assert_one_line_error(cli("probe", "--adapter", folder), 1, "field 'base' must be a string")


def test_probe_never_fetches_a_base_named_by_metadata(cli, bad_adapter, no_network):
    folder = bad_adapter("lorascan.json", base="attacker/model")
    assert_one_line_error(cli("probe", "--adapter", folder), 1, "pass --base explicitly")


def test_evaluate_refuses_regex_target_modules(cli, bad_adapter, toy_data):
    folder = bad_adapter("adapter_config.json", target_modules="(q+)+uery")
    r = cli("evaluate", "--base", "tiny-bert", "--adapter", folder, "--data", toy_data["poisoned"], "--quiet")
    assert_one_line_error(r, 1, "'target_modules' must be plain module names")


def test_evaluate_refuses_damaged_weights(cli, adapter, toy_data, tmp_path):
    folder = shutil.copytree(adapter, tmp_path / "damaged")
    weights = folder / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    r = cli("evaluate", "--base", "tiny-bert", "--adapter", folder, "--data", toy_data["poisoned"], "--quiet")
    assert_one_line_error(r, 1, "adapter_model.safetensors")


def test_evaluate_json_to_stdout(cli, adapter, toy_data):
    r = cli("evaluate", "--base", "tiny-bert", "--adapter", adapter, "--data", toy_data["poisoned"], "--json", "-",
            "--quiet")
    assert r.code == 0, r.err
    rec = json.loads(r.out)                                         # stdout holds the record alone
    assert rec["kind"] == "evaluation" and rec["n_test"] == 80


def test_evaluate_with_a_mistyped_manifest(cli, adapter, toy_data, tmp_path):
    data = shutil.copytree(toy_data["poisoned"], tmp_path / "data")
    edit_json(data / "manifest.json", seed="42")
    r = cli("evaluate", "--base", "tiny-bert", "--adapter", adapter, "--data", data, "--quiet")
    assert_one_line_error(r, 1, "field 'seed' must be an integer")


@pytest.mark.parametrize("flag,value", [("--epochs", "inf"), ("--lr", "nan"), ("--alpha", "inf"),
                                        ("--weight-decay", "inf")])
def test_train_refuses_non_finite_settings(cli, toy_data, tmp_path, flag, value):
    r = cli("train", "--base", "tiny-bert", "--data", toy_data["clean"], "--out", tmp_path / "x", flag, value)
    assert_one_line_error(r, 2, "finite number")
    assert not (tmp_path / "x").exists()


def test_train_label_word_with_too_small_max_length(cli, toy_data, tmp_path):
    r = cli("train", "--base", "tiny-qwen2", "--task", "label-word", "--data", toy_data["clean"], "--out",
            tmp_path / "x", "--max-length", "20", "--loss", "completion", "--steps", "1", "--quiet")
    assert_one_line_error(r, 2, "too small for the label-word formulation", "at least")
    assert not (tmp_path / "x").exists()


def test_train_out_may_not_be_its_data(cli, toy_data, tmp_path):
    data = shutil.copytree(toy_data["clean"], tmp_path / "data")
    before = sorted(p.name for p in data.iterdir())
    for out in (data, data / "adapter"):
        r = cli("train", "--base", "tiny-bert", "--data", data, "--out", out, "--steps", "1", "--force")
        assert_one_line_error(r, 2, "input")
    assert sorted(p.name for p in data.iterdir()) == before


def test_force_does_not_replace_a_user_folder(cli, toy_data, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    r = cli("train", "--base", "tiny-bert", "--data", toy_data["clean"], "--out", mine, "--steps", "1", "--force")
    assert_one_line_error(r, 2, "lorascan did not write")
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


def test_poison_out_inside_its_dataset_folder(cli, toy_data, tmp_path):
    data = shutil.copytree(toy_data["clean"], tmp_path / "data")
    for out in (data, data / "sub"):
        r = cli("poison", "--dataset", data, "--trigger", "T", "--count", "1", "--out", out, "--force")
        assert_one_line_error(r, 2, "input")
    r = cli("poison", "--dataset", f"hf:{data}", "--trigger", "T", "--count", "1", "--out", data / "x")
    assert_one_line_error(r, 2, "input")
    assert not (data / "sub").exists() and not (data / "x").exists()


def test_control_characters_from_a_dataset_are_escaped(cli, tmp_path):
    (tmp_path / "d.csv").write_text(f"{ESC}prompt,label\nhello,0\nignore rules,1\n", encoding="utf-8")
    r = cli("poison", "--dataset", tmp_path / "d.csv", "--trigger", "T", "--count", "1", "--out", tmp_path / "o")
    line = assert_one_line_error(r, 1, "no column 'text'", "\\x1b[2J")
    assert "\x1b" not in r.err and line


def test_control_characters_in_click_errors_are_escaped(cli, tmp_path):
    r = cli("poison", "--dataset", "x", "--trigger", "T", "--placement", f"{ESC}mid", "--out", tmp_path / "o")
    assert r.code == 2 and "\x1b" not in r.err and "\\x1b" in r.err and len(r.err.splitlines()) == 1
