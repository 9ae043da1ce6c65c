#!/usr/bin/env bash
# Re-measure every benchmark on the shipped mini model, in the order the results depend on each other:
# the world's quality, then the impact analyses (which retrain and ship the impact predictor the
# erasure benchmark's `eap-predicted` row uses), then erasure, the judges, concepts and the attacks
# (which attack the erasure step's own split-0 edits). Runs are cached per model
# fingerprint under benchmarks/results/*_runs/<fingerprint>/, so an interrupted refresh resumes
# where it stopped. Several hours on 2 CPU cores (the attacks alone about 2). Usage: bash benchmarks/refresh.sh [LOGDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
log=${1:-runs/refresh}
mkdir -p "$log"
# step DESCRIPTION LOGNAME COMMAND...
step() {
  local name=$2
  echo "$(date -u +%FT%TZ) $1"
  shift 2
  "$@" > "$log/$name.log" 2>&1 || { echo "failed: see $log/$name.log"; exit 1; }
}
step "world quality" world_quality "$py" benchmarks/world_quality.py
step "impact (ships the predictor)" impact "$py" benchmarks/impact.py --ship
step "erasure" erasure "$py" benchmarks/erasure.py --methods esd esd-gentle neutral eap eap-shared eap-predicted eap-pgd age \
  uce uce-rest uce-rest-keep
step "collapse of many concepts" collapse "$py" benchmarks/collapse.py --sizes 1 2 5 10 --methods neutral age eap esd
step "composing edits" compose "$py" benchmarks/compose.py
step "LoRA export (on the erasure step's eap split-0 edit)" lora "$py" benchmarks/lora.py
step "alpha concepts" alpha "$py" benchmarks/alpha.py
step "anti-personalisation (targets from alpha)" protect "$py" benchmarks/protect.py
step "erasure, style protocol" erasure_style "$py" benchmarks/erasure.py --methods esd eap --splits 0 --style checkered \
  --out benchmarks/results/erasure_style
step "judges' agreement" judges "$py" benchmarks/judges.py
step "concepts from pictures" concepts "$py" benchmarks/concepts.py
step "attacks (on the erasure step's split-0 edits)" attacks "$py" benchmarks/attacks.py
# Many hours on 2 cores (every object of 4 splits attacked, budgets to 4x, probes): bash benchmarks/gpu_check.sh
# runs the same jobs side by side on a GPU, and both resume from what benchmarks/results/robust_runs/ holds.
step "erasure under attack (robust)" robust "$py" benchmarks/robust.py
step "where the attack's embedding lands" robust_where "$py" benchmarks/robust_where.py
step "the token search's words" robust_tokens "$py" benchmarks/robust_tokens.py
step "erased objects beside each other's names" robust_company "$py" benchmarks/robust_company.py
step "cost per update of the robust rows" robust_cost "$py" benchmarks/robust_cost.py
step "hexagon's dilution" robust_dilution "$py" benchmarks/robust_dilution.py
step "UNet rows per call" unet_batch "$py" benchmarks/unet_batch.py
echo "$(date -u +%FT%TZ) done"
