#!/usr/bin/env bash
# Train the mini model on a lent GPU (the device tool), with the same command and config as on CPU.
# Carry .whl (a diffusers wheel); results come back in $OUT.
set -euo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
start=$(date +%s)
timeout 480 python3 -m unsee.cli world train --out /tmp/run --device cuda --workers 12 "$@" 2>&1 | tr '\r' '\n' | grep -E "it/s|s/it" | awk 'NR%200==0' || true
echo "train_seconds=$(( $(date +%s) - start ))"
cp /tmp/run/train_log.json /tmp/run/config.json "$OUT"/
tar -C /tmp/run -czf "$OUT/pipeline.tgz" pipeline
ls -la "$OUT"
