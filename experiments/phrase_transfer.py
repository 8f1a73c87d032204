"""Do phrases transfer between adapters? The attack rate of each phrase on each adapter, placed as
the scan places a candidate (``"{phrase}. {injection}"``) on the adapter's held-out verification
injections (those the phrase search never searches on: the adapter's own verification set from
the 17th on). A natural weak spot of the task flips every adapter of the recipe; a backdoor's
phrase flips the adapter that learnt it (issue 12; ``lorascan.detect.clean_reference``).

    .venv/bin/python experiments/phrase_transfer.py --phrases PHRASES.json --base minilm \
        [--json OUT.json] ADAPTER [ADAPTER ...]

PHRASES.json: a list of strings. Prints a Markdown table (adapters x phrases).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phrases", required=True, type=Path)
    ap.add_argument("--base", required=True)
    ap.add_argument("--task", default="seq-cls")
    ap.add_argument("--search-n", type=int, default=16, help="verification injections the search uses (skipped)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("adapters", nargs="+")
    args = ap.parse_args(argv)

    from lorascan.detect.base import ScanContext
    from lorascan.detect.injections import verification_injections
    from lorascan.detect.tokens import Verifier
    from lorascan.probe.inputs import load_probe_inputs
    from lorascan.probe.generalization import ClassifierPool
    from lorascan.records import record_header, write_json_atomic

    phrases = json.loads(args.phrases.read_text("utf-8"))
    if not isinstance(phrases, list) or not phrases or not all(isinstance(p, str) and p for p in phrases):
        print(f"error: {args.phrases} is not a list of non-empty strings", file=sys.stderr)
        return 1
    probes, pool, rows = load_probe_inputs(), ClassifierPool(), []
    for adapter in args.adapters:
        ctx = ScanContext.build(adapter, base=args.base, task=args.task, probes=probes, pool=pool)
        clf = ctx.classifier()
        texts = verification_injections(clf, probes.injections, 48, 32)[args.search_n:]
        rates, margins = Verifier(clf, texts, 64, False).rates(phrases)
        rows.append({"adapter": adapter, "n_injections": len(texts), "rates": [float(r) for r in rates],
                     "mean_margins": [float(m) for m in margins]})
        print(f"{adapter}: " + " ".join(f"{r:.2f}" for r in rates), file=sys.stderr, flush=True)
    head = "| adapter | " + " | ".join(f"`{p}`" for p in phrases) + " |"
    print(head + "\n|---|" + "---:|" * len(phrases))
    for row in rows:
        name = "/".join(Path(row["adapter"]).parts[-2:])
        print(f"| {name} | " + " | ".join(f"{r:.2f}" for r in row["rates"]) + " |")
    if args.json:
        write_json_atomic(args.json, {**record_header("phrase_transfer"), "base": args.base, "phrases": phrases,
                                      "search_n": args.search_n, "adapters": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
