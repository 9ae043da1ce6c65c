"""Alpha concepts on the mini model (the talk's Idea 5): which objects and colours take over composed prompts.

For the 10 objects and the 8 colours, every pair composed in the world's templates (4 per group, both orders, the same
seeds), ``--n`` images per prompt, read by the oracle: the dominance matrix D[a, b] = P(a only) - P(b only), each
concept's alpha score (its mean dominance), and the Spearman correlation of four base-model predictors with alpha
(unsee.impact.alpha). Every prompt's images are kept per model fingerprint, so a stopped run resumes.
Writes benchmarks/results/alpha.{json,md,png} and alpha_grid_<group>.png.
Usage: python benchmarks/alpha.py [--n 2] [--quick]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from PIL import Image

from _report import write_report
from unsee.impact.alpha import AlphaConfig
from unsee.models import fingerprint, load_pipeline
from unsee.world import COLOUR_NAMES, OBJECTS
from unsee.world.alpha import world_dominance
from unsee.world.oracle import load_oracle

RESULTS = Path(__file__).parent / "results"
WHAT = {
    "guidance_norm": "‖eps(c) − eps('')‖, 4 draws",
    "attention_share": "cross-attention mass on c's tokens in the pair prompts",
    "token_embedding_norm": "norm of c's input token embedding",
    "text_feature_norm": "text encoder output norm at c's token",
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2, help="images per prompt")
    ap.add_argument("--quick", action="store_true", help="3 concepts per group, 1 image: checks the script")
    ap.add_argument("--out", default=str(RESULTS / "alpha"))
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("UNSEE_THREADS", "2")))
    pipe, oracle = load_pipeline("mini"), load_oracle()
    fp = fingerprint(pipe)
    out = Path(args.out)
    cache = out.with_name(out.name + "_runs") / fp
    concepts = [*OBJECTS, *COLOUR_NAMES] if not args.quick else [*OBJECTS[:3], *COLOUR_NAMES[:3]]
    n = 1 if args.quick else args.n
    t0 = time.perf_counter()
    res = world_dominance(pipe, oracle, concepts, AlphaConfig(n=n, seed=0), cache_dir=cache, progress=True)
    seconds = time.perf_counter() - t0
    report: dict = {"model": "mini", "model_fingerprint": fp, "n": n, "seconds": seconds, "groups": {}}
    md = [f"# Alpha concepts on the mini model ({'quick check' if args.quick else 'objects and colours'})", "",
          f"Model: `mini`, fingerprint `{fp}`. Every pair of a group composed in the world's 4 templates "
          f"(`unsee.world.alpha.TEMPLATES`), both orders with the same seeds, {n} images per prompt; a concept appears "
          f"when the oracle gives it at least 0.3 of its head's probability. D[a, b] = P(a appears, b not) - P(b "
          f"appears, a not), pooled over both orders; alpha = mean of D[a, .]. Measured in {seconds:.0f} s "
          f"(images cached per prompt).", ""]  # fmt: skip
    pics = []
    for group, (d, preds, rho) in res.items():
        report["groups"][group] = d.to_dict() | {"predictors": preds, "spearman": rho}
        pics.append(d.heatmap(out.with_name(f"alpha_{group}.png"), title=f"dominance of {group}s"))
        grid = d.grid(out.with_name(f"alpha_grid_{group}.png"))
        top = sorted(d.alpha.items(), key=lambda x: -x[1])
        md += [f"## {group.capitalize()}s", "",
               f"Both concepts appear in {100 * d.to_dict()['both_appear']:.1f}% of the images.", "",
               "| concept | alpha | " + " | ".join(preds) + " |", "|---|---|" + "---|" * len(preds)]  # fmt: skip
        for c, a in top:
            md.append(f"| {c} | {a:+.3f} | " + " | ".join(f"{preds[p][c]:.3f}" for p in preds) + " |")
        md += ["", "Spearman correlation with alpha (the predictors come from the base model alone):", "",
               "| predictor | what | Spearman |", "|---|---|---|"]  # fmt: skip
        md += [f"| {p} | {WHAT[p]} | {r:+.2f} |" for p, r in rho.items()]
        md += ["", "Strongest pairs (winner first): " + ", ".join(f"{a} over {b} ({v:+.2f})" for a, b, v in d.strongest()),
               "", f"![{group} dominance](alpha_{group}.png)", "", f"![{group} strongest pairs]({grid.name})", ""]  # fmt: skip
    # one picture holding both heat maps, side by side
    ims = [Image.open(p).convert("RGB") for p in pics]
    canvas = Image.new("RGB", (sum(i.width for i in ims), max(i.height for i in ims)), "white")
    x = 0
    for im in ims:
        canvas.paste(im, (x, 0))
        x += im.width
    canvas.save(out.with_suffix(".png"))
    write_report(out, report, "\n".join(md))


if __name__ == "__main__":
    main()
