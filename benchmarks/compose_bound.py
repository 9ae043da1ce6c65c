"""How fast the 10-edit compose report can be on this machine: its UNet work against the UNet's throughput.

The report (``unsee compose-report`` on the ten edits of ``benchmarks/compose.py``, its default settings) is
counted, not estimated: it runs with a hook that counts the rows of every UNet call, at 1 and at 2 sampling steps,
so that the rows per sampling step and the rows that do not depend on the steps (the spectra, the draws) separate,
and the count at the model's own steps follows. The FLOPs of one UNet row come from ``torch.utils.flop_counter``,
and the UNet's speed from timed forwards at the report's 24 rows a call on one thread (the report's two workers
each run one). Lower bound = rows x seconds per row / 2 cores, the time the UNet alone needs were both cores busy
throughout; the process start (imports, loading) is timed apart. Cold: an empty cache; warm: the base model's
images and spectrum outputs cached; cold_base_esr: an empty cache, with ``--base-esr`` (the base model's images of
the erased prompts too).

Writes benchmarks/results/compose_bound.{json,md}. Run on idle cores: ``.venv/bin/python
benchmarks/compose_bound.py`` (about 3 minutes).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from _report import write_report
from compose import RESULTS, SINGLES, timing_edits
from unsee.concepts.prompts import DEFAULT_NEUTRAL
from unsee.edits import Edit
from unsee.impact.interference import interference_report
from unsee.impact.spectrum import concept_vocabulary, make_draws
from unsee.machine import describe, keep_freed_memory
from unsee.models import fingerprint, load_pipeline, sampling_defaults
from unsee.world.captions import JUDGE_LABELS
from unsee.world.oracle import load_oracle
from unsee.world.prompts import composition_prompts

REPORT = dict(n=2, prompts=4, preserved=8, draws=4, seed=0, batch_size=12)  # `unsee compose-report`'s defaults
CALL_ROWS = 2 * REPORT["batch_size"]  # rows of one UNet call: the images' (with guidance) and the spectra's


def count_rows(pipe, edits: list[Edit], judge, steps: int, tmp: Path) -> dict:
    """UNet rows of one report at ``steps`` sampling steps: with an empty cache (``cold``), again on the cache it
    filled (``warm``), and with an empty cache and ``--base-esr`` (``cold_base_esr``)."""
    erased = list(dict.fromkeys(JUDGE_LABELS.get(c, c) for e in edits for c in e.concepts))
    prompts = composition_prompts(erased, n_prompts=REPORT["prompts"], n_preserved=REPORT["preserved"])
    vocab = concept_vocabulary(pipe, neutral=DEFAULT_NEUTRAL, cache_dir=tmp / "vocab")
    rows = 0

    def hook(module, args, kwargs):
        nonlocal rows
        rows += (args[0] if args else kwargs["sample"]).shape[0]

    handle = pipe.unet.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        draws = make_draws(pipe, REPORT["draws"], seed=REPORT["seed"])
        got = {"draws": rows}
        for name, cache, base_esr in (("cold", "a", False), ("warm", "a", False), ("cold_base_esr", "b", True)):
            rows = 0
            interference_report(pipe, edits, judge, prompts, labels=JUDGE_LABELS, vocab=vocab, draws=draws, n=REPORT["n"],
                                seed=REPORT["seed"], steps=steps, cache_dir=tmp / f"cache-{steps}-{cache}", workers=1,
                                batch_size=REPORT["batch_size"], base_esr=base_esr)  # fmt: skip
            got[name] = got["draws"] + rows
    finally:
        handle.remove()
    return got


@torch.no_grad()
def unet_speed(pipe, repeats: int) -> dict:
    """FLOPs of one UNet row and the seconds one row takes at ``CALL_ROWS`` rows a call on one thread."""
    unet = pipe.unet
    g = torch.Generator().manual_seed(0)
    ctx_len = pipe.tokenizer.model_max_length
    z = torch.randn(CALL_ROWS, unet.config.in_channels, unet.config.sample_size, unet.config.sample_size, generator=g)
    c = torch.randn(CALL_ROWS, ctx_len, unet.config.cross_attention_dim, generator=g)
    t = torch.full((CALL_ROWS,), 500)
    with FlopCounterMode(display=False) as fc:
        unet(z, t, c)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(2):
            unet(z, t, c)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            unet(z, t, c)
            times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    best, median = min(times), sorted(times)[len(times) // 2]
    flops = fc.get_total_flops() / CALL_ROWS
    return {"gflop_per_row": flops / 1e9, "ms_per_row_best": 1e3 * best / CALL_ROWS,
            "ms_per_row_median": 1e3 * median / CALL_ROWS, "gflops_per_core": flops * CALL_ROWS / median / 1e9,
            "by_op_gflop": {str(k): v / CALL_ROWS / 1e9 for k, v in fc.get_flop_counts()["Global"].items()}}  # fmt: skip


def start_seconds() -> float:
    """A fresh process's imports and loading of what the report needs (the pipeline, the oracle), as the CLI does."""
    code = ("import time; t=time.perf_counter(); import unsee.cli; from unsee.models import load_pipeline; "
            "from unsee.world.oracle import load_oracle; from unsee.impact.interference import interference_report; "
            "load_pipeline('mini'); load_oracle(); print(time.perf_counter()-t)")  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=15, help="timed UNet forwards (the median is used)")
    ap.add_argument("--out", default=str(RESULTS / "compose_bound"))
    args = ap.parse_args()
    keep_freed_memory()  # as the CLI runs
    pipe = load_pipeline("mini")
    fp = fingerprint(pipe)
    judge = load_oracle()
    steps = sampling_defaults("mini").steps
    edits = [Edit.load(f) for f in timing_edits(pipe, fp, RESULTS / "compose", short=True)]
    with tempfile.TemporaryDirectory() as tmp:
        one, two = (count_rows(pipe, edits, judge, s, Path(tmp)) for s in (1, 2))
    kinds = ("cold", "warm", "cold_base_esr")
    per_step = {k: two[k] - one[k] for k in kinds}
    fixed = {k: one[k] - per_step[k] for k in kinds}
    rows = {k: fixed[k] + steps * per_step[k] for k in kinds}
    guided = sampling_defaults("mini").guidance_scale > 1
    images = {k: per_step[k] // (2 if guided else 1) for k in per_step}  # each image: a row a step, two with guidance
    speed = unet_speed(pipe, args.repeats)
    start = start_seconds()
    cores = 2
    bound = {k: rows[k] * speed["ms_per_row_median"] / 1e3 / cores for k in rows}
    report = {"model_fingerprint": fp, "machine": describe(), "edits": len(edits), "concepts": list(SINGLES),
              "report_settings": REPORT, "steps": steps, "images": images, "rows_per_step": per_step,
              "rows_fixed": fixed, "rows": rows, "unet": speed, "start_seconds": start, "cores": cores,
              "unet_seconds_bound": bound, "total_bound": {k: v + start for k, v in bound.items()}}  # fmt: skip
    m = report["machine"]
    md = "\n".join([
        "# How fast the 10-edit compose report can be on this machine", "",
        f"Model `mini`, fingerprint `{fp}`; {m.get('cpu')}, {m.get('cpu_cores')} cores, torch {m.get('torch')}. "
        "The report of `unsee compose-report` on the 10 edits "
        f"of `benchmarks/compose.py` ({', '.join(SINGLES)}), its default settings `{REPORT}`, {steps} sampling steps "
        "with guidance. UNet rows counted by a hook on the report itself (at 1 and 2 steps, extrapolated to "
        f"{steps}); FLOPs by torch's flop counter; speed: the median of {args.repeats} forwards of {CALL_ROWS} rows "
        "on 1 thread. Lower bound: rows x s / row / 2 cores, plus the process start. Cold: an empty cache; warm: the "
        "base model's images and spectrum outputs cached; cold_base_esr: an empty cache and `--base-esr`.", "",
        "| report | images | UNet rows | TFLOP | UNet s on 2 cores (bound) | + start | bound |", "|---" * 7 + "|",
        *[f"| {k} | {images[k]} | {rows[k]:,} | {rows[k] * speed['gflop_per_row'] / 1e3:.1f} "
          f"| {bound[k]:.0f} s | {start:.1f} s | **{bound[k] + start:.0f} s** |" for k in rows],
        "", f"One UNet row: {speed['gflop_per_row']:.3f} GFLOP (convolutions "
        f"{speed['by_op_gflop'].get('aten.convolution', 0):.3f}), {speed['ms_per_row_median']:.2f} ms on one thread "
        f"(best {speed['ms_per_row_best']:.2f}): {speed['gflops_per_core']:.0f} GFLOP/s per core.", ""])  # fmt: skip
    write_report(args.out, report, md + "\n")


if __name__ == "__main__":
    main()
