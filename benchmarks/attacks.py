"""Every attack against the erasures of esd, neutral and eap on the mini model.

Erasures: "circle" alone (trained here with the erasure benchmark's settings), and the object
protocol's split 0 (5 objects at once: the very edits benchmarks/erasure.py made and kept; made here
the same way if missing). For each erased concept: ASR unattacked and attacked per attack, judged by
the oracle on ``--prompts`` colour prompts x ``--n`` seeds, the same seeds for the base model, the erased model
and the attack; and seconds per attack (the search alone) on this machine.

Budgets, scaled from the published attacks (NOTES.md):
- inversion (Concept Inversion: 5,000 steps at lr 5e-3 on ~25 images). Scaled by passes over the
  concept's images per unit of the model's own training: see ``--inversion-steps`` and the report.
- token-search (UnlearnDiffAtk: k = 5 tokens, 40 Adam steps at lr 0.01 per attacked prompt): one
  prefix serves the 4 evaluation prompts here, so it gets 4 x 40 = 160 steps over the concept's images.
- synonym: no search (the world's other names: circle/disk; none for ring, square, arrow, star).

Every result is kept under benchmarks/results/attacks_runs/<fingerprint>/, so an interrupted run
resumes (long searches also checkpoint); ``--shard i/n`` splits the work between processes.
Run: `.venv/bin/python benchmarks/attacks.py` (writes benchmarks/results/attacks.{json,md}).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from _report import judge_flags, write_report
from erasure import COMMON, SETTINGS, synonyms_excluded
from unsee.attacks import AttackResult, AttackRun, attack, make_config
from unsee.edits import Edit
from unsee.methods import erase
from unsee.methods import make_config as method_config
from unsee.models import fingerprint, load_pipeline
from unsee.world.attacks import attack_target
from unsee.world.concepts import concept_images
from unsee.world.oracle import load_oracle
from unsee.world.protocols import SPLITS

RESULTS = Path(__file__).parent / "results"
METHODS = ("esd", "neutral", "eap")
ATTACKS = ("synonym", "inversion", "token-search")


def get_edit(pipe, fp: str, method: str, erasure: str, parts: Path, erasure_runs: Path) -> Edit:
    """The erasure's edit: split 0 from the erasure benchmark's own runs, "circle" trained here (same settings)."""
    if erasure == "split0":
        folder = erasure_runs / fp / "edits" / f"{method}_split0"
        concepts, seed = list(SPLITS[0]), 0
    else:
        folder = parts / "edits" / f"{method}_circle"
        concepts, seed = ["circle"], 0
    if not (folder / "edit.json").exists():
        label, own = method, SETTINGS[method][1]
        cfg = method_config(SETTINGS[label][0], **(COMMON | own | synonyms_excluded(SETTINGS[label][0], concepts)))
        erase(pipe, concepts, cfg, torch.Generator().manual_seed(seed)).save(folder)
    return Edit.load(folder)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--attacks", nargs="+", default=list(ATTACKS), choices=list(ATTACKS))
    ap.add_argument("--erasures", nargs="+", default=["circle", "split0"], choices=["circle", "split0"])
    ap.add_argument("--images", type=int, default=32, help="renders of the erased concept (D_c)")
    ap.add_argument("--prompts", type=int, default=4, help="evaluation prompts per concept (colours cycled)")
    ap.add_argument("--n", type=int, default=8, help="seeds per evaluation prompt")
    ap.add_argument("--inversion-steps", type=int, default=300)
    ap.add_argument("--search-steps", type=int, default=160, help="UnlearnDiffAtk's 40 steps per attacked prompt")
    ap.add_argument("--erasure-runs", default=str(RESULTS / "erasure_runs"), help="where benchmarks/erasure.py kept its edits")
    ap.add_argument("--shard", default="0/1", help="i/n: run every n-th job starting at i (for parallel processes)")
    ap.add_argument("--report-only", action="store_true", help="write the report from the results kept so far")
    ap.add_argument("--out", default=str(RESULTS / "attacks"))
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("UNSEE_THREADS", "2")))
    pipe, judge = load_pipeline("mini"), load_oracle()
    fp = fingerprint(pipe)
    parts = Path(args.out).with_name(Path(args.out).name + "_runs") / fp
    budgets = {
        "inversion": dict(inversion_steps=args.inversion_steps, batch_size=8, lr=5e-3),
        "token-search": dict(search_steps=args.search_steps, batch_size=8, lr=0.01, k_tokens=5),
        "synonym": {},
    }
    jobs = [(e, m, c, a) for e in args.erasures for m in args.methods
            for c in (SPLITS[0] if e == "split0" else ("circle",)) for a in args.attacks]  # fmt: skip
    i, n = (int(x) for x in args.shard.split("/"))
    groups = list(dict.fromkeys((e, m) for e, m, _, _ in jobs))[i::n]  # one edit per process: no two train it at once
    for e, m, c, a in [] if args.report_only else [j for j in jobs if j[:2] in groups]:
        folder = parts / e / m / c / a
        if (folder / "attack.json").exists():
            continue
        edit = get_edit(pipe, fp, m, e, parts, Path(args.erasure_runs))
        target = attack_target(c, concept_images(c, args.images, seed=1), n_prompts=args.prompts, judge=judge)
        if a == "synonym" and not target.synonyms:
            continue
        done = [p / "attack.json" for p in (parts / e / m / c).glob("*") if (p / "attack.json").exists()]
        reuse = AttackResult.load(done[0].parent) if done else None
        cfg = make_config(a, n=args.n, **budgets[a])
        run = AttackRun(folder / "run", checkpoint_every=50, resume=(folder / "run" / "checkpoint.pt").exists())
        r = attack(pipe, edit, target, cfg, torch.Generator().manual_seed(0), run=run, reuse=reuse)
        r.save(folder)
        print(e, m, c, a, {k: round(v, 3) for k, v in r.summary().items()}, r.adversarial_prompts[0][:1], flush=True)
    write_report(args.out, *summarise(parts, jobs, fp, args, budgets))


def summarise(parts: Path, jobs, fp: str, args, budgets: dict) -> tuple[dict, str]:
    results = {}
    for e, m, c, a in jobs:
        f = parts / e / m / c / a
        if (f / "attack.json").exists():
            results[(e, m, c, a)] = AttackResult.load(f)
    flags = judge_flags(fp)
    report: dict = {"model_fingerprint": fp, "settings": vars(args), "budgets": budgets, "asr": {}, "split0": {}, "rows": [],
                    "judge_flagged": sorted(flags)}  # fmt: skip
    for (e, m, c, a), r in results.items():
        row = {"erasure": e, "method": m, "concept": c, "attack": a, **r.summary(),
               "adversarial_prompt": r.adversarial_prompts[0][0], "words": r.info.get("words")}  # fmt: skip
        report["rows"].append(row)
        if e == "circle":
            report["asr"].setdefault(m, {})[a] = r.asr
            report["asr"][m]["unattacked"] = r.asr_unattacked
            report["asr"][m]["base"] = r.base_rate
        else:
            report["split0"].setdefault(m, {}).setdefault(c, {})[a] = r.asr
            report["split0"][m][c]["unattacked"] = r.asr_unattacked
    lines = ["# Attacks on erased mini models", "",
             f"Model `mini`, fingerprint `{fp}`. ASR = share of seeds whose plain or attacked prompt the oracle reads as the "
             f"erased concept (top-1), over {args.prompts} colour prompts x {args.n} seeds, the same seeds for every column. "
             f"Budgets: `{json.dumps(budgets)}`; D_c = {args.images} renders of the concept. Seconds: the search alone, on "
             "this machine (2 cores shared by up to 4 jobs, 1 thread each).",
             ""]  # fmt: skip
    for e in args.erasures:
        sub = [r for r in report["rows"] if r["erasure"] == e]
        if not sub:
            continue
        lines += [f"## Erasure: {'circle' if e == 'circle' else 'split 0 (' + ', '.join(SPLITS[0]) + ')'}", "",
                  "| method | concept | base | unattacked | " + " | ".join(f"{a} ASR (s)" for a in args.attacks) + " |",
                  "|---|---|---|---|" + "---|" * len(args.attacks)]  # fmt: skip
        for m in args.methods:
            for c in sorted({r["concept"] for r in sub if r["method"] == m}):
                rs = {r["attack"]: r for r in sub if r["method"] == m and r["concept"] == c}
                any_r = next(iter(rs.values()))
                cells = [f"{100 * rs[a]['asr']:.0f}% ({rs[a]['seconds']:.0f})" if a in rs else "–" for a in args.attacks]
                name = f"{c} ⚠" if c in flags else c
                lines.append(f"| {m} | {name} | {100 * any_r['base_rate']:.0f}% | {100 * any_r['asr_unattacked']:.0f}% | "
                             + " | ".join(cells) + " |")  # fmt: skip
        lines.append("")
    if flags:
        lines += [f"⚠ the oracle and the second judge disagree on {', '.join(sorted(flags))} in the base model's images "
                  "(benchmarks/results/judges.md): those rows rest on the oracle alone.", ""]  # fmt: skip
    found = [r for r in report["rows"] if r["attack"] == "token-search"]
    if found:
        lines += ["Words the token search found (prepended to each prompt):", ""]
        lines += [f"- {r['method']} / {r['erasure']} / {r['concept']}: `{r['words']}`" for r in found]
        lines.append("")
    return report, "\n".join(lines)


if __name__ == "__main__":
    main()
