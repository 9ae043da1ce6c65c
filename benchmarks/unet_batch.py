"""What one sampling step of the shipped mini model costs per image, by the rows of one UNet call.

Times the UNet's forward alone (no gradients; the work of sampling and of the spectra) on fixed random inputs,
at several batch sizes, on 1 CPU thread, and, with ``--pairs``, in two processes at once (what ``unsee
compose-report``'s two workers do on 2 cores). With guidance a call has two rows per image. The sweep runs as the
CLI does (``SplitGEGLU`` gates, freed memory kept: ``unsee.machine.keep_freed_memory``); a second table times each
of the two against neither at 24 rows, in fresh processes, alternating. Writes
benchmarks/results/unet_batch.{json,md}. Run on idle cores: `.venv/bin/python benchmarks/unet_batch.py` (about 2
minutes).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from _report import write_report
from unsee.machine import describe, keep_freed_memory
from unsee.models import fingerprint, load_pipeline

RESULTS = Path(__file__).parent / "results"
ROWS = (8, 16, 24, 48, 96, 128, 192)
VARIANTS = {"neither": (False, False), "split gates": (True, False), "freed memory kept": (False, True),
            "both (the CLI)": (True, True)}  # fmt: skip
VARIANT_ROWS, VARIANT_ROUNDS = 24, 3


@torch.no_grad()
def ms_per_row(unet: torch.nn.Module, rows: int, *, repeats: int) -> float:
    """Median wall time of one forward over ``rows`` rows, per row, in ms."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(rows, unet.config.in_channels, unet.config.sample_size, unet.config.sample_size, generator=g)
    c = torch.randn(rows, 77, unet.config.cross_attention_dim, generator=g)
    t = torch.full((rows,), 500)
    unet(z, t, encoder_hidden_states=c)  # warm-up: allocator and kernels
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        unet(z, t, encoder_hidden_states=c)
        times.append(time.perf_counter() - t0)
    return 1000 * sorted(times)[len(times) // 2] / rows


def measure(rows: list[int], variant: str = "both (the CLI)") -> dict[str, float]:
    split, kept = VARIANTS[variant]
    if kept:
        keep_freed_memory()
    torch.set_num_threads(1)
    unet = load_pipeline("mini", split_ff=split).unet
    # about the same rows per size, so that each size is timed as long
    return {str(r): ms_per_row(unet, r, repeats=max(3, 384 // r)) for r in rows}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, nargs="+", default=list(ROWS))
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--variant", default="both (the CLI)", choices=list(VARIANTS), help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(RESULTS / "unet_batch"))
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(args.rows, args.variant)))
        return

    def child(variant: str, rows: list[int]) -> subprocess.Popen:
        cmd = [sys.executable, __file__, "--child", "--variant", variant, "--rows", *map(str, rows)]
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)

    def result(p: subprocess.Popen) -> dict[str, float]:
        return json.loads(p.communicate()[0].strip().splitlines()[-1])

    alone = result(child("both (the CLI)", args.rows))  # a fresh process: the allocator setting is the process's
    # Two processes at once, each on one thread: the report's two workers share the memory bus and the L3 cache.
    procs = [child("both (the CLI)", args.rows) for _ in range(2)]
    pair = [result(p) for p in procs]
    both = {r: (pair[0][r] + pair[1][r]) / 2 for r in alone}
    # Each speed-up against neither, one process at a time, the variants alternating (the machine's speed drifts).
    rounds: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in range(VARIANT_ROUNDS):
        for v in VARIANTS:
            rounds[v].append(result(child(v, [VARIANT_ROWS]))[str(VARIANT_ROWS)])
    variants = {v: sorted(ts)[len(ts) // 2] for v, ts in rounds.items()}
    best = min(alone, key=alone.get)
    m = describe()
    where = f"{m['cpu']} ({m['cpu_simd']}), {m['cpu_cores']} cores, torch {m['torch']}"
    report = {"model_fingerprint": fingerprint(load_pipeline("mini")), "machine": m, "threads": 1,
              "ms_per_row_alone": alone, "ms_per_row_two_processes": both, "fastest_rows": int(best),
              "variants_rows": VARIANT_ROWS, "variants_ms_per_row": variants, "variants_rounds": rounds}  # fmt: skip
    lines = [f"# Mini-model UNet forward, per row, by rows per call ({where}, 1 thread)", "",
             f"Model fingerprint `{report['model_fingerprint']}`. Forward only, no gradients, fixed random inputs; "
             "the median of repeated calls. With classifier-free guidance one image is two rows.", "",
             "| rows per call | ms / row, alone | vs the fastest | ms / row, two processes at once |",
             "|---|---|---|---|"]  # fmt: skip
    for r in alone:
        lines.append(f"| {r} | {alone[r]:.2f} | {alone[r] / alone[best]:.2f}x | {both[r]:.2f} |")
    lines += ["", "`unsee compose-report` draws 12 images (24 rows) per call and its spectra take 24 pairs per call "
              "(`interference_report(batch_size=12)`). The table above runs as the CLI does: the feed-forward gates "
              "as `unsee.models.SplitGEGLU` (`load_pipeline`'s default on a CPU) and freed memory kept "
              "(`unsee.machine.keep_freed_memory`, which the CLI calls).", "",
              f"Each of the two against neither, {VARIANT_ROWS} rows a call, one process at a time, the median of "
              f"{VARIANT_ROUNDS} fresh processes per variant, the variants alternating:", "",
              "| variant | ms / row | vs neither |", "|---|---|---|"]  # fmt: skip
    for v, ms in variants.items():
        lines.append(f"| {v} | {ms:.2f} | {ms / variants['neither']:.2f}x |")
    write_report(args.out, report, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
