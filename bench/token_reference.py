"""Measurement for issue 11's missing differential: does subtracting the mean weight-screen score
of clean adapters (a per-base reference vector) move a trigger's tokens up the layer-0 weight
screen? For every poisoned adapter of a labelled cohort, the rank of the best-ranked token of
its trigger (same rule as ``lorascan scan-evaluate``'s recovery table) in the weight screen
over the candidate vocabulary, raw and after subtracting the clean adapters' mean; each
adapter's scores divided by their median first (ranks and learning rates scale the update).
A clean adapter's own differential uses the mean of the other clean adapters (leave one out),
and its best differential score is reported beside the poisoned ones'. With ``--reference``
(a file from ``lorascan token-reference``, or ``auto`` for the shipped one) the differential is
taken against that reference instead, as the scan takes it; adapters it was built from are
skipped.

Usage (from the repository root; the labels file from ``lorascan sweep report``):

    .venv/bin/python bench/token_reference.py runs/scan-cohort/cohort-v2-minilm-cohort.json --base minilm \
        [--reference auto|REF.json] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("labels")
    ap.add_argument("--base", default="minilm")
    ap.add_argument("--reference", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    from lorascan.detect.base import ScanContext
    from lorascan.detect.token_screen import candidate_vocabulary, weight_scores
    from lorascan.scan.evaluate import read_labelled
    from lorascan.scan.recovery import of_trigger, trigger_words
    from lorascan.detect.token_reference import choose
    from lorascan.models.adapter_files import WEIGHTS
    from lorascan.records import sha256_file

    members = read_labelled(args.labels)
    reference = None
    vocab, scores, raw = None, {}, {}
    for m in members:
        ctx = ScanContext.build(m.member.path, base=args.base, task="seq-cls")
        clf = ctx.classifier()
        if vocab is None:
            vocab = candidate_vocabulary(clf.tokenizer, int(clf.model.get_input_embeddings().weight.shape[0]),
                                         clf.task)
            if args.reference:
                reference = choose(args.reference, args.base, "seq-cls",
                                   int(clf.model.get_input_embeddings().weight.shape[0]))[0]
        if reference is not None and sha256_file(m.member.path / WEIGHTS) in reference.sources:
            print(f"skipped {m.name[-60:]}: it built the reference", file=sys.stderr)
            continue
        full = weight_scores(clf.model, ctx.base_classifier().model)[0]
        w = full[vocab.ids]
        scores[m.name] = w / np.median(w)
        if reference is not None:
            raw[m.name] = reference.differential(full)[vocab.ids]
        print(f"screened {m.name[-60:]}", file=sys.stderr)
    members = [m for m in members if m.name in scores]
    clean = [m.name for m in members if m.label == 0]
    rows = []
    for m in members:
        others = [scores[c] for c in clean if c != m.name]
        diff = raw[m.name] if reference is not None else scores[m.name] - np.mean(others, axis=0)
        row = {"name": m.name, "label": m.label, "family": m.family, "trigger": m.trigger, "asr": m.asr,
               "best_raw": float(scores[m.name].max()), "best_diff": float(diff.max())}
        if m.trigger:
            words = trigger_words(m.trigger)
            hit = np.array([of_trigger(t, words) for t in vocab.texts])
            for key, s in (("rank_raw", scores[m.name]), ("rank_diff", diff)):
                order = np.argsort(-s, kind="stable")
                row[key] = int(np.flatnonzero(hit[order])[0]) + 1 if hit.any() else None
        rows.append(row)
    for r in rows:
        ranks = f"rank raw {r.get('rank_raw')} -> differential {r.get('rank_diff')}" if r["label"] else "clean"
        print(f"{(r['trigger'] or 'clean')[:28]:<28} {ranks:<40} best differential {r['best_diff']:.2f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"labels": args.labels, "base": args.base, "reference": args.reference, "rows": rows}, fh, indent=1, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
