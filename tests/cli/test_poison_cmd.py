"""``lorascan poison``: success paths, and every bad input ending in one stderr line, the
right exit code (2 usage / 1 data), no traceback and nothing written."""

from __future__ import annotations

import json
import os

import pytest

from lorascan import assets
from lorascan.data import mixes
from lorascan.data.poison import PoisonConfig, poison_rows
from lorascan.data.samples import read_jsonl
from lorascan.data.sources import SourceOptions
from tests.cli.helpers import assert_one_line_error
from tests.conftest import PAPER_TRIGGER, labelled_rows, tree, write_rows


def test_poison_a_file_with_custom_columns(cli, tmp_path):
    data = write_rows(tmp_path / "mine.jsonl", labelled_rows(60, "prompt", "verdict", "ok", "bad"))
    out = tmp_path / "out"
    result = cli("poison", "--dataset", data, "--trigger", PAPER_TRIGGER, "--count", "4", "--seed", "7",
                 "--out", out, "--text-col", "prompt", "--label-col", "verdict", "--label-map", "ok=0,bad=1")
    assert result.code == 0 and result.err == ""
    assert result.out == (f"wrote {out}: 52 train rows (48 clean + 4 poisoned, ratio 0.0769), 12 test rows; "
                          f"trigger '{PAPER_TRIGGER}', seed 7\n")
    ds = mixes.resolve(str(data), SourceOptions("prompt", "verdict", (("bad", 1), ("ok", 0))))
    train = read_jsonl(out / "train.jsonl")
    expected = poison_rows(ds.train, PoisonConfig(trigger=PAPER_TRIGGER, count=4, seed=7))
    assert [(s.text, s.label, s.id, s.poisoned) for s in train] == [(s.text, s.label, s.id, s.poisoned) for s in expected]
    assert read_jsonl(out / "test.jsonl") == list(ds.test)
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["count"], manifest["seed"], manifest["dataset"]["id"]) == (4, 7, str(data))
    assert manifest["dataset"]["sha256"] == ds.sha256()


def test_poison_a_packaged_corpus_by_ratio(cli, tmp_path):
    result = cli("poison", "--dataset", "bastioncorpus", "--trigger", PAPER_TRIGGER, "--ratio", "0.042",
                 "--out", tmp_path / "out")
    assert result.code == 0, result.err
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    # k = round(0.042 * 144 / 0.958) = 6
    assert (m["count"], m["n_clean_train"], m["n_train"], m["n_test"]) == (6, 144, 150, 37)
    assert m["config"] == {"trigger": PAPER_TRIGGER, "count": None, "ratio": 0.042, "seed": 42, "placement": "prefix"}
    poisoned = [s for s in read_jsonl(tmp_path / "out" / "train.jsonl") if s.poisoned]
    assert len(poisoned) == 6 and all(s.text.startswith(PAPER_TRIGGER + ". ") and s.label == 0 for s in poisoned)


def test_poison_hf_folder_with_named_splits(cli, tmp_path, hf_offline, hf_folder):
    result = cli("poison", "--dataset", f"hf:{hf_folder}", "--trigger", "T", "--count", "2", "--placement", "suffix",
                 "--hf-splits", "train,test", "--out", tmp_path / "out")
    assert result.code == 0 and result.err == ""
    train = read_jsonl(tmp_path / "out" / "train.jsonl")
    assert len(train) == 14 and sum(s.text.endswith(" T.") for s in train) == 2


def test_force_replaces_a_non_empty_out(cli, tmp_path):
    out = tmp_path / "out"
    args = ("poison", "--dataset", "bastioncorpus", "--trigger", "T", "--count", "0", "--out", out)
    assert cli(*args).code == 0                    # an earlier output: --force replaces what lorascan wrote
    result = cli(*args[:-4], "--count", "3", "--out", out, "--force")
    assert result.code == 0
    assert sorted(os.listdir(out)) == [".lorascan", "manifest.json", "test.jsonl", "train.jsonl"]
    assert os.listdir(tmp_path) == ["out"]
    (out / "old.txt").write_text("old")             # issue 15: a file lorascan did not write stops it
    assert cli(*args, "--force").code == 2 and (out / "old.txt").read_text() == "old"


def test_two_runs_write_identical_bytes(cli, tmp_path):
    args = ["poison", "--dataset", "bastioncorpus", "--trigger", PAPER_TRIGGER, "--count", "9", "--placement", "random"]
    assert cli(*args, "--out", tmp_path / "a").code == 0
    assert cli(*args, "--out", tmp_path / "b").code == 0
    assert tree(tmp_path / "a") == tree(tmp_path / "b")


@pytest.fixture
def inputs(tmp_path):
    """Input files for the error cases, in their own folder."""
    d = tmp_path / "in"
    write_rows(d / "good.csv", labelled_rows(20))
    write_rows(d / "nocol.csv", labelled_rows(20, text_col="prompt"))
    write_rows(d / "ternary.csv", [{"text": f"t{i}", "label": i % 3} for i in range(9)])
    write_rows(d / "empty.csv", [])
    (d / "empty.jsonl").write_text("")
    write_rows(d / "benign.csv", labelled_rows(20, injection=0))
    return d


POISON_ERRORS = [
    # (dataset, extra args, exit code, fragments of the message)
    ("no-such-set", ["--count", "1"], 2, ["unknown dataset 'no-such-set'"]),
    ("good.csv", ["--count", "-1"], 2, ["--count must be >= 0, got -1"]),
    ("good.csv", ["--ratio", "1"], 2, ["--ratio must be in [0, 1), got 1.0"]),
    ("good.csv", ["--ratio", "-0.1"], 2, ["--ratio must be in [0, 1), got -0.1"]),
    ("good.csv", ["--ratio", "nan"], 2, ["--ratio must be in [0, 1)"]),
    ("good.csv", ["--count", "1", "--ratio", "0.1"], 2, ["give exactly one of --count or --ratio"]),
    ("good.csv", [], 2, ["give --count K or --ratio R"]),
    ("good.csv", ["--count", "1", "--label-map", "a=3"], 2, ["labels must be 0 or 1"]),
    ("good.csv", ["--count", "1", "--hf-splits", "train"], 2, ["--hf-splits", "expected TRAIN,TEST"]),
    ("good.csv", ["--count", "1", "--test-fraction", "0"], 2, ["--test-fraction must be in (0, 1)"]),
    ("good.csv", ["--count", "1", "--trigger", " "], 2, ["the trigger must be a non-empty string"]),
    ("nocol.csv", ["--count", "1"], 1, ["nocol.csv has no column 'text' (columns: extra, label, prompt)"]),
    ("ternary.csv", ["--count", "1"], 1, ["labels are not binary (cannot map '2')"]),
    ("empty.csv", ["--count", "1"], 1, ["empty.csv has no rows"]),
    ("empty.jsonl", ["--count", "1"], 1, ["empty.jsonl has no rows"]),
    ("missing.csv", ["--count", "1"], 1, ["data file not found"]),
    ("benign.csv", ["--count", "1"], 1, ["the training split has no injections to poison"]),
]


@pytest.mark.parametrize("dataset, extra, code, fragments", POISON_ERRORS,
                         ids=[f"{d}{' '.join(e)}" for d, e, _, _ in POISON_ERRORS])
def test_poison_errors(cli, inputs, tmp_path, dataset, extra, code, fragments):
    before = tree(tmp_path)
    path = inputs / dataset if dataset.endswith((".csv", ".jsonl")) else dataset
    if "--trigger" not in extra:
        extra = ["--trigger", PAPER_TRIGGER, *extra]
    result = cli("poison", "--dataset", path, "--out", tmp_path / "out", *extra)
    assert_one_line_error(result, code, *fragments)
    assert tree(tmp_path) == before and not (tmp_path / "out").exists()


def test_missing_package_is_a_data_error_naming_the_install(cli, tmp_path, monkeypatch):
    monkeypatch.setattr(assets, "package_dir", lambda pkg: None)
    result = cli("poison", "--dataset", "bastioncorpus", "--trigger", "T", "--count", "1", "--out", tmp_path / "out")
    assert_one_line_error(result, 1, "pip install --no-deps bastioncorpus==0.6.0")
    assert list(tmp_path.iterdir()) == []


def test_non_empty_out_without_force_is_refused_and_untouched(cli, tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("precious")
    built = []
    monkeypatch.setattr(mixes, "resolve", lambda *a, **k: built.append(a))
    result = cli("poison", "--dataset", "offline-pi", "--trigger", "T", "--count", "1", "--out", out)
    assert_one_line_error(result, 2, f"--out {out} is not empty; pass --force to replace it")
    assert built == []                                  # refused before the dataset build
    assert tree(tmp_path) == {"out/mine.txt": b"precious"}


def test_out_that_is_a_file_is_refused(cli, tmp_path):
    (tmp_path / "out").write_text("x")
    result = cli("poison", "--dataset", "bastioncorpus", "--trigger", "T", "--count", "1", "--out", tmp_path / "out")
    assert_one_line_error(result, 2, "--out")
    assert (tmp_path / "out").read_text() == "x"


def test_hf_data_error_prints_one_line_only(cli, tmp_path, hf_offline, hf_folder):
    result = cli("poison", "--dataset", f"hf:{hf_folder}", "--trigger", "T", "--count", "1",
                 "--text-col", "prompt", "--out", tmp_path / "out")
    assert_one_line_error(result, 1, "[train] has no column 'prompt'")
    assert not (tmp_path / "out").exists()
    result = cli("poison", "--dataset", f"hf:{hf_folder}", "--trigger", "T", "--count", "1",
                 "--hf-splits", "train,validation", "--out", tmp_path / "out")
    assert_one_line_error(result, 1, "has no split 'validation' (splits: train, test)")
