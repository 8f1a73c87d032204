"""Benchmark: the paper-style readout (one greedy ``generate`` call per prompt, 5 new tokens,
parsed INJECTION-then-BENIGN) against lorascan's batched logits readout, on the same base
model, adapter and prompts, in one run. Prints the time ratio and the agreement of the
predictions wherever the generate readout parses.

Usage (from the repository root):

    .venv/bin/python bench/readout.py --base smollm2-135m --adapter ADAPTER --data POISON_DIR
        [--n 60] [--batch-size 32] [--repeats 3] [--json OUT]

The prompts are the first N test injections of POISON_DIR with the manifest's trigger applied
(the ASR prompts) followed by N clean test rows, so both predicted classes occur. The batched
readout is warmed up with one full pass and timed as the best of ``--repeats`` passes; the
generate loop is warmed up on four prompts and timed once (it takes minutes).

It also prints the arithmetic floor of the batched side: the tokens it must run (each prompt
minus the chat-template prefix shared by all of them) times 2 FLOP per weight of the decoder's
linear layers, at the best fp32 matrix-product rate this machine reaches (timed here on a
4096 x hidden x intermediate product). The generate time over that floor bounds the speed-up
any exact batched readout can show on this machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import numpy as np

from lorascan.data.prepared import load_prepared
from lorascan.evaluate.readout import Classifier, common_prefix_length
from lorascan.evaluate.run import triggered_texts


def _floor(clf: Classifier, texts: list[str]) -> dict:
    """Arithmetic floor of the batched readout (module docstring)."""
    import torch

    seqs = clf._encode(texts)
    n = common_prefix_length(seqs)
    tokens = sum(len(q) - n for q in seqs)
    decoder = clf.model.get_decoder()
    weights = sum(m.weight.numel() for m in decoder.modules() if isinstance(m, torch.nn.Linear))
    cfg = clf.model.config
    a, b = torch.randn(4096, cfg.hidden_size), torch.randn(cfg.hidden_size, cfg.intermediate_size)
    for _ in range(3):
        a @ b
    reps, t0 = 20, time.perf_counter()
    for _ in range(reps):
        a @ b
    peak = 2 * a.shape[0] * a.shape[1] * b.shape[1] * reps / (time.perf_counter() - t0)
    flop = 2 * weights * tokens
    return {"shared_prefix_tokens": n, "suffix_tokens": tokens, "decoder_linear_weights": weights,
            "gflop": flop / 1e9, "peak_matmul_gflops": peak / 1e9, "floor_s": flop / peak}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True)
    ap.add_argument("--adapter", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--n", type=int, default=60, help="Triggered injections and clean rows each (default 60).")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3, help="timed passes of the batched readout (best is kept)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import torch

    prepared = load_prepared(args.data, need_train=False)
    trig = triggered_texts(prepared.test, prepared.trigger, prepared.placement, int(prepared.manifest.get("seed", 0)))
    texts = trig[: args.n] + [s.text for s in prepared.test[: args.n]]
    clf = Classifier.load(args.base, args.adapter)
    if clf.task != "label-word":
        sys.exit("the generate readout needs a label-word adapter")
    clf.predict(texts, "logits", batch_size=args.batch_size)  # warm-up
    t_batched = float("inf")
    for _ in range(max(1, args.repeats)):
        t0 = time.perf_counter()
        batched = clf.predict(texts, "logits", batch_size=args.batch_size)
        t_batched = min(t_batched, time.perf_counter() - t0)
    clf.generate(texts[:4], batch_size=1)  # warm-up
    t0 = time.perf_counter()
    paper = clf.generate(texts, batch_size=1)
    t_paper = time.perf_counter() - t0
    floor = _floor(clf, texts)
    parsed = paper != -1
    agree = float((paper[parsed] == batched[parsed]).mean()) if parsed.any() else float("nan")
    result = {
        "base": args.base, "adapter": args.adapter, "n_prompts": len(texts),
        "paper_generate_s": t_paper, "batched_logits_s": t_batched, "speedup": t_paper / t_batched,
        "floor_fraction": floor["floor_s"] / t_batched,
        "parsed": int(parsed.sum()), "agreement_where_parsed": agree, "arithmetic_floor": floor,
        "speedup_ceiling": t_paper / floor["floor_s"],
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, {platform.python_version()}",
    }
    print(f"{len(texts)} prompts on {args.base}: paper-style generate {t_paper:.1f}s, batched logits {t_batched:.2f}s "
          f"-> {t_paper / t_batched:.1f}x; generate parsed {parsed.sum()}/{len(texts)}, "
          f"agreement where parsed {agree:.3f}")
    print(f"arithmetic floor of the batched side: {floor['suffix_tokens']} tokens after a shared prefix of "
          f"{floor['shared_prefix_tokens']} x {floor['decoder_linear_weights'] / 1e6:.1f}M weights = "
          f"{floor['gflop']:.0f} GFLOP at {floor['peak_matmul_gflops']:.0f} GFLOP/s (best matmul here) = "
          f"{floor['floor_s']:.2f}s -> speed-up ceiling {t_paper / floor['floor_s']:.1f}x")
    print(f"fraction of the floor reached by the batched readout: {floor['floor_s'] / t_batched:.0%}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    return 0 if parsed.any() and np.isfinite(agree) else 1


if __name__ == "__main__":
    sys.exit(main())
