#!/usr/bin/env bash
# One short GPU check: a DDIM sampling step (CFG, batch 1) of an SD-1.4-shaped pipeline in fp32/fp16/bf16,
# through unsee's sampler. For the device tool: carry .whl (a diffusers wheel), e.g.
#   run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=300)
set -euo pipefail
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD/src
fi
export PYTHONUNBUFFERED=1
python3 - <<'PY'
import json, os, time, torch
from unsee.testing import sd14_shaped_pipeline
from unsee.sampling import sample
dev = "cuda"
print(torch.cuda.get_device_name(0))
res = {}
for dtype in (torch.float32, torch.float16, torch.bfloat16):
    pipe = sd14_shaped_pipeline(dtype=dtype).to(dev)
    g = lambda: torch.Generator(dev).manual_seed(0)
    sample(pipe, ["a red circle"], steps=2, guidance_scale=7.5, generator=g())  # warm-up
    torch.cuda.synchronize(); t = time.perf_counter()
    sample(pipe, ["a red circle"], steps=20, guidance_scale=7.5, generator=g(), return_latents=True)
    torch.cuda.synchronize(); dt = (time.perf_counter() - t) / 20
    res[str(dtype)] = {"seconds_per_step": dt, "peak_gib": torch.cuda.max_memory_allocated() / 2**30}
    print(dtype, f"{dt*1000:.1f} ms/step", f"{res[str(dtype)]['peak_gib']:.2f} GiB")
    del pipe; torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()
out = os.environ.get("OUT", ".")
json.dump(res, open(os.path.join(out, "gpu_check.json"), "w"), indent=2)
PY
