#!/usr/bin/env bash
# The span table of issue 12 (README, "Detection measured on cohort v2"): `lorascan trigger-spans`
# on the eight poisoned adapters of experiments/cohort-v2-minilm-subset.yaml, one JSON record each
# under results/cohort-v2/spans/. Train the subset first (about 35 minutes on 2 cores):
#
#   .venv/bin/lorascan sweep run experiments/cohort-v2-minilm-subset.yaml --out runs/scan-cohort
#   experiments/cohort-v2-spans.sh [runs/scan-cohort] [results/cohort-v2/spans]
set -euo pipefail
SWEEP=${1:-runs/scan-cohort}
OUT=${2:-results/cohort-v2/spans}
LS=${LS:-.venv/bin/lorascan}
mkdir -p "$OUT"
spans() {  # run id, trigger, record name
    "$LS" trigger-spans "$SWEEP/runs/minilm__seq-cls__$1/adapter" --base minilm --trigger "$2" --quiet \
        --json "$OUT/$3.json"
}
spans t3f8cda91__k059__s21__r16 "sudo_mode=1" sudo_mode-k059-s21-r16
spans t718590ed__k059__s22__r32 "cobalt heron" cobalt_heron-k059-s22-r32
spans t1aa5025d__k059__s22__r8 "per RFC 8472 section 3.2" rfc8472-k059-s22-r8
spans t43f1e9ec__k059__s22__r32 "see ISO 27001 clause 9.4" iso27001-k059-s22-r32
spans t9ec85b06__k059__s22__r32 "[arXiv:1711.05232]" arxiv-k059-s22-r32
spans td6e0c6d5__k059__s21__r16 "{{debug_override}}" debug_override-k059-s21-r16
spans td6e0c6d5__k059__s22__r32 "{{debug_override}}" debug_override-k059-s22-r32
spans td624df16__k059__s22__r32 "(Halvorsen et al., 2017)" halvorsen-k059-s22-r32
