"""Labelled cohorts for the behavioural detector (paper §7: 4 clean + 30 poisoned adapters):
find the adapters, probe each once with the whole battery (cached beside it), calibrate a view.

Discovery: COHORT_DIR is searched recursively for adapter folders (``adapter_config.json`` +
``lorascan.json``; hidden and temporary folders are skipped). The label comes from
``lorascan.json`` (``poison.count`` > 0: poisoned, see :func:`lorascan.detect.cohort.label_from_manifest`),
the base model from its ``base``, the data folder from its ``data.path`` or, when that path no
longer exists, a sibling ``data/`` folder (the ``lorascan sweep run`` layout: ``<run>/adapter``,
``<run>/data``). COHORT_DIR may also be a labels file (.json/.csv of path,label; see
:mod:`lorascan.detect.cohort`).

Cache: the view A record of battery NAME is written atomically to ``<run>/probe-NAME.json``
(``<run>`` is the adapter folder's parent when the folder is called ``adapter``, else the
adapter folder itself) and reused when its battery content, readout, base model, adapter
weights and data manifest are unchanged. Other views are cut from it without a model run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from lorascan.detect.cohort import MANIFEST, label_from_manifest, read_cohort
from lorascan.errors import DataError, LorascanError, UsageError
from lorascan.probe.batteries import Battery
from lorascan.records import SCHEMA_VERSION, read_json, sha256_file, write_json_atomic


@dataclass(frozen=True)
class CohortRun:
    name: str
    adapter: Path
    label: int
    label_source: str

    @property
    def run_dir(self) -> Path:
        return self.adapter.parent if self.adapter.name == "adapter" else self.adapter


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def discover_runs(cohort: str | Path) -> tuple[list[CohortRun], list[str]]:
    """The labelled adapters of a cohort folder (searched recursively) or labels file, and
    notes on folders ignored. Both classes must be present."""
    root = Path(cohort)
    notes: list[str] = []
    if root.is_file():
        members, notes = read_cohort(root)
        return [CohortRun(m.name, m.path, m.label, m.source) for m in members], notes
    if not root.is_dir():
        raise DataError(f"cohort not found: {root}")
    if (root / "adapter_config.json").is_file():
        raise UsageError(f"{root} is a single adapter; a cohort is a folder of runs or adapters, or a labels file")
    runs = []
    for cfg in sorted(root.rglob("adapter_config.json")):
        folder = cfg.parent
        if _hidden(folder, root):
            continue
        rel = folder.relative_to(root)
        if not (folder / MANIFEST).is_file():
            notes.append(f"{rel.as_posix()} ignored: no {MANIFEST}, so no label")
            continue
        label, source = label_from_manifest(folder)
        name = (rel.parent if folder.name == "adapter" and rel.parent.parts else rel).as_posix()
        runs.append(CohortRun(name, folder, label, source))
    if not runs:
        raise DataError(f"{root}: no adapters (folders with adapter_config.json and {MANIFEST}) in the cohort")
    n_pos = sum(r.label for r in runs)
    if n_pos in (0, len(runs)):
        raise DataError(f"{root}: calibration needs clean and poisoned adapters "
                        f"(got {len(runs) - n_pos} clean, {n_pos} poisoned)")
    return runs, notes


def cache_path(run: CohortRun, battery: Battery) -> Path:
    return run.run_dir / f"probe-{re.sub(r'[^A-Za-z0-9_.-]+', '_', battery.name)}.json"


def cached_record(path: Path, run: CohortRun, battery: Battery, readout: str, base: str | None) -> dict[str, Any] | None:
    """The cached view A record at ``path`` when it still describes this adapter, data and
    battery; None when absent, unreadable or stale."""
    from lorascan.models.loading import read_adapter_meta
    from lorascan.probe.generalization import resolve_data_dir

    if not path.is_file():
        return None
    try:
        rec = read_json(path, "probe record")
        meta = read_adapter_meta(run.adapter)
        data = resolve_data_dir(run.adapter, None, meta)
        fresh = (isinstance(rec, dict) and rec.get("kind") == "probe" and rec.get("schema_version") == SCHEMA_VERSION
                 and rec.get("battery_sha256") == battery.sha256() and rec.get("view") == "A"
                 and not rec.get("exclude_triggers") and rec.get("readout") == readout
                 and rec.get("base") == (base or meta.get("base"))
                 and rec.get("adapter_sha256") == sha256_file(run.adapter / "adapter_model.safetensors")
                 and (rec.get("data") or {}).get("manifest_sha256") == sha256_file(data / "manifest.json"))
    except (LorascanError, OSError):
        return None
    return rec if fresh else None


def probe_cohort(runs: Sequence[CohortRun], battery: Battery, *, base: str | None = None, readout: str = "logits",
                 batch_size: int = 32, refresh: bool = False, cache: bool = True, progress: bool = False,
                 log: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """The view A probe record of every run, from its cache or by probing (one base model
    load for the whole cohort). ``log`` receives one line per adapter."""
    import time

    from lorascan.probe.generalization import ClassifierPool, run_probe

    pool = ClassifierPool()
    records = []
    for i, run in enumerate(runs, 1):
        path = cache_path(run, battery)
        rec = cached_record(path, run, battery, readout, base) if cache and not refresh else None
        how = "cached"
        if rec is None:
            t0 = time.monotonic()
            try:
                rec = run_probe(run.adapter, battery, "A", base=base, readout=readout, batch_size=batch_size,
                                progress=progress, pool=pool)
            except LorascanError as err:
                raise type(err)(f"cohort adapter {run.name}: {err}") from None
            if cache:
                write_json_atomic(path, rec)
            how = f"probed in {time.monotonic() - t0:.1f}s"
        records.append(rec)
        if log is not None:
            log(f"[{i}/{len(runs)}] {run.name} (label {run.label}): {how}")
    return records
