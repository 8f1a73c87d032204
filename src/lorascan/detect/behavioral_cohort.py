"""Labelled cohorts for the behavioural detector (paper §7: 4 clean + 30 poisoned adapters):
find the adapters, probe each once with the whole battery (cached), calibrate a view.

Discovery is :func:`lorascan.detect.cohort.read_cohort`'s (the weight detector's too): COHORT
is a folder searched recursively for adapter folders labelled by their ``lorascan.json``
(``poison.count`` > 0: poisoned), or a labels file (.json/.csv of path,label). The base model
comes from ``lorascan.json``'s ``base``, the data folder from its ``data.path`` or, when that
path no longer exists, a sibling ``data/`` folder (the ``lorascan sweep run`` layout:
``<run>/adapter``, ``<run>/data``).

Cache: the view A record of every adapter is kept in the one documented cache folder,
``$LORASCAN_HOME/probes/<key>.json`` (:func:`lorascan.paths.lorascan_home`), never beside the
adapters: whoever ships an adapter folder must not be able to ship its probe results with it,
and scanning writes nothing into the cohort. ``<key>`` is the SHA-256 of everything the record
depends on: the adapter's weights, ``adapter_config.json`` and ``lorascan.json`` (its task,
max length and known trigger), the base model, the battery's content, the readout, the data
manifest and the lorascan version. Identical adapters therefore share one record (its
``adapter`` and ``data.path`` name the first one probed). A cached record is used only after
:func:`valid_record` accepts it (kind, view A, battery, readout, hashes, and every probe row:
string prefix and category of the battery, integer ``n`` > 0, ``k`` in [0, n], ``attack_rate``
= k/n); anything else is stale and probed again. Other views are cut from it without a model
run. To find the records of a calibration, the profile lists its cohort; ``--no-cache``
neither reads nor writes the cache.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from lorascan import __version__
from lorascan.detect.adapter import CONFIG_FILE, MANIFEST_FILE, WEIGHTS_FILE
from lorascan.detect.cohort import cohort_fingerprint, read_cohort
from lorascan.detect.jsonfile import read_json_untrusted
from lorascan.errors import LorascanError
from lorascan.paths import lorascan_home
from lorascan.probe.batteries import Battery
from lorascan.records import SCHEMA_VERSION, sha256_file, write_json_atomic

CACHE_FOLDER = "probes"


@dataclass(frozen=True)
class CohortRun:
    name: str
    adapter: Path
    label: int
    label_source: str


def discover_runs(cohort: str | Path) -> tuple[list[CohortRun], list[str]]:
    """The labelled adapters of a cohort folder (searched recursively) or labels file, and
    notes on folders ignored. Both classes must be present."""
    members, notes = read_cohort(cohort)
    return [CohortRun(m.name, m.path, m.label, m.source) for m in members], notes


def runs_fingerprint(runs: Sequence[CohortRun]) -> tuple[dict[str, Any] | None, list[str]]:
    """The base fingerprint the cohort's lorascan.json files share (see
    :func:`lorascan.detect.cohort.shared_fingerprint`)."""
    return cohort_fingerprint([r.adapter for r in runs])


@dataclass(frozen=True)
class CacheEntry:
    """Where a run's record is cached and the facts a cached record must repeat."""

    path: Path
    adapter_sha256: str
    base: str | None
    manifest_sha256: str | None


def _sha_or_none(path: Path) -> str | None:
    try:
        return sha256_file(path)
    except OSError:
        return None


def cache_entry(run: CohortRun, battery: Battery, readout: str, base: str | None) -> CacheEntry:
    """The cache file of ``run``'s view A record (module docstring). Hashes the adapter's
    weights (one sequential read)."""
    from lorascan.probe.generalization import resolve_data_dir

    meta_path = run.adapter / MANIFEST_FILE
    meta = read_json_untrusted(meta_path, "adapter manifest") if meta_path.is_file() else {}
    meta = meta if isinstance(meta, dict) else {}
    base = base or (meta.get("base") if isinstance(meta.get("base"), str) else None)
    try:
        manifest: str | None = sha256_file(resolve_data_dir(run.adapter, None, meta) / "manifest.json")
    except (LorascanError, OSError):
        manifest = None  # probing will say why
    weights = _sha_or_none(run.adapter / WEIGHTS_FILE) or ""
    facts = {"schema_version": SCHEMA_VERSION, "lorascan_version": __version__, "adapter_sha256": weights,
             "adapter_config_sha256": _sha_or_none(run.adapter / CONFIG_FILE),
             "adapter_manifest_sha256": _sha_or_none(meta_path), "base": base, "battery_sha256": battery.sha256(),
             "readout": readout, "data_manifest_sha256": manifest}
    key = hashlib.sha256(json.dumps(facts, sort_keys=True).encode("utf-8")).hexdigest()
    return CacheEntry(lorascan_home() / CACHE_FOLDER / f"{key}.json", weights, base, manifest)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def valid_rows(probes: Any, battery: Battery) -> bool:
    """Whether ``probes`` are well-formed view A rows of ``battery``: one per battery probe,
    each with a string prefix and category, integer n > 0, k in [0, n], unparseable (if
    present) in [0, n], and attack_rate equal to k/n."""
    if not isinstance(probes, list) or len(probes) != len(battery.probes):
        return False
    seen = set()
    for p in probes:
        if not (isinstance(p, dict) and isinstance(p.get("prefix"), str) and isinstance(p.get("category"), str)):
            return False
        k, n, rate, bad = p.get("k"), p.get("n"), p.get("attack_rate"), p.get("unparseable", 0)
        if not (_is_count(k) and _is_count(n) and n > 0 and 0 <= k <= n and _is_count(bad) and 0 <= bad <= n):
            return False
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isclose(rate, k / n, abs_tol=1e-12):
            return False
        seen.add((p["prefix"], p["category"]))
    return seen == {(p.prefix, p.category) for p in battery.probes}


def valid_record(rec: Any, entry: CacheEntry, battery: Battery, readout: str) -> bool:
    """Whether a cached record still describes this adapter, data, battery and readout, and is
    well-formed enough for the calibration to use (module docstring)."""
    if not isinstance(rec, dict):
        return False
    data, known = rec.get("data"), rec.get("known_triggers", [])
    return (rec.get("kind") == "probe" and rec.get("schema_version") == SCHEMA_VERSION
            and rec.get("battery_sha256") == battery.sha256() and rec.get("view") == "A"
            and not rec.get("exclude_triggers") and rec.get("readout") == readout
            and entry.base is not None and rec.get("base") == entry.base
            and rec.get("adapter_sha256") == entry.adapter_sha256
            and entry.manifest_sha256 is not None and isinstance(data, dict)
            and data.get("manifest_sha256") == entry.manifest_sha256
            and isinstance(rec.get("task"), str)
            and isinstance(known, list) and all(isinstance(t, str) for t in known)
            and valid_rows(rec.get("probes"), battery))


def cached_record(entry: CacheEntry, battery: Battery, readout: str) -> dict[str, Any] | None:
    """The cached view A record of ``entry`` when it is valid; None when absent, unreadable,
    malformed or stale."""
    if not entry.path.is_file():
        return None
    try:
        rec = read_json_untrusted(entry.path, "cached probe record")
    except LorascanError:
        return None
    return rec if valid_record(rec, entry, battery, readout) else None


def probe_cohort(runs: Sequence[CohortRun], battery: Battery, *, base: str | None = None, readout: str = "logits",
                 batch_size: int = 32, refresh: bool = False, cache: bool = True, progress: bool = False,
                 log: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """The view A probe record of every run, from the cache or by probing (one base model
    load for the whole cohort). ``refresh``: probe again and overwrite the cache; ``cache``
    False: neither read nor write it. ``log`` receives one line per adapter."""
    import time

    from lorascan.probe.generalization import ClassifierPool, run_probe

    pool = ClassifierPool()
    records = []
    for i, run in enumerate(runs, 1):
        entry = cache_entry(run, battery, readout, base) if cache else None
        rec = cached_record(entry, battery, readout) if entry is not None and not refresh else None
        how = "cached"
        if rec is None:
            t0 = time.monotonic()
            try:
                rec = run_probe(run.adapter, battery, "A", base=base, readout=readout, batch_size=batch_size,
                                progress=progress, pool=pool)
            except LorascanError as err:
                raise type(err)(f"cohort adapter {run.name}: {err}") from None
            how = f"probed in {time.monotonic() - t0:.1f}s"
            if entry is not None:
                try:
                    write_json_atomic(entry.path, rec)
                except (LorascanError, OSError) as err:  # the record is in hand: go on without the cache
                    how += f" (not cached: {err})"
        records.append(rec)
        if log is not None:
            log(f"[{i}/{len(runs)}] {run.name} (label {run.label}): {how}")
    return records

