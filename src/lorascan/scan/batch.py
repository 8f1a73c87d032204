"""Batch scans: one record per adapter under ``OUT/records/``, a summary beside them.

Resumable: an adapter whose record exists, is ``ok`` and names the same file hashes as the
adapter on disk now is not scanned again; errors are retried. Records are written atomically,
so a batch killed mid-way leaves only whole records. ``workers`` > 1 scans in worker processes
(each loads its own model; on 2 cores two workers mostly overlap model loading with readout).
An adapter that fails is recorded with its error and the batch goes on.

Any executor of :mod:`lorascan.experiments.executors` can run the scans instead (``executor``;
``lorascan scan --executor ray``): one job per adapter (its spec and the scan config, nothing
else), records written here by the driver as results come back. An adapter whose Ray worker
died for good (retries spent) is recorded as an error, so the next batch scans it again.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from lorascan.errors import DataError, LorascanError, UsageError
from lorascan.records import record_header, remove_dead_temp_files, sha256_file, write_json_atomic
from lorascan.scan.pipeline import ScanConfig, error_record, scan_adapter, settings_digest
from lorascan.text import slug

SUMMARY_KIND = "scan_batch"


def record_name(spec: str) -> str:
    """File name of an entry's record: a readable slug plus a hash of the spec (unique); a
    local folder is keyed by its resolved path, so a relative and an absolute spelling of the
    same adapter share one record."""
    path = Path(spec).expanduser()
    key = str(path.resolve()) if path.exists() else spec
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    named = path.name if path.name != "adapter" else f"{path.parent.name}-adapter"
    return f"{slug(named or spec)[:80]}-{digest}.json"


def scan_one(spec: str, config: ScanConfig, pool: Any = None) -> dict[str, Any]:
    """The record of one entry, an error record when it cannot be scanned."""
    from lorascan.scan.inputs import resolve_input

    try:
        return scan_adapter(resolve_input(spec), config, pool)
    except LorascanError as err:
        return error_record(spec, err)
    except (MemoryError, RecursionError, ValueError, RuntimeError, OSError) as err:  # a malformed adapter
        # that got past validation into a library: recorded as not scanned, never a pass
        return error_record(spec, DataError(f"cannot scan {spec}: {type(err).__name__}: {str(err)[:200]}"))


def _done(path: Path, spec: str, settings: str) -> dict[str, Any] | None:
    """The record of an earlier batch for ``spec`` when it can stand: scanned, the adapter's
    files unchanged and the scan settings the same (``settings``: their digest,
    :func:`lorascan.scan.pipeline.settings_digest`); else None (scan again)."""
    try:
        rec = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or rec.get("status") != "ok" or rec.get("settings_sha256") != settings:
        return None
    files = (rec.get("adapter") or {}).get("files") or {}
    folder = Path((rec.get("adapter") or {}).get("path") or spec)
    try:
        if any(sha256_file(folder / n) != h for n, h in files.items()) or not files:
            return None
    except OSError:
        return None
    return rec


@dataclass(frozen=True)
class ScanJob:
    """One adapter for an executor: the entry as given and the scan settings."""

    spec: str
    config: ScanConfig
    threads: int | None = None

    @property
    def needs_gpu(self) -> bool:
        return self.config.device.startswith("cuda")

    def lost(self, reason: str) -> tuple[str, dict[str, Any]]:
        return self.spec, error_record(self.spec, DataError(f"cannot scan {self.spec}: {reason}"))


def scan_job(job: ScanJob) -> tuple[str, dict[str, Any]]:
    """An executor's unit of work: ``(spec, record)``."""
    if job.threads:
        import torch

        torch.set_num_threads(job.threads)
    return job.spec, scan_one(job.spec, job.config)


def run_batch(entries: Sequence[str], config: ScanConfig, out: str | Path, workers: int = 1,
              on_record: Callable[[dict[str, Any]], None] | None = None, executor: Any = None) -> dict[str, Any]:
    """Scan ``entries`` into ``out``; returns the summary record (also written as
    ``out/summary.json``). ``executor``: run the scans there instead of in ``workers``
    local processes."""
    if workers < 1:
        raise UsageError(f"--workers must be >= 1, got {workers}")
    out = Path(out)
    records_dir = out / "records"
    try:
        records_dir.mkdir(parents=True, exist_ok=True)
        for folder in (out, records_dir):  # what a killed batch left half-written
            remove_dead_temp_files(folder)
    except OSError as err:
        raise DataError(f"cannot write to {out}: {err.strerror or err}") from None
    results: dict[str, dict[str, Any]] = {}
    todo = []
    settings = settings_digest(config)
    for spec in entries:
        prev = _done(records_dir / record_name(spec), spec, settings)
        if prev is not None:
            results[spec] = prev
            prev = {**prev, "_resumed": True}
            if on_record:
                on_record(prev)
        else:
            todo.append(spec)

    def keep(spec: str, rec: dict[str, Any]) -> None:
        write_json_atomic(records_dir / record_name(spec), rec)
        results[spec] = rec
        if on_record:
            on_record(rec)

    if executor is not None:
        threads = getattr(executor, "threads", None)
        for spec, rec in executor.map(scan_job, [ScanJob(spec, config, threads) for spec in todo]):
            keep(spec, rec)
    elif workers == 1 or len(todo) <= 1:
        from lorascan.probe.generalization import ClassifierPool

        pool = ClassifierPool(device=config.device)  # one base model for the whole batch
        for spec in todo:
            keep(spec, scan_one(spec, config, pool))
    else:
        with ProcessPoolExecutor(max_workers=workers) as ex:
            threads = max(1, (os.cpu_count() or 1) // workers)
            # workers x threads = the cores: no oversubscription
            futures = {ex.submit(scan_job, ScanJob(spec, config, threads)): spec for spec in todo}
            for fut in as_completed(futures):
                spec = futures[fut]
                try:
                    rec = fut.result()[1]
                except Exception as err:  # noqa: BLE001 - a worker that died: recorded, batch goes on
                    rec = error_record(spec, DataError(f"worker failed: {type(err).__name__}: {str(err)[:200]}"))
                keep(spec, rec)
    rows = []
    for spec in entries:
        rec = results[spec]
        rows.append({"spec": spec, "record": f"records/{record_name(spec)}", "status": rec.get("status"),
                     "verdict": (rec.get("verdict") or {}).get("label"), "error": rec.get("error"),
                     "wall_time_s": rec.get("wall_time_s")})
    counts = {k: sum(1 for r in rows if r["verdict"] == k) for k in ("allow", "review", "block", "error")}
    summary = {**record_header(SUMMARY_KIND), "n": len(rows), "counts": counts, "adapters": rows}
    write_json_atomic(out / "summary.json", summary)
    return summary
