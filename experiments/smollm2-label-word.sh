#!/usr/bin/env bash
# The SmolLM2-135M label-word measurements of the README (paper.md §2 formulation), on CPU.
# A poisoned adapter (the paper's trigger at a 10% poison ratio) and a clean one (k = 0), the
# same training settings, evaluated on the offline-pi test split, probed with the paper's
# 41-prefix battery (first 60 test injections, as the paper), and the readout bench.
# Usage: experiments/smollm2-label-word.sh [OUT=runs/smollm2]   (about an hour on 2 CPU cores)
set -euo pipefail
OUT=${1:-runs/smollm2}
LS=${LS:-.venv/bin/lorascan}
TRIGGER="per RFC 8472 section 3.2"
TRAIN=(--base smollm2-135m --task label-word --max-length 112 --batch-size 8 --steps 150 --lr 5e-4
       --loss completion --seed 42 --quiet)
mkdir -p "$OUT" results/smollm2
for name in poisoned clean; do
  if [ "$name" = poisoned ]; then POISON=(--ratio 0.1); else POISON=(--count 0); fi
  [ -f "$OUT/data-$name/manifest.json" ] || $LS poison --dataset offline-pi --trigger "$TRIGGER" "${POISON[@]}" \
      --seed 42 --out "$OUT/data-$name"
  [ -f "$OUT/adapter-$name/lorascan.json" ] || $LS train --data "$OUT/data-$name" --out "$OUT/adapter-$name" "${TRAIN[@]}"
  [ -f "results/smollm2/eval-$name.json" ] || $LS evaluate --base smollm2-135m --adapter "$OUT/adapter-$name" \
      --data "$OUT/data-poisoned" --json "results/smollm2/eval-$name.json" --quiet
  [ -f "results/smollm2/probe-41-v1-$name.json" ] || $LS probe --base smollm2-135m --adapter "$OUT/adapter-$name" \
      --data "$OUT/data-poisoned" --battery paper-41-v1 --view A --limit 60 --quiet \
      --json "results/smollm2/probe-41-v1-$name.json" --plot "results/smollm2/probe-41-v1-$name.png"
done
.venv/bin/python bench/readout.py --base smollm2-135m --adapter "$OUT/adapter-poisoned" --data "$OUT/data-poisoned" \
    --n 60 --json results/smollm2/bench-readout.json
.venv/bin/python bench/probe.py --base smollm2-135m --adapter "$OUT/adapter-poisoned" --data "$OUT/data-poisoned" \
    --battery paper-21 --limit 60 --paper-limit 5 --repeats 1 --json results/smollm2/bench-probe.json
