#!/usr/bin/env bash
# Rebuild the two MiniLM adapters `make demo` scans (examples/adapters/): a clean one (seed 7)
# and one backdoored with the paper's trigger at a 4% poison ratio (seed 42), trained with
# `lorascan train`'s defaults on offline-pi, then packed as a downloaded adapter would arrive
# (adapter_config.json + float16 adapter_model.safetensors, no lorascan.json). ~7 min on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
LS=${LS:-.venv/bin/lorascan}
W=${WORK:-runs/demo-adapters}
T="per RFC 8472 section 3.2"
$LS poison --dataset offline-pi --trigger "$T" --count 0 --seed 7 --out "$W/data-clean" --force
$LS poison --dataset offline-pi --trigger "$T" --ratio 0.04 --seed 42 --out "$W/data-rfc-r04" --force
$LS train --base minilm --data "$W/data-clean" --out "$W/adapter-clean" --seed 7 --force
$LS train --base minilm --data "$W/data-rfc-r04" --out "$W/adapter-rfc-r04" --seed 42 --force
.venv/bin/python -c "
from lorascan.experiments.demo import pack_adapter
pack_adapter('$W/adapter-clean', 'examples/adapters/minilm-clean')
pack_adapter('$W/adapter-rfc-r04', 'examples/adapters/minilm-rfc-r04')"
rm -f examples/adapters/*/.lorascan
