"""Benchmark (issue 11): the exhaustive token scan (every candidate-vocabulary token verified
exactly) against the screened one (the top K of the screens verified, with the two-piece
compounds the scan adds), on the same adapter in one run: the time ratio and how many of the exhaustive top 10 the screened top K holds.

Both verify on the same first ``--n`` verification injections (a small N keeps the exhaustive
pass feasible on a CPU: 23.5k MiniLM tokens x N forward passes). ``--vocab-limit M`` verifies
only a seeded random M of the vocabulary plus the screened top K exhaustively (a partial,
faster run; the record says so).

Usage (from the repository root):

    .venv/bin/python bench/tokens.py ADAPTER --base minilm [--n 4] [--top 48 64 96]
        [--vocab-limit M] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time



def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("adapter")
    ap.add_argument("--base", default="minilm")
    ap.add_argument("--task", default=None)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--top", type=int, nargs="+", default=[16, 32, 48, 64, 96])
    ap.add_argument("--vocab-limit", type=int, default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    from lorascan.cli.tokens import _context
    from lorascan.detect.token_screen import candidate_vocabulary
    from lorascan.detect.tokens import TokenScanConfig, Verifier, screen, verification_injections

    ctx = _context(args.adapter, args.base, args.task, "offline-pi-v1", "auto", False)
    clf = ctx.classifier()
    vocab = candidate_vocabulary(clf.tokenizer, int(clf.model.get_input_embeddings().weight.shape[0]), clf.task)
    texts = verification_injections(clf, ctx.probes.injections, max(args.n, 32), ctx.batch_size)
    verifier = Verifier(clf, texts[:args.n], 64, True)

    t0 = time.monotonic()
    found = screen(ctx, vocab, texts, TokenScanConfig(top=max(args.top)))
    t_screen = time.monotonic() - t0
    vocab = found["vocab"]  # the candidate vocabulary plus the screen's two-piece compounds
    idx = sorted(set(range(vocab.singles)) | set(found["top"]))
    if args.vocab_limit:
        single = list(range(vocab.singles))
        idx = sorted(set(random.Random(0).sample(single, min(args.vocab_limit, len(single)))) | set(found["top"]))
    t0 = time.monotonic()
    rates, margins = verifier.rates([vocab.texts[i] for i in idx], desc="exhaustive")
    t_exh = time.monotonic() - t0
    per_token = t_exh / len(idx)
    order = sorted(range(len(idx)), key=lambda j: (-rates[j], margins[j]))
    top10 = [idx[j] for j in order[:10]]
    rows = []
    compounds = [i for i in found["top"] if i >= vocab.singles]
    screened_singles = [i for i in found["top"] if i < vocab.singles]
    n_compounds = len(compounds)
    for k in args.top:
        screened = screened_singles[:k] + compounds  # the top k and the compounds, as the scan verifies
        t_screened = t_screen + per_token * (k + n_compounds)
        rows.append({"top": k, "overlap_top10": len(set(top10) & set(screened)),
                     "screened_seconds": t_screened,
                     "exhaustive_seconds_full_vocab": per_token * vocab.singles,
                     "time_ratio": per_token * vocab.singles / t_screened})
    rec = {"adapter": args.adapter, "base": args.base, "n_injections": args.n, "vocabulary": vocab.singles,
           "compounds": n_compounds,
           "verified_exhaustively": len(idx), "partial": bool(args.vocab_limit), "screen_seconds": t_screen,
           "exhaustive_seconds": t_exh, "seconds_per_token": per_token,
           "exhaustive_top10": [{"token": vocab.texts[i], "attack_rate": float(rates[idx.index(i)])} for i in top10],
           "rows": rows, "machine": {"cpus": __import__("os").cpu_count(), "platform": platform.platform()}}
    for r in rows:
        print(f"K={r['top']:4d}: {r['overlap_top10']}/10 of the exhaustive top 10; "
              f"screened {r['screened_seconds']:.1f} s, "
              f"exhaustive (full vocabulary) {r['exhaustive_seconds_full_vocab']:.0f} s, ratio {r['time_ratio']:.0f}x")
    print("exhaustive top 10:", ", ".join(f"{t['token']} {t['attack_rate']:.2f}" for t in rec["exhaustive_top10"]))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(rec, fh, indent=1, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
