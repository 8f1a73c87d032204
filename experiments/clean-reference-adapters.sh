#!/usr/bin/env bash
# Rebuild the clean reference adapters the phrase search ships for MiniLM seq-cls
# (src/lorascan/detect/references/adapters/minilm/seq-cls/, lorascan.detect.clean_reference):
# two of the token reference's clean adapters, seeds 44 (rank 16) and 45 (rank 8) of
# experiments/token-reference-minilm.yaml (the cohort's training settings; no evaluation cohort
# uses these seeds: cohort v2's subsample grid trains seeds 41-43, on 80% of the data), packed as
# a downloaded adapter arrives (adapter_config.json + float16 adapter_model.safetensors).
# ~20 min on 2 cores if the sweep has not run yet (it trains all seven).
set -euo pipefail
cd "$(dirname "$0")/.."
LS=${LS:-.venv/bin/lorascan}
W=${WORK:-runs/scan-cohort}
OUT=src/lorascan/detect/references/adapters/minilm/seq-cls
$LS sweep run experiments/token-reference-minilm.yaml --out "$W" --workers 2 --quiet
rm -rf "$OUT" && mkdir -p "$OUT"
for run in s44__r16 s45__r8; do
  name="clean-${run/__/-}"
  .venv/bin/python -c "
from lorascan.experiments.demo import pack_adapter
pack_adapter('$W/runs/minilm__seq-cls__t1aa5025d__k000__$run/adapter', '$OUT/$name')"
  rm -f "$OUT/$name/.lorascan"
done
ls -la "$OUT"/*
