"""Anti-personalisation on the mini model (issue 27): protect an identity's images so personalisation learns another.

The identity is a world object learned from 32 renders (default ``star``: the hidden frame is not learnable by
textual inversion on this model, 18.8% with the token against 13.8% without, benchmarks/results/concepts.md, so a
protection could not cut it by 50 points). Protections at the same budget (l_inf 8/255, 100 PGD steps): none,
uniform noise, untargeted (ascend the denoising loss), targeted at a low-alpha object and targeted at the top-alpha
object (alpha from benchmarks/results/alpha.json). Then two personalisations on each image set:

- textual inversion of ``<id>`` (1 vector, 400 steps, lr 0.005, batch 8: benchmarks/concepts.py's object settings),
  judged on "a {colour} <id>" for the 8 colours;
- a DreamBooth-style fine-tune of all cross-attention weights on "{caption} sks" (200 steps, lr 1e-3; the keys and
  values alone, Custom Diffusion's choice, learned the star in 6 of 16 images at these settings, all of
  cross-attention in 10), judged on "a {colour} sks";

each image captioned with what else it shows ("a red <id>"), as benchmarks/concepts.py trains its tokens;

8 seeds per prompt (64 images per personalisation; at 16 a row moved in steps of 6.25 points, and the unprotected
identity read 62.5% there against 76.6% at 64). Identity success: the share the oracle reads as the identity
(top-1 object); target success: as the protection's target. Purifications an attacker tries first (a blur, a 2x
downscale and upscale) are applied to the protected images before personalisation, for "none" and the top-alpha
protection with and without the surrogate. "+ surrogate" rows: the same protections with a textual inversion of the
images in the loop (``ProtectConfig.surrogate_steps``, SURROGATE steps per PGD step; Anti-DreamBooth's ASPL).
Every condition is cached per model fingerprint. Writes benchmarks/results/protect.{json,md} and
protect_grid.png.
Usage: python benchmarks/protect.py [--identity star] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from _report import write_report
from unsee.concepts.finetune import FinetuneConfig, finetune
from unsee.concepts.inversion import InversionConfig, invert
from unsee.images import image_grid
from unsee.judges import topk
from unsee.metrics.judged import prompt_images
from unsee.models import fingerprint, load_pipeline
from unsee.protect import PURIFICATIONS, ProtectConfig, protect
from unsee.world import COLOUR_NAMES
from unsee.world.concepts import caption_without, concept_scenes
from unsee.world.oracle import load_oracle
from unsee.world.render import render

RESULTS = Path(__file__).parent / "results"
EPS = 8 / 255
N_IMAGES = 32
SEEDS = 8  # judged images per colour prompt: 64 per personalised model
SURROGATE = 4  # surrogate inversion steps per PGD step in the "+ surrogate" rows (ProtectConfig.surrogate_steps)
FT_STEPS, FT_LR, FT_PARAMS = 200, 1e-3, "xattn"


def alpha_targets(fp: str, identity: str) -> tuple[str, str]:
    """The top- and lowest-alpha objects other than the identity, measured on this model."""
    f = RESULTS / "alpha.json"
    if not f.exists() or json.loads(f.read_text())["model_fingerprint"] != fp:
        raise SystemExit("benchmarks/results/alpha.json is missing or for another model; run benchmarks/alpha.py first")
    alpha = json.loads(f.read_text())["groups"]["object"]["alpha"]
    ranked = sorted((a, c) for c, a in alpha.items() if c != identity)
    return ranked[-1][1], ranked[0][1]


def reads(oracle, images: torch.Tensor) -> list[str]:
    return [r[0] for r in topk(oracle, images, 1)["object"]]


def settings(quick: bool) -> dict:
    """The two personalisations' settings (a cached result made with others is measured again)."""
    return {
        "inversion": InversionConfig(token="<id>", steps=3 if quick else 400, lr=0.005, batch_size=8),
        "finetune": FinetuneConfig(token="sks", steps=3 if quick else FT_STEPS, lr=FT_LR, batch_size=4, params=FT_PARAMS),
    }


def personalise(pipe, oracle, how: str, cfg, images: torch.Tensor, captions: list[str]) -> tuple[dict, torch.Tensor]:
    """The oracle's reads of 64 images ("a {colour} <token>", 8 seeds each) after personalising on ``images``."""
    t0 = time.perf_counter()
    if how == "inversion":
        learned = invert(pipe, images, cfg, torch.Generator().manual_seed(0), captions=captions)
        ims = torch.cat(prompt_images(pipe, [f"a {c} <id>" for c in COLOUR_NAMES], n=SEEDS, seed=0, learned=learned.tokens))
    else:
        edit = finetune(pipe, images, cfg, torch.Generator().manual_seed(0), captions=captions)
        with edit.applied(pipe):
            ims = torch.cat(prompt_images(pipe, [f"a {c} sks" for c in COLOUR_NAMES], n=SEEDS, seed=0))
    return {"reads": reads(oracle, ims), "seconds": time.perf_counter() - t0, "settings": f"{cfg!r} seeds={SEEDS}"}, ims


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--identity", default="star")
    ap.add_argument("--quick", action="store_true", help="3 steps everywhere: checks the script, measures nothing")
    ap.add_argument("--steps", type=int, default=100, help="PGD steps of each protection (batch 8 of the 32 images)")
    ap.add_argument("--purifications-first", action="store_true",
                    help="measure the purified conditions first (a second process shares the run: every condition is "
                    "cached as it finishes, and each process writes the report once it has them all)")  # fmt: skip
    ap.add_argument("--out", default=str(RESULTS / "protect"))
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("UNSEE_THREADS", "2")))
    pipe, oracle = load_pipeline("mini"), load_oracle()
    fp = fingerprint(pipe)
    top, low = alpha_targets(fp, args.identity)
    out = Path(args.out)
    runs = out.with_name(out.name + "_runs") / fp / ("quick" if args.quick else "full")
    if args.steps != 100 and not args.quick:
        runs = RESULTS / "protect_runs" / fp / f"full-steps{args.steps}"
        runs.mkdir(parents=True, exist_ok=True)
        # The unprotected and the uniform-noise rows do not take PGD steps: measured once.
        full = RESULTS / "protect_runs" / fp / "full"
        for f in [f for g in ("none-*", "noise-*", "protected_noise.pt") for f in full.glob(g)]:
            if not (runs / f.name).exists():
                (runs / f.name).write_bytes(f.read_bytes())
    runs.mkdir(parents=True, exist_ok=True)
    scenes = concept_scenes(args.identity, N_IMAGES, np.random.default_rng(0))
    clean = torch.from_numpy(np.stack([render(s) for s in scenes])).permute(0, 3, 1, 2).float().div(255.0)
    captions = [caption_without(s, args.identity) for s in scenes]  # "a red": what else each image shows
    steps = 3 if args.quick else args.steps
    tg = lambda t, **kw: ProtectConfig(mode="targeted", target=f"a {t}", eps=EPS, steps=steps, **kw)  # noqa: E731
    sur = {"surrogate_steps": 3 if args.quick else SURROGATE}
    protections = {  # row name -> (cache key, settings)
        "none": ("none", None),
        f"targeted ({top}, top alpha)": (f"targeted-{top}", tg(top)),
        f"targeted ({low}, lowest alpha)": (f"targeted-{low}", tg(low)),
        "untargeted": ("untargeted", ProtectConfig(mode="untargeted", eps=EPS, steps=steps)),
        "noise": ("noise", ProtectConfig(mode="noise", eps=EPS)),
        f"targeted ({top}, top alpha) + surrogate": (f"targeted-{top}-surrogate", tg(top, **sur)),
        f"targeted ({low}, lowest alpha) + surrogate": (f"targeted-{low}-surrogate", tg(low, **sur)),
        "untargeted + surrogate": ("untargeted-surrogate", ProtectConfig(mode="untargeted", eps=EPS, steps=steps, **sur)),
    }
    top_name = f"targeted ({top}, top alpha)"
    purified = ("none", top_name, f"{top_name} + surrogate")
    natural = [(p, "none") for p in protections] + [(p, f) for p in purified for f in ("blur", "resample")]
    conditions = sorted(natural, key=lambda c: (c[1] == "none", "surrogate" in c[0])) if args.purifications_first else natural
    rows, grid_parts = [], {}
    for prot, purif in conditions:
        key, cfg = protections[prot]
        kept = runs / f"protected_{key}.pt"  # the protected images: made once, reused under every purification
        if cfg is None:
            protected, linf = clean, 0.0
        elif kept.exists():
            protected = torch.load(kept, weights_only=True)
        else:  # the captions: what the surrogate token (if any) is trained beside, as the inversion trains <id>
            protected = protect(pipe, clean, cfg, torch.Generator().manual_seed(0), captions=captions, progress=True).images
            torch.save(protected, kept)
        linf = float((protected - clean).abs().max())
        images = PURIFICATIONS[purif](protected)
        res = {"linf": linf}
        for how, pcfg in settings(args.quick).items():
            f = runs / f"{key}-{purif}-{how}.json"
            if f.exists() and json.loads(f.read_text())["settings"] == f"{pcfg!r} seeds={SEEDS}":
                res[how] = json.loads(f.read_text())
                continue
            res[how], ims = personalise(pipe, oracle, how, pcfg, images, captions)
            f.write_text(json.dumps(res[how], indent=1))
            torch.save(ims[::2][:8].clone(), runs / f"{key}-{purif}-{how}_images.pt")
        target = prot.split("(")[1].split(",")[0] if "(" in prot else None
        row = {"protection": prot, "purification": purif, "linf": res["linf"]}
        for how in ("inversion", "finetune"):
            r = res[how]["reads"]
            row[f"{how}_identity"] = r.count(args.identity) / len(r)
            row[f"{how}_target"] = r.count(target) / len(r) if target else None
        rows.append(row)
        print(row, flush=True)
        if purif == "none":
            grid_parts[prot] = [images[:6]] + [torch.load(runs / f"{key}-none-{h}_images.pt", weights_only=True)[:6]
                                         for h in ("inversion", "finetune")]  # fmt: skip
    rows.sort(key=lambda r: natural.index((r["protection"], r["purification"])))  # the table's order, whichever ran first
    grid_rows = [x for p in protections for x in grid_parts[p]]
    grid_labels = [lab for p in protections for lab in (f"{p}: images", "  textual inversion draws", "  fine-tune draws")]
    base = {r["protection"]: r for r in rows if r["purification"] == "none"}["none"]
    for r in rows:
        for how in ("inversion", "finetune"):
            r[f"{how}_cut"] = base[f"{how}_identity"] - r[f"{how}_identity"]
    grid = image_grid(torch.cat(grid_rows), cols=6, cell=64, row_labels=grid_labels)
    grid.save(out.with_name(out.name + "_grid.png"))
    pct = lambda v: "–" if v is None else f"{100 * v:.1f}"  # noqa: E731
    md = [f"# Anti-personalisation on the mini model{' (quick check)' if args.quick else ''}", "",
          f"Model `mini`, fingerprint `{fp}`. Identity: `{args.identity}` ({N_IMAGES} renders); l_inf budget 8/255, "
          f"{steps} PGD steps of 8 images each (each image stepped {steps * 8 // N_IMAGES} times on average); "
          f"targets from benchmarks/results/alpha.json (top alpha: {top}, lowest: {low}). Identity / target: the "
          f"share of the personalised model's {8 * SEEDS} images the oracle reads as the identity / the target. "
          f"'+ surrogate': a textual inversion of the images in the loop, {sur['surrogate_steps']} steps per PGD step, "
          "whose denoising loss each step also ascends (Anti-DreamBooth's ASPL on textual inversion). Cut: identity "
          f"points lost against unprotected images (the same seeds; a share of {8 * SEEDS} images has a standard error of "
          f"at most {50 / (8 * SEEDS) ** 0.5:.1f} points).", "",
          "| protection | purification | l_inf x255 | TI identity | TI target | TI cut | fine-tune identity | "
          "fine-tune target | fine-tune cut |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        md.append(f"| {r['protection']} | {r['purification']} | {255 * r['linf']:.1f} | {pct(r['inversion_identity'])} | "
                  f"{pct(r['inversion_target'])} | {pct(r['inversion_cut'])} | {pct(r['finetune_identity'])} | "
                  f"{pct(r['finetune_target'])} | {pct(r['finetune_cut'])} |")  # fmt: skip
    md += ["", f"![protected images and what the personalised models draw]({out.name}_grid.png)", ""]
    write_report(out, {"model": "mini", "model_fingerprint": fp, "identity": args.identity, "eps": EPS, "steps": steps,
                       "targets": {"top_alpha": top, "low_alpha": low}, "judged_per_model": 8 * SEEDS,
                       "surrogate_steps": sur["surrogate_steps"], "rows": rows}, "\n".join(md))  # fmt: skip


if __name__ == "__main__":
    main()
