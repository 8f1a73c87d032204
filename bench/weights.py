"""Benchmark: ``lorascan weights`` against adaptersentry 2.0.2 on the same synthetic adapters.

Two PEFT adapters are written with numpy (lorascan.detect.synthetic): a Qwen2.5-1.5B-shaped
r=16 one (28 layers x 7 projections, bf16, 37 MB) and a Llama-70B-shaped r=64 one (80 x 7,
bf16, 1.7 GB). Each tool is run as a whole process (start-up included, as a user runs it),
alternating, and its wall time and peak resident memory (ru_maxrss of the child, from wait4)
are recorded; the table gives medians and the ratios adaptersentry / lorascan.

adaptersentry is a peer tool, never a lorascan dependency: install it in its own venv, e.g.

    python3 -m venv /tmp/peer-venv && /tmp/peer-venv/bin/pip install adaptersentry==2.0.2

Usage (from the repository root):

    .venv/bin/python bench/weights.py [--peer /tmp/peer-venv/bin/adaptersentry] [--work DIR]
        [--repeats 5] [--repeats-70b 2] [--skip-70b] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lorascan.detect.synthetic import write_lora_adapter

ROOT = Path(__file__).resolve().parent.parent
ADAPTERS = {"qwen2.5-1.5b r16": ("qwen2.5-1.5b", 16), "llama-70b r64": ("llama-70b", 64)}


def run_measured(cmd: list[str], timeout: float) -> tuple[float, float, int]:
    """Wall seconds, peak RSS in MiB and exit code of one child process."""
    errfile = tempfile.TemporaryFile()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errfile)
    deadline = start + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            proc.kill()
            pid, status, usage = os.wait4(proc.pid, 0)
            return float("inf"), usage.ru_maxrss / 1024, -9
        time.sleep(0.002)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    errfile.seek(0)
    err = errfile.read().decode(errors="replace")
    errfile.close()
    if proc.returncode:
        print(f"  ! {' '.join(cmd[:2])} exited {proc.returncode}: {err.strip()[:200]}", file=sys.stderr)
    return wall, usage.ru_maxrss / 1024, proc.returncode


def build(work: Path, names: list[str]) -> dict[str, Path]:
    out = {}
    for name in names:
        shape, rank = ADAPTERS[name]
        folder = work / shape
        if not (folder / "adapter_config.json").exists():
            t = time.perf_counter()
            write_lora_adapter(folder, shape, rank=rank, dtype="BF16", seed=0)
            size = (folder / "adapter_model.safetensors").stat().st_size / 2**20
            print(f"built {name}: {size:.0f} MiB in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        out[name] = folder
    return out


def bench_one(folder: Path, lorascan: str, peer: str, repeats: int, timeout: float) -> dict:
    ours_cmd = [lorascan, "weights", str(folder), "--json", os.devnull]
    peer_cmd = [peer, "scan", str(folder / "adapter_model.safetensors"), "--format", "json"]
    runs: dict[str, list[tuple[float, float, int]]] = {"lorascan": [], "adaptersentry": []}
    run_measured(ours_cmd, timeout)  # warm the page cache and .pyc files for both tools
    run_measured(peer_cmd, timeout)
    for _ in range(repeats):
        runs["lorascan"].append(run_measured(ours_cmd, timeout))
        runs["adaptersentry"].append(run_measured(peer_cmd, timeout))
    res = {}
    for tool, rows in runs.items():
        res[tool] = {"wall_s": statistics.median(r[0] for r in rows), "peak_mib": max(r[1] for r in rows),
                     "exit_codes": sorted({r[2] for r in rows}), "walls": [r[0] for r in rows]}
    res["speedup"] = res["adaptersentry"]["wall_s"] / res["lorascan"]["wall_s"]
    res["memory_ratio"] = res["adaptersentry"]["peak_mib"] / res["lorascan"]["peak_mib"]
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--peer", default=os.environ.get("ADAPTERSENTRY", "/tmp/peer-venv/bin/adaptersentry"))
    ap.add_argument("--lorascan", default=str(ROOT / ".venv" / "bin" / "lorascan"))
    ap.add_argument("--work", default=None, help="Folder for the synthetic adapters (kept for reuse).")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--repeats-70b", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=900.0, help="Seconds per run before it is killed.")
    ap.add_argument("--skip-70b", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if not Path(args.peer).exists():
        print(f"adaptersentry not found at {args.peer}; install it in a separate venv:\n"
              "  python3 -m venv /tmp/peer-venv && /tmp/peer-venv/bin/pip install adaptersentry==2.0.2",
              file=sys.stderr)
        return 2
    work = Path(args.work or Path(tempfile.gettempdir()) / "lorascan-bench-weights")
    names = [n for n in ADAPTERS if not (args.skip_70b and "70b" in n)]
    folders = build(work, names)
    results = {}
    for name in names:
        reps = args.repeats_70b if "70b" in name else args.repeats
        print(f"running {name} ({reps} alternating runs each)...", file=sys.stderr)
        results[name] = bench_one(folders[name], args.lorascan, args.peer, reps, args.timeout)
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"{'adapter':<18} {'lorascan s':>10} {'MiB':>7} {'adaptersentry s':>16} {'MiB':>7} "
          f"{'speed-up':>9} {'mem ratio':>9}")
    for name, r in results.items():
        o, p = r["lorascan"], r["adaptersentry"]
        print(f"{name:<18} {o['wall_s']:>10.3f} {o['peak_mib']:>7.0f} {p['wall_s']:>16.3f} {p['peak_mib']:>7.0f} "
              f"{r['speedup']:>8.2f}x {r['memory_ratio']:>8.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": {"arch": platform.machine(), "cpus": os.cpu_count()},
                                               "results": results}, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
