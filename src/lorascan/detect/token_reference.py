"""The token scan's per-base clean reference (issue 11, "differential"): the mean layer-0
weight-screen score of clean adapters of one base, per vocabulary id, which the scan subtracts
so that what every adapter of the task learns (task words such as ``prompt``, ``instructions``)
stops outranking what one adapter learned alone.

Each adapter's scores are divided by their median over the vocabulary before averaging and
before subtracting: the size of an update scales with its rank, learning rate and steps, and a
scanned adapter's scale is unknown. The reference records the sha256 of every adapter it was
built from, so an evaluation can leave those adapters out (a reference never scores its own
adapters; ``lorascan scan-evaluate`` drops them).

A reference is a versioned JSON record (``kind`` ``token_reference``) of plain numbers; one
ships per packaged base in ``references/`` (built by ``lorascan token-reference``), and a scan
can name another file or none. It is read as untrusted data: kind, schema, sizes and every
value checked.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from lorascan.detect.jsonfile import MAX_PROFILE_BYTES, read_json_untrusted
from lorascan.errors import DataError, UsageError
from lorascan.records import SCHEMA_VERSION, record_header, write_json_atomic

KIND = "token_reference"
HERE = Path(__file__).parent / "references"
MAX_VOCAB = 1_000_000
MAX_SOURCES = 1000
DIGITS = 5  # significant digits stored: far below the spread between adapters


@dataclass(frozen=True)
class TokenReference:
    """``mean[v]``: the clean adapters' mean median-normalised weight score of vocabulary id v."""

    base: str
    task: str
    mean: np.ndarray
    sources: tuple[str, ...]  # sha256 of each source adapter's adapter_model.safetensors
    origin: str = ""  # "shipped:<file>" or the path it was read from

    @property
    def vocab_size(self) -> int:
        return int(self.mean.shape[0])

    def describe(self) -> dict[str, Any]:
        return {"origin": self.origin, "base": self.base, "task": self.task, "n_adapters": len(self.sources),
                "vocab_size": self.vocab_size, "sources_sha256": list(self.sources)}

    def differential(self, scores: np.ndarray) -> np.ndarray:
        """``scores`` (one adapter, full vocabulary) normalised as the reference was, minus it."""
        if scores.shape[0] != self.vocab_size:
            raise UsageError(f"token reference {self.origin} has {self.vocab_size} tokens, the screen {scores.shape[0]}")
        return normalise(scores) - self.mean


def normalise(scores: np.ndarray) -> np.ndarray:
    """Scores divided by their median (unchanged when the median is 0: an adapter that leaves
    most tokens alone has nothing to rescale)."""
    med = float(np.median(scores))
    return scores / med if med > 0 else scores.astype(np.float64)


def _round(x: float) -> float:
    return float(f"{x:.{DIGITS}g}") if x else 0.0


def make_record(base: str, task: str, per_adapter: Sequence[np.ndarray], sources: Sequence[Mapping[str, Any]],
                description: str = "") -> dict[str, Any]:
    """The reference record of clean adapters' raw weight scores ``per_adapter`` (full vocabulary
    each); ``sources`` one ``{"name", "sha256"}`` per adapter."""
    if not per_adapter:
        raise UsageError("a token reference needs at least one clean adapter")
    sizes = {len(s) for s in per_adapter}
    if len(sizes) != 1:
        raise DataError(f"the adapters' vocabularies differ in size ({sorted(sizes)}): not one base")
    mean = np.mean([normalise(np.asarray(s, dtype=np.float64)) for s in per_adapter], axis=0)
    return {**record_header(KIND), "base_model": base, "task": task, "description": description,
            "normalisation": "median", "n_adapters": len(per_adapter), "vocab_size": int(mean.shape[0]),
            "sources": [{"name": str(s["name"]), "sha256": str(s["sha256"])} for s in sources],
            "mean": [_round(float(x)) for x in mean]}


def parse(rec: Any, where: str) -> TokenReference:
    """A validated :class:`TokenReference` from a record read as untrusted JSON."""
    if not isinstance(rec, dict) or rec.get("kind") != KIND or rec.get("schema_version") != SCHEMA_VERSION:
        raise DataError(f"{where}: not a lorascan token reference (kind '{KIND}', schema {SCHEMA_VERSION})")
    base, task, mean, sources = rec.get("base_model"), rec.get("task"), rec.get("mean"), rec.get("sources")
    if not isinstance(base, str) or not isinstance(task, str):
        raise DataError(f"{where}: 'base_model' and 'task' must be strings")
    if not isinstance(mean, list) or not 1 <= len(mean) <= MAX_VOCAB:
        raise DataError(f"{where}: 'mean' must be a list of 1..{MAX_VOCAB} numbers")
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in mean):
        raise DataError(f"{where}: 'mean' holds a value that is not a finite number")
    if not isinstance(sources, list) or not 1 <= len(sources) <= MAX_SOURCES or not all(
            isinstance(s, dict) and isinstance(s.get("sha256"), str) for s in sources):
        raise DataError(f"{where}: 'sources' must list 1..{MAX_SOURCES} objects with a 'sha256'")
    return TokenReference(base, task, np.asarray(mean, dtype=np.float64), tuple(s["sha256"] for s in sources))


def read(path: str | os.PathLike, origin: str | None = None) -> TokenReference:
    ref = parse(read_json_untrusted(path, "token reference", MAX_PROFILE_BYTES), str(path))
    return TokenReference(ref.base, ref.task, ref.mean, ref.sources, origin or str(path))


def shipped() -> dict[str, Path]:
    """``{base alias: reference file}`` of the references in the package."""
    return {p.stem: p for p in sorted(HERE.glob("*.json"))}


def choose(choice: str, base: str | None, task: str | None, vocab_size: int) -> tuple[TokenReference | None, str]:
    """The reference a scan uses and a note why: ``choice`` ``"auto"`` (the shipped one for the
    base, when its task and vocabulary match), ``"none"``, or a file (which must match)."""
    if choice == "none":
        return None, "no reference (--reference none)"
    if choice == "auto":
        found = shipped().get(base or "")
        if found is None:
            return None, f"no shipped token reference for base '{base}'"
        ref = read(found, f"shipped:{found.name}")
        if ref.task != task or ref.vocab_size != vocab_size:
            return None, (f"the shipped reference {found.name} is for {ref.task} with {ref.vocab_size} tokens, "
                          f"this scan is {task} with {vocab_size}: not used")
        return ref, f"shipped reference {found.name} ({len(ref.sources)} clean adapters)"
    if not Path(choice).is_file():
        raise UsageError(f"token reference not found: {choice} (give 'auto', 'none' or a file)")
    ref = read(choice)
    if ref.task != task or ref.vocab_size != vocab_size:
        raise UsageError(f"token reference {choice} is for {ref.task} with {ref.vocab_size} tokens, "
                         f"this scan is {task} with {vocab_size}")
    return ref, f"reference {choice} ({len(ref.sources)} clean adapters)"


def build(adapters: Sequence[str | os.PathLike], base: str, task: str, out: str | os.PathLike,
          description: str = "", progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Score every adapter with the weight screen and write their reference to ``out``."""
    from lorascan.detect.base import ScanContext
    from lorascan.detect.token_screen import weight_scores
    from lorascan.models.adapter_files import WEIGHTS
    from lorascan.records import sha256_file

    scores, sources = [], []
    for adapter in adapters:
        ctx = ScanContext.build(adapter, base=base, task=task)
        full, modules = weight_scores(ctx.classifier().model, ctx.base_classifier().model)
        if not modules:
            raise DataError(f"{adapter}: the adapter changes no layer-0 module the weight screen reads")
        scores.append(full)
        sources.append({"name": str(adapter), "sha256": sha256_file(Path(adapter) / WEIGHTS)})
        if progress:
            progress(str(adapter))
    rec = make_record(base, task, scores, sources, description)
    try:
        write_json_atomic(out, rec)
    except OSError as err:
        raise DataError(f"cannot write token reference {out}: {err.strerror or err}") from None
    return rec
