"""Scan speed and memory: one full `lorascan scan` of an adapter (each detector's wall time and
the peak resident memory), and the batch mode's adapters per minute with 1 and 2 workers over
the same copies, in one run. Every scan is a fresh `lorascan` process, as a user runs it.

    .venv/bin/python bench/scan.py examples/adapters/minilm-rfc-r04 --copies 4 --json bench-scan.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LS = str(Path(sys.executable).with_name("lorascan"))


def run(args: list[str]) -> tuple[float, int]:
    """(wall seconds, peak RSS of the children in MiB) of one lorascan command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.run([LS, *args], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode not in (0, 3):
        raise SystemExit(f"lorascan {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()[:300]}")
    peak = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return wall, peak // 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("adapter")
    ap.add_argument("--base", default="minilm")
    ap.add_argument("--copies", type=int, default=4, help="adapters in the batch runs")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    out: dict = {"adapter": a.adapter, "base": a.base, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        rec = Path(tmp) / "r.json"
        wall, peak = run(["scan", a.adapter, "--base", a.base, "--json", str(rec), "--quiet"])
        r = json.loads(rec.read_text())
        out["single"] = {"wall_s": wall, "peak_rss_mib": peak, "verdict": r["verdict"]["label"],
                         "detectors": {d["detector"]: d["wall_time_s"] for d in r["detectors"]}}
        print(f"single scan: {wall:.1f} s wall, peak RSS {peak} MiB, verdict {r['verdict']['label']}; "
              + ", ".join(f"{k} {v:.1f} s" for k, v in out["single"]["detectors"].items()))
        batch = Path(tmp) / "batch"
        for i in range(a.copies):
            dst = batch / f"a{i}"
            dst.mkdir(parents=True)
            for n in ("adapter_config.json", "adapter_model.safetensors"):
                shutil.copy(Path(a.adapter) / n, dst / n)
        for workers in (1, 2):
            wall, peak = run(["scan", str(batch), "--base", a.base, "--out", str(Path(tmp) / f"out{workers}"),
                              "--workers", str(workers), "--quiet"])
            rate = a.copies / wall * 60
            out[f"batch_workers_{workers}"] = {"wall_s": wall, "adapters_per_min": rate, "peak_rss_mib": peak}
            print(f"batch of {a.copies}, --workers {workers}: {wall:.1f} s, {rate:.2f} adapters/min")
        w1, w2 = out["batch_workers_1"]["wall_s"], out["batch_workers_2"]["wall_s"]
        print(f"2 workers vs 1: {w1 / w2:.2f}x")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
