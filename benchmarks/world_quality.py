"""Quality of the world's oracle and of the mini model, as judged by the oracle.

Writes benchmarks/results/world_quality.{json,md}. Run: `.venv/bin/python benchmarks/world_quality.py`
(about 3 minutes on 2 cores). `--model` evaluates another pipeline folder (e.g. a training run's export);
`--sections`, `--steps`, `--guidance` and `--scheduler KEY=VALUE` make quick or sampler-side checks.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMScheduler

from _report import write_report
from unsee.cli import parse_key_values
from unsee.metrics.judged import judge_prompts
from unsee.models import SamplingDefaults, fingerprint, load_pipeline, resolve, sampling_defaults
from unsee.sampling import encode_text
from unsee.world import BACKGROUNDS, FAMILIES, OBJECTS
from unsee.world.oracle import evaluate_oracle, load_oracle
from unsee.world.prompts import background_set, family_set, object_colour_set, synonym_set, two_object_set

RESULTS = Path(__file__).parent / "results"


def _judge(pipe, oracle, expected, n, seed, d):
    return judge_prompts(pipe, oracle, [e.prompt for e in expected], n=n, seed=seed, steps=d.steps,
                         guidance_scale=d.guidance_scale, k=3, progress=True)  # fmt: skip


@torch.no_grad()
def background_text_distance(pipe) -> dict[str, float]:
    """L2 between the text encoder's full-sequence outputs for "a red circle on a {b} background",
    per pair of backgrounds, over the largest pair: how far apart the model's text keeps the styles."""
    bgs = list(BACKGROUNDS)
    e = encode_text(pipe.tokenizer, pipe.text_encoder, [f"a red circle on a {b} background" for b in bgs]).flatten(1)
    d = torch.cdist(e, e)
    d = d / d.max()
    return {f"{a}-{b}": float(d[i, j]) for i, a in enumerate(bgs) for j, b in enumerate(bgs) if i < j}


def _mean(xs):
    return float(np.mean(xs)) if xs else float("nan")


SECTIONS = ("oracle", "objects", "backgrounds", "synonyms", "families", "two_objects")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="mini")
    ap.add_argument("--n", type=int, default=8, help="images per prompt in the object-colour set")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="measure only these")
    ap.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the model's sampling defaults)")
    ap.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the model's)")
    ap.add_argument("--scheduler", nargs="*", default=[], metavar="KEY=VALUE",
                    help="override the DDIM scheduler's config, e.g. timestep_spacing=trailing steps_offset=60")  # fmt: skip
    ap.add_argument("--out", default=str(RESULTS / "world_quality"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    on = set(args.sections)
    oracle = load_oracle()
    report: dict = {"model": args.model, "sections": [s for s in SECTIONS if s in on]}
    if "oracle" in on:
        report["oracle_heldout_top1"] = evaluate_oracle(oracle, n=4000, seed=1)
        report["oracle_heldout_two_object_top2"] = evaluate_oracle(oracle, n=1000, seed=1, two_objects=True)
    pipe = load_pipeline(args.model)
    report["model_fingerprint"] = fingerprint(pipe)
    d = sampling_defaults(args.model)
    d = SamplingDefaults(args.steps or d.steps, d.guidance_scale if args.guidance is None else args.guidance)
    report["sampling"] = {"steps": d.steps, "guidance_scale": d.guidance_scale, "images_per_prompt": args.n}
    if args.scheduler:
        report["sampling"]["scheduler"] = over = parse_key_values(args.scheduler, "--scheduler")
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, **over)

    if "objects" in on:
        oc = object_colour_set()
        res = _judge(pipe, oracle, oc, args.n, args.seed, d)
        per_obj, per_col = defaultdict(list), defaultdict(list)
        for e, r in zip(oc, res):
            per_obj[e.obj].append(r.rate("object", e.obj))
            per_col[e.colour].append(r.rate("colour", e.colour))
        report["object_top1"] = {o: _mean(v) for o, v in per_obj.items()}
        report["colour_top1"] = {c: _mean(v) for c, v in per_col.items()}
        report["object_top1_mean"] = _mean(list(report["object_top1"].values()))
        report["object_top1_min"] = min(report["object_top1"].values())
        report["colour_top1_mean"] = _mean(list(report["colour_top1"].values()))
        report["frame_rate"] = _mean([r.rate("frame", "frame") for r in res])

    if "backgrounds" in on:
        bg = background_set()
        res = _judge(pipe, oracle, bg, 4, args.seed + 1000, d)
        per_bg = defaultdict(list)
        for e, r in zip(bg, res):
            per_bg[e.background].append(r.rate("background", e.background))
        report["background_top1"] = {b: _mean(v) for b, v in per_bg.items()}
        report["background_top1_mean"] = _mean(list(report["background_top1"].values()))
        report["background_text_distance"] = background_text_distance(pipe)
        report["background_set_object_top1"] = _mean([r.rate("object", e.obj) for e, r in zip(bg, res)])

    if "synonyms" in on:
        syn = synonym_set()
        res = _judge(pipe, oracle, syn, 4, args.seed + 2000, d)
        report["synonyms"] = {}
        for e, r in zip(syn, res):
            key = e.prompt.split(" on ")[-1] if e.background else e.prompt.split()[-1]
            head, lab = ("background", e.background) if e.background else ("object", e.obj)
            report["synonyms"].setdefault(key, []).append(r.rate(head, lab))
        report["synonyms"] = {k: _mean(v) for k, v in report["synonyms"].items()}

    if "families" in on:
        fam = family_set()
        res = _judge(pipe, oracle, fam, 4, args.seed + 3000, d)
        report["family_in_family_top1"] = {}
        for e, r in zip(fam, res):
            hits = [row[0] in FAMILIES[e.family] for row in r.topk["object"]]
            report["family_in_family_top1"].setdefault(e.family, []).append(_mean(hits))
        report["family_in_family_top1"] = {k: _mean(v) for k, v in report["family_in_family_top1"].items()}
        report["family_chance"] = {f: len(o) / len(OBJECTS) for f, o in FAMILIES.items()}

    if "two_objects" in on:
        two = two_object_set()
        res = _judge(pipe, oracle, two, 4, args.seed + 4000, d)
        report["two_object_both_in_top2"] = _mean([_mean([{e.obj, e.second} <= set(row[:2]) for row in r.topk["object"]])
                                                   for e, r in zip(two, res)])  # fmt: skip
        report["two_object_first_in_top2"] = _mean([r.rate("object", e.obj, k=2) for e, r in zip(two, res)])
    info = Path(resolve(args.model)) / "unsee.json"
    if info.exists():
        report["training"] = json.loads(info.read_text()).get("training")
    report["benchmark_seconds"] = time.perf_counter() - t0

    write_report(args.out, report, to_markdown(report))


def to_markdown(r: dict) -> str:
    pct = lambda x: f"{100 * x:.1f}%"  # noqa: E731
    has = lambda *keys: all(k in r for k in keys)  # noqa: E731 (a report may hold only some sections)
    sched = f", scheduler {json.dumps(r['sampling']['scheduler'])}" if r["sampling"].get("scheduler") else ""
    lines = [f"# World quality: `{r['model']}` (fingerprint `{r.get('model_fingerprint', '?')}`)", "",
             f"Sampling: {r['sampling']['steps']} DDIM steps, guidance {r['sampling']['guidance_scale']}{sched}, "
             f"{r['sampling']['images_per_prompt']} images per prompt, fixed seeds.", "",
             "| measure | value | goal |", "|---|---|---|"]  # fmt: skip
    if has("oracle_heldout_top1"):
        two = r["oracle_heldout_two_object_top2"]["object"]
        lines += [*[f"| oracle held-out top-1, {h} | {pct(v)} | ≥ 98% |" for h, v in r["oracle_heldout_top1"].items()],
                  f"| oracle two-object scenes, both objects in top-2 | {pct(two)} | |"]  # fmt: skip
    if has("object_top1"):
        lines += [f"| mini: object top-1, mean over objects | {pct(r['object_top1_mean'])} | ≥ 90% |",
                  f"| mini: object top-1, worst object | {pct(r['object_top1_min'])} | ≥ 75% |",
                  f"| mini: colour top-1 | {pct(r['colour_top1_mean'])} | ≥ 95% |"]  # fmt: skip
    if has("background_top1"):
        lines += [f"| mini: background top-1 when asked | {pct(r['background_top1_mean'])} | ≥ 90% |",
                  f"| mini: object top-1 when a background is asked | {pct(r['background_set_object_top1'])} | |"]  # fmt: skip
    if has("two_object_both_in_top2"):
        lines.append(f"| mini: two-object prompts, both objects in top-2 | {pct(r['two_object_both_in_top2'])} | |")
    if has("frame_rate"):
        lines.append(f"| mini: frames drawn (never prompted; 15% of training images) | {pct(r['frame_rate'])} | |")
    if has("object_top1"):
        lines += ["", "Per object: " + ", ".join(f"{k} {pct(v)}" for k, v in r["object_top1"].items()),
                  "", "Per colour: " + ", ".join(f"{k} {pct(v)}" for k, v in r["colour_top1"].items())]  # fmt: skip
    if has("background_top1"):
        lines += ["", "Per background: " + ", ".join(f"{k} {pct(v)}" for k, v in r["background_top1"].items()),
                  "", "Text-encoder distance between background prompts (over the largest pair): "
                  + ", ".join(f"{k} {v:.2f}" for k, v in r.get("background_text_distance", {}).items())]  # fmt: skip
    if has("synonyms"):
        lines += ["", "Synonyms (object or style top-1): " + ", ".join(f"{k} {pct(v)}" for k, v in r["synonyms"].items())]
    if has("family_in_family_top1"):
        fam = r["family_in_family_top1"]
        lines += ["", "Family-word prompts, top-1 object in the family: "
                  + ", ".join(f"{k} {pct(v)} (chance {pct(r['family_chance'][k])})" for k, v in fam.items())]  # fmt: skip
    lines.append("")
    if r.get("training"):
        lines += ["Training: " + json.dumps(r["training"]), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
