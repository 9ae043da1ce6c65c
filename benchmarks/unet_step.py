"""What one UNet training step of the mini model costs under each CPU execution choice.

Times forward + backward + AdamW of a freshly built mini UNet (the trainer's architecture, random
weights, fixed inputs) for: fp32 (the trainer), bf16 autocast (AMX/AVX-512-BF16 where the CPU has
them), channels_last, the math SDPA kernel, fewer and wider attention heads, and half the batch.
The data, VAE encoding and EMA (about 0.2 s per step of 64) are left out: they do not change.
Writes benchmarks/results/unet_step.{json,md}. Run: `.venv/bin/python benchmarks/unet_step.py` (about 2 minutes).
"""

from __future__ import annotations

import argparse
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from _report import write_report
from unsee.machine import describe
from unsee.world.mini import MiniConfig, build_components
from unsee.world.tokenizer import MAX_LENGTH

RESULTS = Path(__file__).parent / "results"


def time_step(cfg: MiniConfig, batch: int, *, bf16: bool = False, channels_last: bool = False, math_sdpa: bool = False,
              warmup: int = 2, repeats: int = 5) -> float:  # fmt: skip
    """Mean seconds of one fwd + bwd + AdamW step of ``cfg``'s UNet on ``batch`` latents."""
    unet = build_components(cfg)["unet"]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 4, 16, 16, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    cond = torch.randn(batch, MAX_LENGTH, cfg.text_width, generator=g)  # text states as the encoder gives them
    if channels_last:
        unet, x = unet.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = (unet(x, t, cond).sample.float() - x).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    with sdpa_kernel(SDPBackend.MATH) if math_sdpa else nullcontext():
        for _ in range(warmup):
            step()
        t0 = time.perf_counter()
        for _ in range(repeats):
            step()
    return (time.perf_counter() - t0) / repeats


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=str(RESULTS / "unet_step"))
    args = ap.parse_args()
    base = MiniConfig()
    variants = [
        ("fp32, batch 64 (the trainer)", base, 64, {}),
        ("bf16 autocast", base, 64, {"bf16": True}),
        ("channels_last", base, 64, {"channels_last": True}),
        ("math SDPA kernel", base, 64, {"math_sdpa": True}),
        ("4 heads (of 8)", replace(base, heads=4), 64, {}),
        ("2 heads (of 8)", replace(base, heads=2), 64, {}),
        ("batch 32", base, 32, {}),
        ("4 heads, batch 32", replace(base, heads=4), 32, {}),
    ]
    rows = []
    for name, cfg, batch, kw in variants:
        s = time_step(cfg, batch, repeats=args.repeats, **kw)
        rows.append({"variant": name, "heads": cfg.heads, "batch": batch, **kw, "seconds": s, "ms_per_image": 1000 * s / batch})
        print(f"{name}: {s:.3f} s", flush=True)
    ref = rows[0]["ms_per_image"]
    m = describe()
    md = [f"# One mini-UNet training step on {m['cpu']} ({m['cpu_simd']}), {m['cpu_cores']} cores, torch {m['torch']}", "",
          "Forward + backward + AdamW, fixed random inputs; data, VAE and EMA excluded.", "",
          "| variant | s / step | ms / image | vs the trainer, per image |", "|---|---|---|---|"]  # fmt: skip
    md += [f"| {r['variant']} | {r['seconds']:.3f} | {r['ms_per_image']:.1f} | {r['ms_per_image'] / ref:.2f}x |" for r in rows]
    write_report(args.out, {"machine": m, "rows": rows}, "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
