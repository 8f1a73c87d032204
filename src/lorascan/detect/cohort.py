"""Labelled cohorts of adapters, and calibrating a detector on one (paper §7: 4 clean + 30
poisoned 1.5B r16 adapters; §8: the weight detector on the same cohort).

A cohort is either

- a folder searched recursively for adapter folders (a folder holding ``adapter_config.json``,
  ``adapter_model.safetensors`` or ``lorascan.json``; hidden and temporary folders such as
  ``.x.partial`` are skipped), each labelled by the ``lorascan.json`` the training code writes
  beside it: ``poison.count`` > 0 means poisoned (label 1), 0 clean; an explicit
  ``"poison": null`` also means clean (trained on unpoisoned data). An adapter is named by its
  path below the cohort folder, an ``adapter`` folder by its parent's (the ``lorascan sweep``
  layout ``<out>/runs/<run id>/adapter`` gives ``runs/<run id>``), so the output folder of a
  sweep is a cohort; or
- a labels file: JSON (a list of ``{"path", "label"}`` objects, or an object mapping path to
  label) or CSV with ``path`` (or ``adapter``) and ``label`` columns. Labels are 0/1,
  true/false or clean/poisoned; relative paths are relative to the labels file.

An adapter without a usable label is an error, never silently dropped. JSON files (manifests,
labels) are read with a size cap (:mod:`lorascan.detect.jsonfile`).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from lorascan.detect.adapter import read_base_fingerprint
from lorascan.detect.base import Detector, ScanContext
from lorascan.detect.calibrate import CohortScores, calibrate
from lorascan.detect.jsonfile import read_json_untrusted
from lorascan.detect.verdict import Profile, same_base_model
from lorascan.errors import DataError, LorascanError, UsageError

MANIFEST = "lorascan.json"
ADAPTER_MARKERS = ("adapter_config.json", "adapter_model.safetensors", MANIFEST)
_LABEL_WORDS = {"0": 0, "1": 1, "clean": 0, "poisoned": 1, "false": 0, "true": 1}


@dataclass(frozen=True)
class CohortMember:
    name: str
    path: Path
    label: int
    source: str  # where the label came from


def label_from_manifest(adapter: Path) -> tuple[int, str]:
    """The label of an adapter from its ``lorascan.json`` (``poison.count`` > 0: poisoned)."""
    rec = read_json_untrusted(adapter / MANIFEST, "adapter manifest")
    if not isinstance(rec, dict) or "poison" not in rec:
        raise DataError(f"{adapter / MANIFEST}: no 'poison' object, so the adapter has no label")
    poison = rec["poison"]
    if poison is None:
        return 0, f"{MANIFEST}: poison null"
    count = poison.get("count") if isinstance(poison, dict) else None
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise DataError(f"{adapter / MANIFEST}: poison.count must be a non-negative integer, got {str(count)[:40]!r}")
    return int(count > 0), f"{MANIFEST}: poison.count={count}"


def parse_label(value: Any, where: str) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int) and value in (0, 1):
        return value
    if isinstance(value, str) and value.strip().lower() in _LABEL_WORDS:
        return _LABEL_WORDS[value.strip().lower()]
    raise DataError(f"{where}: label must be 0/1, true/false or clean/poisoned, got {str(value)[:40]!r}")


def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def _from_folder(folder: Path) -> tuple[list[CohortMember], list[str]]:
    """The adapters below ``folder`` (module docstring), in path order, and notes on the
    top-level subfolders that hold none."""
    if any((folder / m).exists() for m in ADAPTER_MARKERS[:2]):
        raise UsageError(f"{folder} is a single adapter; a cohort is a folder of adapters or a labels file")
    found = sorted({p.parent for m in ADAPTER_MARKERS for p in folder.rglob(m)
                    if p.is_file() and not _hidden(p.parent.relative_to(folder))})
    members = []
    for adapter in found:
        rel = adapter.relative_to(folder)
        label, source = label_from_manifest(adapter)
        name = (rel.parent if adapter.name == "adapter" and rel.parent.parts else rel).as_posix()
        members.append(CohortMember(name, adapter, label, source))
    names = [m.name for m in members]
    if len(set(names)) != len(names):  # e.g. run/adapter beside run/ itself being an adapter
        members = [CohortMember(m.path.relative_to(folder).as_posix(), m.path, m.label, m.source) for m in members]
    tops = {m.path.relative_to(folder).parts[0] for m in members}
    subs = [p for p in sorted(folder.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    notes = [f"subfolder {sub.name!r} ignored: not an adapter" for sub in subs if sub.name not in tops]
    return members, notes


def _rows_from_file(path: Path) -> list[tuple[Any, Any]]:
    if path.suffix.lower() == ".csv":
        try:
            with open(path, newline="", encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh))
        except (OSError, UnicodeDecodeError, csv.Error) as err:
            raise DataError(f"cannot read labels file {path}: {err}") from None
        col = "path" if rows and "path" in rows[0] else "adapter"
        if not rows or col not in rows[0] or "label" not in rows[0]:
            raise DataError(f"{path}: expected CSV columns 'path' (or 'adapter') and 'label'")
        return [(r[col], r["label"]) for r in rows]
    if path.suffix.lower() != ".json":
        raise UsageError(f"{path}: a labels file must be .json or .csv")
    data = read_json_untrusted(path, "labels file")
    if isinstance(data, dict):
        return list(data.items())
    if isinstance(data, list) and all(isinstance(r, dict) for r in data):
        return [(r.get("path", r.get("adapter")), r.get("label")) for r in data]
    raise DataError(f"{path}: expected a list of {{path, label}} objects or an object mapping path to label")


def _from_labels_file(path: Path) -> list[CohortMember]:
    members = []
    for i, (raw_path, raw_label) in enumerate(_rows_from_file(path)):
        where = f"{path} entry {i + 1}"
        if not isinstance(raw_path, str) or not raw_path.strip():
            raise DataError(f"{where}: missing adapter path")
        adapter = Path(raw_path.strip())
        adapter = adapter if adapter.is_absolute() else path.parent / adapter
        members.append(CohortMember(adapter.name, adapter, parse_label(raw_label, where), f"{path.name}"))
    names = [m.name for m in members]
    if len(set(names)) != len(names):  # folders with the same name in different places
        members = [CohortMember(str(m.path), m.path, m.label, m.source) for m in members]
    return members


def read_cohort(source: str | Path) -> tuple[list[CohortMember], list[str]]:
    """Members of a cohort folder or labels file, and notes on anything ignored."""
    path = Path(source)
    if path.is_dir():
        members, notes = _from_folder(path)
    elif path.is_file():
        members, notes = _from_labels_file(path), []
    else:
        raise DataError(f"cohort not found: {path}")
    if not members:
        raise DataError(f"{path}: no adapters in the cohort")
    n_pos = sum(m.label for m in members)
    if n_pos == 0 or n_pos == len(members):
        raise DataError(f"{path}: calibration needs clean and poisoned adapters "
                        f"(got {len(members) - n_pos} clean, {n_pos} poisoned)")
    return members, notes


def shared_fingerprint(fingerprints: Sequence[dict[str, Any] | None]) -> tuple[dict[str, Any] | None, list[str]]:
    """The base fingerprint every cohort adapter's lorascan.json records (None, with a note,
    when some record none); a DataError when they differ: the cohort mixes base models."""
    known = [fp for fp in fingerprints if fp is not None]
    if any(fp != known[0] for fp in known):
        shapes = sorted({", ".join(f"{k}={v}" for k, v in fp.items()) for fp in known})
        raise DataError(f"the cohort mixes base models (fingerprints {' / '.join(shapes)[:300]}); "
                        "calibrate one profile per base model (paper §8)")
    if len(known) != len(fingerprints):
        missing = len(fingerprints) - len(known)
        return None, [f"no base fingerprint recorded: {missing} adapter(s) have no lorascan.json base_fingerprint, "
                      "so the profile checks the base model by name only"]
    return (known[0] if known else None), []


def cohort_fingerprint(adapters: Sequence[Path]) -> tuple[dict[str, Any] | None, list[str]]:
    """:func:`shared_fingerprint` of the adapters' ``lorascan.json`` files."""
    return shared_fingerprint([read_base_fingerprint(a) for a in adapters])


def shared_conditions(contexts: Sequence[Mapping[str, Any]]) -> tuple[dict[str, str], list[str]]:
    """The scan conditions every cohort member shares (a profile checks them), and a note for
    each that varies (e.g. rank across a cohort of ranks 8/16/32: the profile does not check it)."""
    conditions, notes = {}, []
    for key in sorted({k for c in contexts for k in c} - {"base_model", "base_fingerprint"}):
        values = {str(c.get(key)) for c in contexts}
        if len(values) == 1:
            conditions[key] = values.pop()
        else:
            notes.append(f"{key} varies across the cohort ({', '.join(sorted(values))}); the profile does not check it")
    return conditions, notes


def calibrate_cohort(members: Sequence[CohortMember], detector: Detector, *, view: str,
                     decision: Sequence[str] | None = None, features: Sequence[str] | None = None,
                     n_boot: int = 2000, seed: int = 0, notes: Sequence[str] = ()) -> Profile:
    """Scan every member with ``detector`` and calibrate its scores into a profile. The cohort
    must share one base model; a condition (e.g. rank) that varies is left out of the profile."""
    rows, contexts = [], []
    for m in members:
        try:
            result = detector.scan(ScanContext.build(m.path))
        except LorascanError as err:
            raise type(err)(f"cohort adapter {m.name}: {err}") from None
        rows.append(result.scores)
        contexts.append(dict(result.details.get("context", {})))
    bases = [c.get("base_model") or None for c in contexts]
    if any(not same_base_model(bases[0], b) for b in bases):
        raise DataError(f"the cohort mixes base models ({', '.join(sorted(set(map(str, bases))))}); "
                        "calibrate one profile per base model (paper §8)")
    fingerprint, fp_notes = shared_fingerprint([c.get("base_fingerprint") for c in contexts])
    conditions, cond_notes = shared_conditions(contexts)
    all_notes = [*notes, *fp_notes, *cond_notes]
    cohort = CohortScores(tuple(m.name for m in members), tuple(m.label for m in members), tuple(rows))
    return calibrate(cohort, detector=detector.name, view=view, base_model=bases[0],
                     conditions=conditions, decision=decision, features=features, n_boot=n_boot, seed=seed,
                     detector_args=detector.args, notes=all_notes, base_fingerprint=fingerprint)
