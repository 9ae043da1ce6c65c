"""Do the world's two judges agree on what the mini model draws? Per object class, on generated images.

The oracle and the second judge (trained independently: another architecture, other seeds, augmentations
aimed at generated images) read the same images: 8 prompts per class ("a {colour} {object}"), ``--n``
images each, at the model's own sampling defaults (the object protocol's sampling). A class whose
judges agree (object top-1) on fewer than 80% of its images is flagged: its oracle figures are not to be
trusted as they stand. Also each judge's held-out top-1 on renders.

Writes benchmarks/results/judges.{json,md}. Run: `.venv/bin/python benchmarks/judges.py` (a few minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from _report import write_report
from unsee.metrics.judged import AGREEMENT_FLOOR, FLAG, mark
from unsee.models import fingerprint, load_pipeline, sampling_defaults
from unsee.world import COLOUR_NAMES, OBJECTS
from unsee.world.judge2 import evaluate_judge2, load_judge2
from unsee.world.oracle import evaluate_oracle, load_oracle
from unsee.world.protocols import Sampling, class_rates, flagged_classes, judge_objects

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mini")
    ap.add_argument("--n", type=int, default=4, help="images per prompt (8 prompts per class)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(RESULTS / "judges"))
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    pipe, oracle, judge2 = load_pipeline(args.model), load_oracle(), load_judge2()
    d = sampling_defaults(args.model)
    s = Sampling(n=args.n, seed=args.seed, steps=d.steps, guidance_scale=d.guidance_scale)
    results = judge_objects(pipe, oracle, OBJECTS, s, progress=True, check=judge2)
    rates = class_rates(results)
    per_class = {}
    for obj, res in results.items():
        second = [row[0] for r in res for row in r.check["object"]]
        first = [row[0] for r in res for row in r.topk["object"]]
        per_class[obj] = {
            "images": len(first),
            "oracle_top1": rates[obj]["top1"],
            "judge2_top1": float(np.mean([x == obj for x in second])),
            "agreement": rates[obj]["agreement"],
            "colour_agreement": float(np.mean([a[0] == b[0] for r in res for a, b in zip(r.topk["colour"], r.check["colour"])])),
            "judge2_colour_top1": float(np.mean([row[0] == c for c, r in zip(COLOUR_NAMES, res) for row in r.check["colour"]])),
            "oracle_reads": dict(Counter(first).most_common()),
            "judge2_reads": dict(Counter(second).most_common()),
        }
    flags = flagged_classes(rates)
    report = {
        "model": args.model,
        "model_fingerprint": fingerprint(pipe),
        "sampling": vars(s),
        "agreement_floor": AGREEMENT_FLOOR,
        "flagged": flags,
        "per_class": per_class,
        "mean_agreement": float(np.mean([v["agreement"] for v in per_class.values()])),
        "oracle_heldout_top1": evaluate_oracle(oracle, n=2000, seed=1),
        "judge2_heldout_top1": evaluate_judge2(judge2, n=2000, seed=1),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    pct = lambda v: f"{100 * v:.1f}%"  # noqa: E731
    reads = lambda c: ", ".join(f"{k} {v}" for k, v in c.items())  # noqa: E731
    lines = [
        f"# Do the two judges agree? `{args.model}` ({report['model_fingerprint']})",
        "",
        f"{args.n} images × 8 prompts per class at the model's sampling ({s.steps} DDIM steps, guidance "
        f"{s.guidance_scale}); agreement = both judges' object top-1 are the same. {FLAG} = agreement below "
        f"{AGREEMENT_FLOOR:.0%}: the oracle's figures for that class are not to be trusted as they stand.",
        "",
        "| class | oracle top-1 | judge2 top-1 | agreement | colour agreement | oracle reads | judge2 reads |",
        "|---|---|---|---|---|---|---|",
        *[
            f"| {mark(c, flags)} | {pct(v['oracle_top1'])} | {pct(v['judge2_top1'])} | {pct(v['agreement'])} | "
            f"{pct(v['colour_agreement'])} | {reads(v['oracle_reads'])} | {reads(v['judge2_reads'])} |"
            for c, v in per_class.items()
        ],  # fmt: skip
        "",
        f"Mean agreement {pct(report['mean_agreement'])}; flagged: {', '.join(flags) or 'none'}.",
        "",
        "Held-out top-1 on renders (2,000 single-object scenes): "
        + "; ".join(
            f"{name} " + ", ".join(f"{h} {pct(v)}" for h, v in report[key].items())
            for name, key in (("oracle", "oracle_heldout_top1"), ("judge2", "judge2_heldout_top1"))
        )  # fmt: skip
        + ".",
        "",
        f"{report['seconds']:.0f} s. Run: `.venv/bin/python benchmarks/judges.py`.",
        "",
    ]
    write_report(args.out, report, "\n".join(lines))


if __name__ == "__main__":
    main()
