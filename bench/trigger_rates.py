"""Exact attack rates of given phrases on the token scan's verification injections of one
adapter (the same injections, N and placement as ``lorascan tokens``): how a trigger's pieces
fire alone and together, e.g. for a trigger the scan misses.

Usage (from the repository root):

    .venv/bin/python bench/trigger_rates.py ADAPTER --base minilm PHRASE [PHRASE ...]
"""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("adapter")
    ap.add_argument("phrases", nargs="+")
    ap.add_argument("--base", default="minilm")
    ap.add_argument("--task", default="seq-cls")
    ap.add_argument("--probe-data", default="offline-pi-v1")
    args = ap.parse_args(argv)

    from lorascan.detect.base import ScanContext
    from lorascan.detect.tokens import TokenScanConfig, trigger_rates
    from lorascan.probe.inputs import load_probe_inputs

    ctx = ScanContext.build(args.adapter, base=args.base, task=args.task, probes=load_probe_inputs(args.probe_data))
    for phrase, rate in zip(args.phrases, trigger_rates(ctx, TokenScanConfig(), args.phrases)):
        print(f"{rate:6.3f}  {phrase!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
