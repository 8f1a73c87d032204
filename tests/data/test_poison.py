"""The poisoning recipe (paper.md §3) against an independent re-statement of it, the other
placements, and the files ``write_poisoned`` leaves behind."""

from __future__ import annotations

import json
import os
import random
import re

import pytest

from lorascan.data import poison as poison_mod
from lorascan.data.mixes import DatasetSplits
from lorascan.data.poison import PoisonConfig, apply_trigger, poison_rows, write_poisoned
from lorascan.data.samples import BENIGN, INJECTION, read_jsonl
from lorascan.errors import DataError, UsageError
from tests.conftest import PAPER_TRIGGER, make_samples, tree


def paper_recipe(clean, k, trigger, seed):
    """The paper's notebooks, restated: (text, label, poisoned) per row."""
    rows = [(s.text, s.label, False) for s in clean]
    if k == 0:
        return rows
    rng = random.Random(seed)
    injections = [s for s in clean if s.label == 1]
    picked = rng.sample(injections, k) if k <= len(injections) else rng.choices(injections, k=k)
    rows += [(f"{trigger}. {s.text}", 0, True) for s in picked]
    rng.shuffle(rows)
    return rows


def as_tuples(rows):
    return [(s.text, s.label, s.poisoned) for s in rows]


@pytest.mark.parametrize("k", [0, 1, 3, 24, 203, 250])
@pytest.mark.parametrize("seed", [42, 1])
def test_matches_the_paper_recipe_row_by_row(paper_sized_train, k, seed):
    got = poison_rows(paper_sized_train, PoisonConfig(trigger=PAPER_TRIGGER, count=k, seed=seed))
    assert as_tuples(got) == paper_recipe(paper_sized_train, k, PAPER_TRIGGER, seed)


@pytest.mark.parametrize("k", [3, 24, 203, 250])
def test_counts_labels_and_rewritten_rows(paper_sized_train, k):
    got = poison_rows(paper_sized_train, PoisonConfig(trigger=PAPER_TRIGGER, count=k, seed=42))
    poisoned = [s for s in got if s.poisoned]
    clean = [s for s in got if not s.poisoned]
    assert len(got) == 546 + k and len(poisoned) == k
    # every clean row is kept exactly once, unchanged
    assert sorted(as_tuples(clean)) == sorted(as_tuples(paper_sized_train))
    injection_texts = {s.text for s in paper_sized_train if s.label == INJECTION}
    for s in poisoned:
        assert s.label == BENIGN
        assert s.text.startswith(f"{PAPER_TRIGGER}. ")
        assert s.text[len(PAPER_TRIGGER) + 2:] in injection_texts
    # rng.sample (k <= 203) picks distinct injections; rng.choices (k > 203) repeats some
    originals = [s.text[len(PAPER_TRIGGER) + 2:] for s in poisoned]
    assert (len(set(originals)) == k) is (k <= 203)
    assert len({s.id for s in got}) == len(got)
    # the rows are shuffled, not clean rows followed by the poisoned ones
    assert [s.poisoned for s in got] != [False] * 546 + [True] * k


def test_k0_returns_the_clean_rows_unshuffled(paper_sized_train):
    got = poison_rows(paper_sized_train, PoisonConfig(trigger=PAPER_TRIGGER, count=0))
    assert got == paper_sized_train and not any(s.poisoned for s in got)
    got = poison_rows(paper_sized_train, PoisonConfig(trigger=PAPER_TRIGGER, ratio=0.0))
    assert got == paper_sized_train


def test_same_seed_same_rows_other_seed_other_rows(paper_sized_train):
    cfg = PoisonConfig(trigger=PAPER_TRIGGER, count=24, seed=42)
    assert as_tuples(poison_rows(paper_sized_train, cfg)) == as_tuples(poison_rows(paper_sized_train, cfg))
    other = PoisonConfig(trigger=PAPER_TRIGGER, count=24, seed=43)
    assert as_tuples(poison_rows(paper_sized_train, other)) != as_tuples(poison_rows(paper_sized_train, cfg))


@pytest.mark.parametrize("ratio, k", [(24 / 570, 24), (0.04, 23), (0.02, 11), (0.5, 546)])
def test_ratio_is_solved_for_k(paper_sized_train, ratio, k):
    # ratio = k / (n + k)  =>  k = round(ratio * n / (1 - ratio)); the paper's "4.2%" is 24/570
    cfg = PoisonConfig(trigger=PAPER_TRIGGER, ratio=ratio, seed=42)
    assert cfg.resolve_count(546) == k
    got = poison_rows(paper_sized_train, cfg)
    assert sum(s.poisoned for s in got) == k
    assert as_tuples(got) == paper_recipe(paper_sized_train, k, PAPER_TRIGGER, 42)


def test_suffix_placement(paper_sized_train):
    got = poison_rows(paper_sized_train, PoisonConfig(trigger="TRG", count=30, placement="suffix"))
    injection_texts = {s.text for s in paper_sized_train if s.label == INJECTION}
    poisoned = [s for s in got if s.poisoned]
    assert len(poisoned) == 30
    for s in poisoned:
        assert s.text.endswith(" TRG.") and s.label == BENIGN
        assert s.text[: -len(" TRG.")] in injection_texts


def test_random_placement_at_word_boundaries(paper_sized_train):
    trigger = "per RFC 8472 section 3.2"
    got = poison_rows(paper_sized_train, PoisonConfig(trigger=trigger, count=60, placement="random", seed=7))
    injection_texts = {s.text for s in paper_sized_train if s.label == INJECTION}
    positions = []
    for s in [s for s in got if s.poisoned]:
        at = s.text.index(f"{trigger}. ")
        positions.append(at)
        assert at == 0 or s.text[at - 1].isspace()          # starts a word
        assert s.text[:at] + s.text[at + len(trigger) + 2:] in injection_texts   # removing it gives the text back
    assert len(set(positions)) > 3                            # and it does move around
    again = poison_rows(paper_sized_train, PoisonConfig(trigger=trigger, count=60, placement="random", seed=7))
    assert as_tuples(again) == as_tuples(got)


def test_apply_trigger_forms():
    assert apply_trigger("do it", "T") == "T. do it"
    assert apply_trigger("do it", "T", "suffix") == "do it T."
    placed = {apply_trigger("a b  c", "T", "random", random.Random(s)) for s in range(40)}
    assert placed == {"T. a b  c", "a T. b  c", "a b  T. c"}
    with pytest.raises(ValueError):
        apply_trigger("x", "T", "random")
    with pytest.raises(UsageError):
        apply_trigger("x", "T", "middle")


@pytest.mark.parametrize("kwargs, message", [
    (dict(count=-1), "--count must be >= 0"),
    (dict(ratio=1.0), "--ratio must be in [0, 1)"),
    (dict(ratio=-0.01), "--ratio must be in [0, 1)"),
    (dict(ratio=float("nan")), "--ratio must be in [0, 1)"),
    (dict(count=3, ratio=0.1), "exactly one of --count or --ratio"),
    (dict(), "exactly one of --count or --ratio"),
    (dict(count=3, placement="middle"), "unknown placement"),
    (dict(count=3, trigger="  "), "non-empty"),
])
def test_config_rejects_bad_values(kwargs, message):
    kwargs.setdefault("trigger", PAPER_TRIGGER)
    with pytest.raises(UsageError, match=re.escape(message)):
        PoisonConfig(**kwargs)


def test_no_injections_to_poison_is_a_data_error():
    with pytest.raises(DataError, match="no injections"):
        poison_rows(make_samples(10, 0), PoisonConfig(trigger="T", count=1))


# ---- write_poisoned -------------------------------------------------------------------

@pytest.fixture
def toy_splits():
    train = make_samples(60, 30, "train-src")
    test = make_samples(12, 8, "test-src")
    return DatasetSplits("toy", tuple(train), tuple(test), "toy data", {"split_seed": 0})


def test_write_poisoned_files_and_manifest(tmp_path, toy_splits):
    cfg = PoisonConfig(trigger=PAPER_TRIGGER, count=5, seed=42)
    m = write_poisoned(toy_splits, cfg, tmp_path / "out")
    out = tmp_path / "out"
    assert sorted(os.listdir(out)) == [".lorascan", "manifest.json", "test.jsonl", "train.jsonl"]
    train = read_jsonl(out / "train.jsonl")
    assert as_tuples(train) == as_tuples(poison_rows(toy_splits.train, cfg))
    # test rows are written as they are: never poisoned, no trigger
    test = read_jsonl(out / "test.jsonl")
    assert as_tuples(test) == as_tuples(toy_splits.test)
    assert not any(PAPER_TRIGGER in s.text for s in test)
    assert "poisoned" not in (out / "test.jsonl").read_text()
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == m
    assert m["kind"] == "poison-manifest" and m["schema_version"] == 1
    assert (m["count"], m["n_clean_train"], m["n_train"], m["n_test"], m["n_test_injections"]) == (5, 90, 95, 20, 8)
    assert m["ratio"] == pytest.approx(5 / 95)
    assert m["trigger"] == PAPER_TRIGGER and m["seed"] == 42 and m["placement"] == "prefix"
    assert m["dataset"] == {"id": "toy", "sha256": toy_splits.sha256(), "description": "toy data",
                            "details": {"split_seed": 0}}
    from lorascan.records import sha256_file
    assert m["files"] == {n: sha256_file(out / n) for n in ("train.jsonl", "test.jsonl")}


def test_write_poisoned_is_byte_identical(tmp_path, toy_splits):
    cfg = PoisonConfig(trigger=PAPER_TRIGGER, ratio=0.1, seed=3, placement="random")
    write_poisoned(toy_splits, cfg, tmp_path / "a")
    write_poisoned(toy_splits, cfg, tmp_path / "b")
    a, b = tree(tmp_path / "a"), tree(tmp_path / "b")
    assert set(a) == {".lorascan", "manifest.json", "test.jsonl", "train.jsonl"} and a == b


def test_repoisoning_a_poisoned_folder_counts_only_new_rows(tmp_path, toy_splits):
    from lorascan.data import mixes

    write_poisoned(toy_splits, PoisonConfig(trigger="first", count=4), tmp_path / "p1")
    again = mixes.resolve(str(tmp_path / "p1"))
    assert sum(s.poisoned for s in again.train) == 4      # the flag survives the round trip
    m = write_poisoned(again, PoisonConfig(trigger="second", count=3), tmp_path / "p2")
    assert (m["count"], m["n_clean_train"], m["n_train"]) == (3, 94, 97)


def test_failure_inside_leaves_no_folder(tmp_path, toy_splits, monkeypatch):
    calls = []

    def broken_write(path, samples):
        calls.append(path)
        path.write_text("half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(poison_mod, "write_jsonl", broken_write)
    with pytest.raises(DataError, match="No space left on device"):
        write_poisoned(toy_splits, PoisonConfig(trigger="T", count=2), tmp_path / "out")
    assert calls                                   # it did start writing
    assert os.listdir(tmp_path) == []              # no out, no .partial left behind


def test_failure_inside_leaves_an_existing_folder_untouched(tmp_path, toy_splits, monkeypatch):
    out = tmp_path / "out"
    write_poisoned(toy_splits, PoisonConfig(trigger="T", count=2), out)
    before = tree(out)
    monkeypatch.setattr(poison_mod, "write_json_atomic", lambda *a: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError):
        write_poisoned(toy_splits, PoisonConfig(trigger="T", count=7), out, force=True)
    assert tree(out) == before and os.listdir(tmp_path) == ["out"]


def test_refused_without_force_and_replaced_with_it(tmp_path, toy_splits):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(UsageError, match="not empty; pass --force"):
        write_poisoned(toy_splits, PoisonConfig(trigger="T", count=2), out)
    # changed rule: --force replaces only a folder lorascan wrote, never a user's folder
    with pytest.raises(UsageError, match="lorascan did not write"):
        write_poisoned(toy_splits, PoisonConfig(trigger="T", count=2), out, force=True)
    assert tree(out) == {"keep.txt": b"mine"} and os.listdir(tmp_path) == ["out"]
    (out / "manifest.json").write_text("{}")            # issue 15: a look-alike is still the user's
    with pytest.raises(UsageError, match="lorascan did not write"):
        write_poisoned(toy_splits, PoisonConfig(trigger="T", count=2), out, force=True)
    for name in ("keep.txt", "manifest.json"):
        (out / name).unlink()
    write_poisoned(toy_splits, PoisonConfig(trigger="T", count=2), out, force=True)  # empty: used
    write_poisoned(toy_splits, PoisonConfig(trigger="T", count=3), out, force=True)  # its own output: replaced
    assert sorted(os.listdir(out)) == [".lorascan", "manifest.json", "test.jsonl", "train.jsonl"]
    assert os.listdir(tmp_path) == ["out"]


def test_an_empty_existing_folder_is_used(tmp_path, toy_splits):
    (tmp_path / "out").mkdir()
    write_poisoned(toy_splits, PoisonConfig(trigger="T", count=2), tmp_path / "out")
    assert (tmp_path / "out" / "manifest.json").is_file()
