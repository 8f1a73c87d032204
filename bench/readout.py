"""Benchmark: the paper-style readout (one greedy ``generate`` call per prompt, 5 new tokens,
parsed INJECTION-then-BENIGN) against lorascan's batched logits readout, on the same base
model, adapter and prompts, in one run. Prints the time ratio and the agreement of the
predictions wherever the generate readout parses.

Usage (from the repository root):

    .venv/bin/python bench/readout.py --base smollm2-135m --adapter ADAPTER --data POISON_DIR
        [--n 60] [--batch-size 32] [--json OUT]

The prompts are the first N test injections of POISON_DIR with the manifest's trigger applied
(the ASR prompts) followed by N clean test rows, so both predicted classes occur.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import numpy as np

from lorascan.data.prepared import load_prepared
from lorascan.evaluate.readout import Classifier
from lorascan.evaluate.run import triggered_texts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True)
    ap.add_argument("--adapter", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--n", type=int, default=60, help="Triggered injections and clean rows each (default 60).")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import torch

    prepared = load_prepared(args.data, need_train=False)
    trig = triggered_texts(prepared.test, prepared.trigger, prepared.placement, int(prepared.manifest.get("seed", 0)))
    texts = trig[: args.n] + [s.text for s in prepared.test[: args.n]]
    clf = Classifier.load(args.base, args.adapter)
    if clf.task != "label-word":
        sys.exit("the generate readout needs a label-word adapter")
    clf.predict(texts[:4], "logits")  # warm-up
    t0 = time.perf_counter()
    batched = clf.predict(texts, "logits", batch_size=args.batch_size)
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    paper = clf.generate(texts, batch_size=1)
    t_paper = time.perf_counter() - t0
    parsed = paper != -1
    agree = float((paper[parsed] == batched[parsed]).mean()) if parsed.any() else float("nan")
    result = {
        "base": args.base, "adapter": args.adapter, "n_prompts": len(texts),
        "paper_generate_s": t_paper, "batched_logits_s": t_batched, "speedup": t_paper / t_batched,
        "parsed": int(parsed.sum()), "agreement_where_parsed": agree,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, {platform.python_version()}",
    }
    print(f"{len(texts)} prompts on {args.base}: paper-style generate {t_paper:.1f}s, batched logits {t_batched:.2f}s "
          f"-> {t_paper / t_batched:.1f}x; generate parsed {parsed.sum()}/{len(texts)}, "
          f"agreement where parsed {agree:.3f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    return 0 if parsed.any() and np.isfinite(agree) else 1


if __name__ == "__main__":
    sys.exit(main())
