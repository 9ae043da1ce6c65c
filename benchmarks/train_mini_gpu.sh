#!/usr/bin/env bash
# Train the mini model on a lent GPU (the device tool) with the same trainer as on CPU.
# Usage: bash benchmarks/train_mini_gpu.sh SECONDS [unsee world train flags...]; carry .whl (a diffusers wheel).
# The exported pipeline comes back in $OUT as pipeline.tgz split into 15 MB parts.
set -uo pipefail
secs=$1; shift
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
start=$(date +%s)
timeout "$secs" python3 -m unsee.cli world train --out /tmp/run --device cuda --workers 12 "$@" 2>&1 | tr '\r' '\n' | grep -E "it/s|s/it|rror" | awk 'NR%300==0 || /rror/'
echo "train_seconds=$(( $(date +%s) - start ))"
cp /tmp/run/train_log.json /tmp/run/config.json "$OUT"/ 2>/dev/null
tar -C /tmp/run -czf /tmp/pipeline.tgz pipeline && split -b 15M /tmp/pipeline.tgz "$OUT/pipeline.tgz.part-"
ls -la "$OUT"
