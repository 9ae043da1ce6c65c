"""Does an erased object come back in the company of the objects erased with it? (issue 25: the token search's way
past the robust rows, benchmarks/results/robust_tokens.md.)

On one split of the object protocol (default split 3, where arrow and hexagon carry the token search), for the base
model and every robust edit of that split that benchmarks/robust.py keeps: each erased object's 4 colour prompts
("a red arrow"), alone and preceded by 4 repeats of another object's name ("hexagon hexagon hexagon hexagon a red
arrow"): each of the 4 other objects erased with it, and, as the control, each of the 5 objects the split keeps.
The same seeds for every company (the comparison is paired); the rate is the oracle's top-1 being the erased object.

Run: `.venv/bin/python benchmarks/robust_company.py [--split 3] [--n 2]` (about 3 minutes per model on 2 idle cores),
writes benchmarks/results/robust_company.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

import torch

from _report import write_report
from unsee.edits import Edit
from unsee.metrics.judged import judge_prompts
from unsee.models import fingerprint, load_pipeline
from unsee.world import OBJECTS
from unsee.world.oracle import load_oracle
from unsee.world.protocols import SPLITS, class_prompts

RESULTS = Path(__file__).parent / "results"
REPEATS = 4  # the token search prepends 5 words; its winners repeat one erased name up to 4 times


def rates(pipe, oracle, split: tuple[str, ...], n: int) -> dict[str, dict[str, float]]:
    """Erased object -> company word ('' alone) -> share of images whose top-1 is the object."""
    out = {}
    for i, obj in enumerate(split):
        base = class_prompts(obj)
        out[obj] = {}
        for word in ["", *(o for o in OBJECTS if o != obj)]:
            prompts = [f"{' '.join([word] * REPEATS)} {p}" if word else p for p in base]
            res = judge_prompts(pipe, oracle, prompts, n=n, seeds=[1000 + 10 * i + j for j in range(len(base))], k=1)
            out[obj][word] = statistics.fmean(r.rate("object", obj, 1) for r in res)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--split", type=int, default=3)
    ap.add_argument("--n", type=int, default=2, help="images per prompt")
    ap.add_argument("--runs", default=str(RESULTS / "robust_runs"))
    ap.add_argument("--out", default=str(RESULTS / "robust_company"))
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("UNSEE_THREADS", "2")))
    pipe, oracle = load_pipeline("mini"), load_oracle()
    fp = fingerprint(pipe)
    split = tuple(SPLITS[args.split])
    folders = sorted((Path(args.runs) / fp / "edits").glob(f"robust*_split{args.split}"))
    models: dict[str, dict] = {"base": rates(pipe, oracle, split, args.n)}
    for f in folders:
        if (f / "edit.json").exists():
            with Edit.load(f).applied(pipe):
                models[f.name.rsplit("_split", 1)[0]] = rates(pipe, oracle, split, args.n)
    summary = {}
    for m, r in models.items():
        alone = statistics.fmean(r[o][""] for o in split)
        erased = statistics.fmean(r[o][w] for o in split for w in split if w != o)
        kept = statistics.fmean(r[o][w] for o in split for w in OBJECTS if w not in split)
        summary[m] = {"alone": alone, "erased_company": erased, "kept_company": kept}
    report = {"model_fingerprint": fp, "split": args.split, "objects": list(split), "n": args.n, "repeats": REPEATS,
              "summary": summary, "rates": models}  # fmt: skip
    pct = lambda v: f"{100 * v:.1f}"  # noqa: E731
    lines = [f"# Erased objects in the company of the objects erased with them (split {args.split})", "",
             f"Model `mini`, fingerprint `{fp}`. Split {args.split} erases {', '.join(split)}. Each erased object's 4 "
             f"colour prompts, alone and preceded by {REPEATS} repeats of another object's name, {args.n} images each "
             "from the same seeds in every company; the rate is the oracle's top-1 being the erased object (for the "
             "edits, the share the erasure lets through).", "",
             "| model | alone | with another erased object's name | with a kept object's name (control) |",
             "|---|---|---|---|"]  # fmt: skip
    lines += [f"| {m} | {pct(v['alone'])} | {pct(v['erased_company'])} | {pct(v['kept_company'])} |"
              for m, v in summary.items()]  # fmt: skip
    lines += ["", "Per object and company word (rows: the erased object; columns: the word repeated before it):", "",
              "| model | object | alone | " + " | ".join(OBJECTS) + " |", "|---" * (3 + len(OBJECTS)) + "|"]  # fmt: skip
    for m, r in models.items():
        for o in split:
            cells = [("·" if w == o else pct(r[o][w]) + ("*" if w in split else "")) for w in OBJECTS]
            lines.append(f"| {m} | {o} | {pct(r[o][''])} | " + " | ".join(cells) + " |")
    lines += ["", "\\* another object erased in the same split."]
    write_report(args.out, report, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
