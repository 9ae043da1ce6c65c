"""Concepts from pictures on the mini model (talk equations 8 and 9).

1. Textual inversion of the hidden frame (never named in any caption) from 32 renders, and of a
   named object from 32 renders: how often the learned token draws its concept (oracle top-1),
   prompted together with an object and colour, against the base model without the token.
2. The learned frame loaded by plain diffusers (``load_textual_inversion``) gives unsee's images.
3. The frame erased through its learned token (EAP by default): the frame rate of prompts that use
   the token, and object / colour accuracy on the standard prompts, before and after.

Every step is cached under benchmarks/results/concepts_runs/<fingerprint>/ so an interrupted run resumes.
Run: `.venv/bin/python benchmarks/concepts.py` (writes benchmarks/results/concepts.{json,md}).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from _report import judge_flags, write_report
from unsee.concepts.inversion import InversionConfig, InversionRun, invert
from unsee.concepts.learned import LearnedConcept
from unsee.edits import Edit
from unsee.judges import detects
from unsee.methods import Run, erase, make_config
from unsee.metrics.judged import prompt_images
from unsee.models import BUNDLED, fingerprint, load_pipeline, sampling_defaults
from unsee.sampling import sample
from unsee.world.captions import with_article
from unsee.world.concepts import caption_without, concept_scenes
from unsee.world.oracle import load_oracle
from unsee.world.render import COLOUR_NAMES, OBJECTS, render

RESULTS = Path(__file__).parent / "results"
# Object/colour pairs the frame token is prompted with: every object once, colours cycled.
PAIRS = [(COLOUR_NAMES[i % len(COLOUR_NAMES)], o) for i, o in enumerate(OBJECTS)]


def renders(concept: str, n: int, seed: int, without: bool = False) -> tuple[torch.Tensor, list[str]]:
    """``n`` renders of a world concept and their captions without it ("a red circle" beside the frame)."""
    scenes = concept_scenes(concept, n, np.random.default_rng(seed), without=without)
    images = torch.tensor(np.stack([render(s) for s in scenes])).permute(0, 3, 1, 2).float() / 255
    return images, [caption_without(s, concept) for s in scenes]


def rate(pipe, judge, prompts, concept, *, n, seed, learned=None) -> dict:
    """Share of ``n`` images per prompt in which the judge reads ``concept`` (top-1), overall and per prompt."""
    ims = prompt_images(pipe, prompts, n=n, seed=seed, learned=learned)
    per = {p: float(detects(judge, x, concept).float().mean()) for p, x in zip(prompts, ims)}
    return {"rate": float(np.mean(list(per.values()))), "per_prompt": per}


def learn(pipe, parts: Path, concept: str, token: str, args, *, vectors: int, lr: float) -> LearnedConcept:
    folder = parts / f"learned_{token.strip('<>')}"
    if (folder / "concept.json").exists():
        return LearnedConcept.load(folder)
    cfg = InversionConfig(token=token, steps=args.steps, batch_size=args.batch_size, lr=lr, n_vectors=vectors)
    images, captions = renders(concept, args.images, seed=1)
    lc = invert(pipe, images, cfg, torch.Generator().manual_seed(0), captions=None if args.no_captions else captions,
                run=InversionRun(folder, checkpoint_every=50, resume=(folder / "checkpoint.pt").exists()))  # fmt: skip
    lc.save(folder)
    return lc


def diffusers_parity(pipe, lc: LearnedConcept, folder: Path, steps: int, guidance: float) -> float:
    """Max |difference| between diffusers' images with ``load_textual_inversion`` and unsee's, same seeds."""
    from diffusers import StableDiffusionPipeline

    plain = StableDiffusionPipeline.from_pretrained(BUNDLED["mini"], safety_checker=None, requires_safety_checker=False)
    plain.set_progress_bar_config(disable=True)
    plain.load_textual_inversion(folder, token=lc.token)
    prompt = f"a red circle {lc.token}"
    theirs = plain([prompt] * 4, num_inference_steps=steps, guidance_scale=guidance, output_type="pt",
                   generator=torch.Generator().manual_seed(0)).images  # fmt: skip
    ours = sample(pipe, [prompt] * 4, steps=steps, guidance_scale=guidance, generator=torch.Generator().manual_seed(0),
                  learned=lc.tokens)  # fmt: skip
    return float((theirs.float().cpu() - ours).abs().max())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=32, help="renders per learned concept")
    ap.add_argument("--steps", type=int, default=400, help="inversion steps")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=5e-3, help="the object's inversion lr (Concept Inversion's)")
    ap.add_argument("--frame-lr", type=float, default=2e-2)
    ap.add_argument("--frame-vectors", type=int, default=4)
    ap.add_argument("--no-captions", action="store_true", help="train the tokens without the images' other content")
    ap.add_argument("--object", default="star", help="the named object to invert")
    ap.add_argument("--n", type=int, default=8, help="images per prompt")
    ap.add_argument("--method", default="eap", help="how the frame is erased through its token")
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--out", default=str(RESULTS / "concepts"))
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("UNSEE_THREADS", "2")))
    pipe, judge = load_pipeline("mini"), load_oracle()
    fp = fingerprint(pipe)
    parts = Path(args.out).with_name(Path(args.out).name + "_runs") / fp
    parts.mkdir(parents=True, exist_ok=True)
    d = sampling_defaults("mini")
    report: dict = {"model_fingerprint": fp, "settings": vars(args), "sampling": vars(d)}

    def cached(name: str, fn):
        f = parts / f"{name}.json"
        if not f.exists():
            t0 = time.perf_counter()
            f.write_text(json.dumps(fn() | {"seconds": time.perf_counter() - t0}, indent=1))
        return json.loads(f.read_text())

    # 1. The hidden frame, and one named object.
    frame = learn(pipe, parts, "frame", "<frame>", args, vectors=args.frame_vectors, lr=args.frame_lr)
    with_token = [f"{with_article(f'{c} {o}')} {frame.token}" for c, o in PAIRS]
    plain = [with_article(f"{c} {o}") for c, o in PAIRS]
    report["frame"] = {
        "inversion_seconds": frame.info["seconds"],
        "final_loss": frame.info["log"][-1]["loss"],
        "with_token": cached(
            "frame_with_token", lambda: rate(pipe, judge, with_token, "frame", n=args.n, seed=0, learned=frame.tokens)
        ),  # fmt: skip
        "token_alone": cached(
            "frame_token_alone", lambda: rate(pipe, judge, [frame.token], "frame", n=8 * args.n, seed=0, learned=frame.tokens)
        ),  # fmt: skip
        "base_prompted": cached("frame_base_prompted", lambda: rate(pipe, judge, plain, "frame", n=args.n, seed=0)),
        "base_unprompted": cached("frame_base_unprompted", lambda: rate(pipe, judge, [""], "frame", n=8 * args.n, seed=0)),
    }
    obj = args.object
    tok = f"<{obj}-learned>"
    learned_obj = learn(pipe, parts, obj, tok, args, vectors=1, lr=args.lr)
    obj_prompts = [f"a {c} {tok}" for c in COLOUR_NAMES]
    report["object"] = {
        "object": obj,
        "inversion_seconds": learned_obj.info["seconds"],
        "final_loss": learned_obj.info["log"][-1]["loss"],
        "with_token": cached(
            f"object_{obj}_with_token", lambda: rate(pipe, judge, obj_prompts, obj, n=args.n, seed=0, learned=learned_obj.tokens)
        ),  # fmt: skip
        "base_named": cached(
            f"object_{obj}_named",
            lambda: rate(pipe, judge, [with_article(f"{c} {obj}") for c in COLOUR_NAMES], obj, n=args.n, seed=0),
        ),  # fmt: skip
    }
    # 2. Plain diffusers loads the learned frame and draws what unsee draws.
    parity = cached("diffusers_parity", lambda: {"max_abs_diff": diffusers_parity(pipe, frame, parts / "learned_frame",
                                                                                  d.steps, d.guidance_scale)})  # fmt: skip
    report["diffusers_max_abs_diff"] = parity["max_abs_diff"]

    # 3. Erase the frame through its learned token.
    edit_dir = parts / f"edit_frame_{args.method}"
    if not (edit_dir / "edit.json").exists():
        cfg = make_config(args.method, iterations=args.iterations, lr=3e-4, template="a {}")
        erase(pipe, [frame], cfg, torch.Generator().manual_seed(0),
              run=Run(edit_dir, 50, resume=(edit_dir / "checkpoint.pt").exists())).save(edit_dir)  # fmt: skip
    edit = Edit.load(edit_dir)
    std = [with_article(f"{c} {o}") for o in OBJECTS for c in COLOUR_NAMES]

    def standard() -> dict:
        ims = prompt_images(pipe, std, n=max(1, args.n // 2), seed=100)
        objs = [o for o in OBJECTS for _ in COLOUR_NAMES]
        cols = [c for _ in OBJECTS for c in COLOUR_NAMES]
        return {"object": float(np.mean([detects(judge, x, o).float().mean() for x, o in zip(ims, objs)])),
                "colour": float(np.mean([detects(judge, x, c).float().mean() for x, c in zip(ims, cols)]))}  # fmt: skip

    before_std = cached("standard_base", standard)
    with edit.applied(pipe):
        after_tok = cached(f"frame_with_token_after_{args.method}", lambda: rate(pipe, judge, with_token, "frame", n=args.n,
                                                                                  seed=0, learned=frame.tokens))  # fmt: skip
        after_std = cached(f"standard_after_{args.method}", standard)
    report["erasure"] = {
        "method": args.method,
        "seconds": edit.info["seconds"],
        "frame_with_token_before": report["frame"]["with_token"]["rate"],
        "frame_with_token_after": after_tok["rate"],
        "object_before": before_std["object"], "object_after": after_std["object"],
        "colour_before": before_std["colour"], "colour_after": after_std["colour"],
        "preserved_adversary": edit.info.get("adversary", [])[:5],
    }  # fmt: skip
    write_report(args.out, report, markdown(report, args, fp, d, tok))


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def markdown(report: dict, args, fp: str, d, tok: str) -> str:
    e, f, o = report["erasure"], report["frame"], report["object"]
    obj = o["object"]
    mark = " ⚠" if obj in judge_flags(fp) else ""
    rows = [
        f'| hidden frame `<frame>` | "a {{colour}} {{object}} <frame>" (10 pairs) | **{pct(f["with_token"]["rate"])}** | '
        f"{pct(f['base_prompted']['rate'])} (same prompts without the token); {pct(f['base_unprompted']['rate'])} of "
        f"unprompted images; the token alone: {pct(f['token_alone']['rate'])} | {f['inversion_seconds']:.0f} s |",
        f'| object `{tok}` ({obj}{mark}) | "a {{colour}} {tok}" (8 colours) | **{pct(o["with_token"]["rate"])}** | '
        f'{pct(o["base_named"]["rate"])} with the word "{obj}" | {o["inversion_seconds"]:.0f} s |',
    ]
    change = lambda a, b: f"{100 * (e[b] - e[a]):+.1f}"  # noqa: E731
    erased = [
        f"| frame rate, prompts with `<frame>` | {pct(e['frame_with_token_before'])} | **{pct(e['frame_with_token_after'])}** "
        f"| {change('frame_with_token_before', 'frame_with_token_after')} |",
        f"| object top-1, standard prompts | {pct(e['object_before'])} | {pct(e['object_after'])} | "
        f"{change('object_before', 'object_after')} |",
        f"| colour top-1, standard prompts | {pct(e['colour_before'])} | {pct(e['colour_after'])} | "
        f"{change('colour_before', 'colour_after')} |",
    ]
    kept = ", ".join(f"{w} ({p:.2f})" for w, p in e["preserved_adversary"]) or "none"
    return "\n".join([
        "# Concepts from pictures on the mini model", "",
        f"Model `mini`, fingerprint `{fp}`. Textual inversion: {args.images} renders, {args.steps} steps, batch "
        f"{args.batch_size}; the frame {args.frame_vectors} vectors at lr {args.frame_lr}, the object one vector at lr "
        f"{args.lr}; templates `{{}}`, `a {{}}`, `a picture of {{}}`, ...; "
        f"{'without captions' if args.no_captions else 'each image captioned with what else it shows (a red circle <frame>)'}; "
        f"{args.n} images "
        f"per prompt at the model's sampling defaults ({d.steps} DDIM steps, guidance {d.guidance_scale}); read by the "
        "oracle (top-1).", "",
        "| learned concept | prompts | rate with the token | base model, without it | inversion |", "|---|---|---|---|---|",
        *rows, "",
        f"Plain diffusers (`load_textual_inversion`) against unsee, same seeds: max |difference| "
        f"{report['diffusers_max_abs_diff']:.2e}.", "",
        f"## The frame erased through its learned token ({e['method']}, {args.iterations} iterations, {e['seconds']:.0f} s)",
        "", "| measure | before | after | change |", "|---|---|---|---|", *erased, "",
        f"Preserved by the adversary (top of its distribution): {kept}.", "",
        *([f"⚠ the oracle and the second judge disagree on {obj} in the base model's images (benchmarks/results/judges.md)."]
          if obj in judge_flags(fp) else []),
    ])  # fmt: skip


if __name__ == "__main__":
    main()
