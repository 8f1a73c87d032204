"""Benchmark: reading out a probe battery the lorascan way against the paper's loop.

The same adapter, battery (default the 21-prefix ``paper-21``) and probed test injections
(``--limit``, default 60 as in the paper) are read out by:

- ``paper-loop``: the reference notebooks' way, adapter unmerged, one greedy ``generate`` call
  (5 new tokens) per prompt (label-word); for seq-cls one forward pass per prompt;
- ``batched-unmerged``: one batched logits readout over all probes, adapter unmerged;
- ``batched-merged``: the same with the adapter merged into the base;
- ``batched-merged-shared``: merged, and the prompts' common chat-template prefix run once
  (label-word; lorascan's default probe path).

Model loading is outside the timings. The batched methods are warmed up with one full pass
(on a GPU the first pass over new shapes pays for kernel selection) and timed as the best of
``--repeats`` passes; the paper loop is warmed up on a few prompts and timed once. The
table gives seconds, prompts per second, the speed-up over the paper loop and the agreement of
predictions with it (generate and logits readouts can differ on a few prompts). The paper loop
is slow (the design notes 309 s for 1,260 prompts of a 1.5B model on an H200): with
``--paper-limit N`` it runs on the first N injections per probe only and its time is scaled to
the full prompt count (marked "extrapolated"); agreement is then measured on that subset.

Usage (from the repository root):

    .venv/bin/python bench/probe.py --base tiny-qwen2 --data DATA_DIR [--adapter DIR]
        [--battery paper-21] [--limit 60] [--batch-size 32] [--device auto|cpu|cuda]
        [--dtype float32|bfloat16] [--repeats 3] [--skip-paper | --paper-limit N] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from typing import Any, Callable

import numpy as np

from lorascan.data.prepared import load_prepared
from lorascan.evaluate.readout import Classifier
from lorascan.probe.batteries import load_battery
from lorascan.probe.generalization import probe_texts


def _texts(data: str, battery: str, limit: int) -> list[str]:
    prepared = load_prepared(data, need_train=False)
    bat = load_battery(battery)
    out = []
    for probe in bat.probes:
        out += probe_texts(prepared, probe.prefix)[:limit]
    return out


def _load(base: str, adapter: str | None, merge: bool, device: str, dtype: str) -> Classifier:
    clf = Classifier.load(base, adapter, merge=merge, dtype=dtype)
    clf.model.to(device)
    return clf


def _paper_loop(clf: Classifier, texts: list[str]) -> np.ndarray:
    if clf.task == "label-word":
        return np.array([clf.generate([t], batch_size=1)[0] for t in texts])
    clf.share_prefix = False
    return np.array([int(clf.scores([t], batch_size=1)[0] > 0) for t in texts])


def _batched(batch_size: int, share: bool) -> Callable[[Classifier, list[str]], np.ndarray]:
    def run(clf: Classifier, texts: list[str]) -> np.ndarray:
        clf.share_prefix = share
        return (clf.scores(texts, batch_size=batch_size) > 0).astype(np.int8)
    return run


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True)
    ap.add_argument("--adapter", default=None)
    ap.add_argument("--data", required=True, help="a 'lorascan poison' folder (its test injections are probed)")
    ap.add_argument("--battery", default="paper-21")
    ap.add_argument("--limit", type=int, default=60, help="test injections per probe (the paper: 60)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes of each batched method (best is kept)")
    ap.add_argument("--skip-paper", action="store_true", help="skip the (slow) paper loop")
    ap.add_argument("--paper-limit", type=int, default=None,
                    help="run the paper loop on this many injections per probe and extrapolate")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    import torch

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    texts = _texts(args.data, args.battery, args.limit)
    n_per_probe = len(texts) // len(load_battery(args.battery).probes)
    sub = list(range(len(texts)))
    if args.paper_limit is not None and args.paper_limit < n_per_probe:
        sub = [i for i in range(len(texts)) if i % n_per_probe < args.paper_limit]
    methods: list[tuple[str, bool, Callable]] = [] if args.skip_paper else [("paper-loop", False, _paper_loop)]
    methods += [("batched-unmerged", False, _batched(args.batch_size, False)),
                ("batched-merged", True, _batched(args.batch_size, False)),
                ("batched-merged-shared", True, _batched(args.batch_size, True))]
    rows: list[dict[str, Any]] = []
    reference = None
    for name, merge, run in methods:
        clf = _load(args.base, args.adapter, merge, device, args.dtype)
        paper = name == "paper-loop"
        mine = sub if paper else list(range(len(texts)))
        run(clf, texts[:4] if paper else texts)  # warm-up
        best = float("inf")
        for _ in range(1 if paper else max(1, args.repeats)):
            _sync(device)
            t0 = time.perf_counter()
            preds = run(clf, [texts[i] for i in mine])
            _sync(device)
            best = min(best, time.perf_counter() - t0)
        wall = best * len(texts) / len(mine)
        full = np.full(len(texts), -2)
        full[mine] = preds
        reference = full if reference is None else reference
        both = (reference != -2) & (full != -2)
        rows.append({"method": name, "seconds": wall, "prompts_per_s": len(texts) / wall,
                     "extrapolated_from": len(mine) if len(mine) < len(texts) else None,
                     "agreement_with_first": float(np.mean(full[both] == reference[both])), "task": clf.task})
        print(f"{name:24s} {wall:9.2f}s {len(texts) / wall:9.1f} prompts/s", file=sys.stderr, flush=True)
        del clf
    first = rows[0]["seconds"]
    print(f"\n{len(texts)} prompts ({args.battery}, {args.limit} injections per probe), base {args.base}, "
          f"adapter {args.adapter or 'none'}, {device} {args.dtype}, batch {args.batch_size}")
    print(f"{'method':24s} {'seconds':>9s} {'prompts/s':>10s} {'speed-up':>9s} {'agreement':>10s}")
    for r in rows:
        note = f"  (extrapolated from {r['extrapolated_from']} prompts)" if r["extrapolated_from"] else ""
        print(f"{r['method']:24s} {r['seconds']:9.2f} {r['prompts_per_s']:10.1f} {first / r['seconds']:8.1f}x "
              f"{r['agreement_with_first']:10.3f}{note}")
    if args.json:
        info = {"argv": vars(args), "device": device, "n_prompts": len(texts), "python": platform.python_version(),
                "torch": torch.__version__, "rows": rows}
        if device.startswith("cuda"):
            info["gpu"] = torch.cuda.get_device_name()
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(info, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
