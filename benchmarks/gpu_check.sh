#!/usr/bin/env bash
# The one prepared GPU session (the device tool lends 15 minutes; this takes ~8.5):
#  1. real-scale timings on an SD-1.4-shaped pipeline (random weights of the true shapes): seconds per
#     update and peak memory of esd, eap and robust; a DDIM step (CFG, batch 1) in fp32 / fp16 / bf16;
#  2. benchmarks/robust.py's jobs: one worker process per CPU core on the GPU (under CUDA MPS when the
#     machine has it), each claiming jobs until none is left, cut at ROBUST_SECONDS (every job keeps what it
#     finished; the report is written from whatever is there).
# Run: run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=570)
# with .whl holding diffusers 0.42.1 and transformers 5.25.0 wheels (the machine has neither version).
set -uo pipefail
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD/src PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/machine.txt"
nproc >> "$OUT/machine.txt"

# Issue 28's table (ESD-x / EAP per update in fp16 and bf16, one spectrum projected to 49,408 words, images per
# second, peak memory): $OUT/gpu.{json,md}, copied to benchmarks/results/gpu.{json,md} once fetched.
[ -n "${SKIP_GPU_TABLE:-}" ] || timeout 200 python3 benchmarks/gpu.py --out "$OUT/gpu" 2>&1 | tee "$OUT/gpu.log"

[ -n "${SKIP_TIMINGS:-}" ] || timeout 170 python3 - <<'PY' 2>&1 | tee "$OUT/timings.log"
import json, os, time, torch
from unsee.methods import erase, make_config
from unsee.sampling import sample
from unsee.testing import sd14_shaped_pipeline
dev = "cuda"
print(torch.cuda.get_device_name(0), torch.__version__)
res = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
save = lambda: json.dump(res, open(os.path.join(os.environ["OUT"], "gpu_check.json"), "w"), indent=2)
pipe = sd14_shaped_pipeline().to(dev)  # built once (1.07B random parameters), cast per dtype below
# Erasure at real scale: seconds per update and peak memory of esd, eap and robust (fp32 masters, batch 4,
# 10-step partial DDIM), timed as the difference between 7 and 2 updates so that set-up cancels out.
images = [torch.rand(4, 3, 512, 512, generator=torch.Generator().manual_seed(0))]
common = dict(iterations=2, batch_size=4, ddim_steps=10, template="a {}")
for method, own in (("esd", {}), ("eap", {"n_centres": 20}), ("robust", {"n_centres": 20})):
    kw = {"images": images} if method == "robust" else {}
    secs = []
    try:
        for iters in (2, 7):
            torch.cuda.reset_peak_memory_stats(); torch.cuda.synchronize(); t = time.perf_counter()
            erase(pipe, ["circle"], make_config(method, **(common | own | {"iterations": iters})), torch.Generator().manual_seed(0), **kw)
            torch.cuda.synchronize(); secs.append(time.perf_counter() - t)
    except Exception as e:  # the rest of the lease still runs
        print(method, "FAILED", repr(e), flush=True)
        continue
    res[f"erase_{method}"] = {"seconds_per_update": (secs[1] - secs[0]) / 5, "peak_gib": torch.cuda.max_memory_allocated() / 2**30}
    print(method, f"{res[f'erase_{method}']['seconds_per_update']:.3f} s/update", f"{res[f'erase_{method}']['peak_gib']:.1f} GiB", flush=True)
    save()
# A DDIM sampling step (CFG, batch 1) through unsee's sampler in fp32 / fp16 / bf16.
for dtype in (torch.float32, torch.float16, torch.bfloat16):
    pipe.to(dtype=dtype); torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()
    g = lambda: torch.Generator(dev).manual_seed(0)
    sample(pipe, ["a red circle"], steps=2, guidance_scale=7.5, generator=g())  # warm-up
    torch.cuda.synchronize(); t = time.perf_counter()
    sample(pipe, ["a red circle"], steps=20, guidance_scale=7.5, generator=g(), return_latents=True)
    torch.cuda.synchronize(); dt = (time.perf_counter() - t) / 20
    res[str(dtype)] = {"seconds_per_step": dt, "peak_gib": torch.cuda.max_memory_allocated() / 2**30}
    print(dtype, f"{dt*1000:.1f} ms/step", f"{res[str(dtype)]['peak_gib']:.2f} GiB", flush=True)
    save()
PY

cd benchmarks
# Many small processes on one GPU: CUDA MPS lets their kernels run side by side instead of taking turns.
# A user-level daemon with private pipes, stopped at the end; without it (or if a client cannot reach it)
# the processes time-slice as before.
if [ -z "${NO_MPS:-}" ] && command -v nvidia-cuda-mps-control >/dev/null; then
  export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps_pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps_log
  mkdir -p /tmp/mps_pipe /tmp/mps_log
  if nvidia-cuda-mps-control -d && timeout 60 python3 -c "import torch; print(torch.ones(2, device='cuda').sum().item())"; then
    echo "MPS on" | tee -a "$OUT/machine.txt"
  else
    echo quit | nvidia-cuda-mps-control 2>/dev/null
    unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
    echo "MPS off" | tee -a "$OUT/machine.txt"
  fi
fi
workers=${WORKERS:-$(nproc)}
python3 robust.py --list-jobs ${ROBUST_ARGS:-} 2>/dev/null > "$OUT/jobs.txt"
echo "robust.py: $(wc -l < "$OUT/jobs.txt") jobs, $workers workers" | tee -a "$OUT/machine.txt"
mkdir -p /tmp/logs
for i in $(seq 1 "$workers"); do  # each worker claims jobs through lock files until none is left
  UNSEE_THREADS=1 OMP_NUM_THREADS=1 timeout "${ROBUST_SECONDS:-300}" python3 robust.py --device cuda ${ROBUST_ARGS:-} \
    > "/tmp/logs/worker$i.log" 2>&1 &
  sleep 1
done
wait
[ -n "${CUDA_MPS_PIPE_DIRECTORY:-}" ] && echo quit | nvidia-cuda-mps-control
python3 robust.py --report-only --device cuda ${ROBUST_ARGS:-} > /tmp/logs/report.log 2>&1
grep -h -v -i "torchvision\|warn" /tmp/logs/*.log > "$OUT/robust.log"
cp results/robust.json results/robust.md "$OUT/" 2>/dev/null
cp results/robust.png "$OUT/" 2>/dev/null
# What comes back is size-limited: the results (JSON) in one file, the attacks' learned embeddings in a second,
# the circle edits (cross-attention only, small) in a third; no split edits, no checkpoints.
cd results
tar czf "$OUT/runs_json.tgz" --exclude='*.safetensors' --exclude='checkpoint.pt' --exclude='locks' robust_runs
find robust_runs -name learned_embeds.safetensors | tar czf "$OUT/runs_learned.tgz" -T -
find robust_runs -path '*edits/*_circle/edit.safetensors' ! -path '*noxattn*' ! -path '*full*' | tar czf "$OUT/runs_edits.tgz" -T -
ls -la "$OUT"
