"""The mini world's erasure protocols, judged by a :class:`unsee.judges.Judge` (the oracle).

Objects (the Imagenette analogue): 10 classes, 4 fixed splits that each erase 5 at once and
preserve the other 5; ESR-k (erased image's class not in the top-k) and PSR-k (preserved
image's class in the top-k), as in the published protocol (see NOTES.md).
Styles (the artist / nudity analogue): erase one background style; success on prompts that name
it by any of its synonyms, preservation on the other styles and on objects.
With a second judge (``check``, e.g. :func:`unsee.world.judge2.load_judge2`), every class's rates
carry the two judges' top-1 agreement on its generated images, and classes below
:data:`unsee.metrics.judged.AGREEMENT_FLOOR` are flagged (:func:`flagged_classes`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from diffusers import StableDiffusionPipeline

from unsee.concepts.prompts import with_article
from unsee.judges import Judge
from unsee.metrics.judged import AGREEMENT_FLOOR, PromptResult, agreement, flagged, judge_prompts
from unsee.world.captions import STYLE_WORDS
from unsee.world.render import BACKGROUNDS, COLOUR_NAMES, OBJECTS

# Each split erases 5 objects; every family is split across erased and preserved classes.
SPLITS: tuple[tuple[str, ...], ...] = (
    ("circle", "ring", "square", "arrow", "star"),
    ("oval", "triangle", "hexagon", "diamond", "cross"),
    ("circle", "oval", "triangle", "diamond", "cross"),
    ("ring", "square", "hexagon", "arrow", "star"),
)
KS = (1, 3)


@dataclass(frozen=True)
class Sampling:
    n: int = 4
    """Images per prompt; each class has 8 prompts ("a {colour} {object}")."""
    seed: int = 0
    steps: int | None = None
    """DDIM steps; None = the model's own (``unsee.models.sampling_defaults``)."""
    guidance_scale: float | None = None


def class_prompts(obj: str) -> list[str]:
    return [with_article(f"{c} {obj}") for c in COLOUR_NAMES]


def judge_objects(pipe: StableDiffusionPipeline, judge: Judge, objects: Sequence[str], s: Sampling,
                  progress: bool = False, check: Judge | None = None) -> dict[str, list[PromptResult]]:  # fmt: skip
    """The judge's reads (and ``check``'s) of every class's prompts; class i's prompts use seeds from ``s.seed + 100 i``."""
    out = {}
    for obj in objects:
        i = OBJECTS.index(obj)
        out[obj] = judge_prompts(pipe, judge, class_prompts(obj), n=s.n, seed=s.seed + 100 * i, steps=s.steps,
                                 guidance_scale=s.guidance_scale, k=max(KS), progress=progress, check=check)  # fmt: skip
    return out


def class_rates(results: dict[str, list[PromptResult]]) -> dict[str, dict[str, float]]:
    """Per class: top-k hit rate of its own label (k in KS) and colour top-1; with a second judge,
    ``agreement``: how often the two judges' object top-1 are the same on the class's images."""
    rates = {}
    for obj, res in results.items():
        r = {f"top{k}": float(np.mean([p.rate("object", obj, k) for p in res])) for k in KS}
        r["colour_top1"] = float(np.mean([p.rate("colour", c) for p, c in zip(res, COLOUR_NAMES)]))
        r["drawn"] = drawn(res)
        if all(p.check is not None for p in res):
            r["agreement"] = agreement(res, "object")
        rates[obj] = r
    return rates


def flagged_classes(rates: dict[str, dict[str, float]], floor: float = AGREEMENT_FLOOR) -> list[str]:
    """Classes of :func:`class_rates` (or per-style rates) whose judges agree on fewer than ``floor`` of the images."""
    return flagged({c: r["agreement"] for c, r in rates.items() if "agreement" in r}, floor)


def drawn(results: Sequence[PromptResult], group: str = "object") -> dict[str, float]:
    """What a class's prompts draw: the share of its images whose top-1 on ``group`` is each label."""
    tops = [row[0] for p in results for row in p.topk[group]]
    return {label: tops.count(label) / len(tops) for label in sorted(set(tops))}


def object_scores(rates: dict[str, dict[str, float]], erased: Sequence[str]) -> dict[str, float]:
    """ESR-k over erased classes, PSR-k over the others, and colour accuracy on both.

    ``ESR-1-strict`` (when the rates hold :func:`drawn`) counts an erased prompt that draws *another* erased concept
    as a failure too: erasing circle, square and star together, "a circle" drawing a star is an escape, not an
    erasure."""
    kept = [o for o in rates if o not in erased]
    out = {}
    for k in KS:
        out[f"ESR-{k}"] = float(np.mean([1 - rates[o][f"top{k}"] for o in erased]))
        out[f"PSR-{k}"] = float(np.mean([rates[o][f"top{k}"] for o in kept]))
    if all("drawn" in rates[o] for o in erased):
        out["ESR-1-strict"] = float(np.mean([1 - sum(rates[o]["drawn"].get(e, 0.0) for e in erased) for o in erased]))
    out["colour_erased"] = float(np.mean([rates[o]["colour_top1"] for o in erased]))
    out["colour_preserved"] = float(np.mean([rates[o]["colour_top1"] for o in kept]))
    return out


def style_prompts(style: str) -> list[tuple[str, str]]:
    """(prompt, style) pairs naming ``style`` by each of its words, with objects and alone."""
    out = []
    for w in STYLE_WORDS[style]:
        out += [(f"{with_article(f'{c} {o}')} on {with_article(w)} background", style)
                for o, c in zip(OBJECTS[::2], COLOUR_NAMES[::2])]  # fmt: skip
        out.append((f"{with_article(w)} pattern", style))
    return out


def style_scores(pipe: StableDiffusionPipeline, judge: Judge, style: str, s: Sampling,
                 check: Judge | None = None) -> dict[str, float]:  # fmt: skip
    """Erasure of one style: ESR on its own prompts (any synonym), preservation on other styles and objects
    (the ``scores`` of :func:`style_report`, which also gives per-class rates and the judges' agreement)."""
    return style_report(pipe, judge, style, s, check)["scores"]


def style_report(pipe: StableDiffusionPipeline, judge: Judge, style: str, s: Sampling,
                 check: Judge | None = None) -> dict:  # fmt: skip
    """``{"scores": style_scores, "per_class": {class: rates}}``; with ``check``, every class's rates
    (styles on the background group, objects on the object group) carry ``agreement`` and
    ``"flagged"`` lists the classes below the floor."""
    if style not in BACKGROUNDS:
        raise ValueError(f"unknown style {style!r}; styles: {', '.join(BACKGROUNDS)}")
    own = style_prompts(style)
    others = [p for b in BACKGROUNDS if b != style for p in style_prompts(b)[: len(OBJECTS[::2])]]
    r_own = judge_prompts(pipe, judge, [p for p, _ in own], n=s.n, seed=s.seed + 5000, steps=s.steps,
                          guidance_scale=s.guidance_scale, check=check)  # fmt: skip
    r_oth = judge_prompts(pipe, judge, [p for p, _ in others], n=s.n, seed=s.seed + 6000, steps=s.steps,
                          guidance_scale=s.guidance_scale, check=check)  # fmt: skip
    by_word = {}
    for (p, b), r in zip(own, r_own):
        word = next(w for w in STYLE_WORDS[style] if f" {w} " in f" {p} ")
        by_word.setdefault(word, []).append(1 - r.rate("background", b))
    objs = judge_objects(pipe, judge, OBJECTS, Sampling(n=max(1, s.n // 2), seed=s.seed, steps=s.steps,
                                                         guidance_scale=s.guidance_scale), check=check)  # fmt: skip
    obj_rates = class_rates(objs)
    scores = {
        "ESR": float(np.mean([1 - r.rate("background", b) for (_, b), r in zip(own, r_own)])),
        **{f"ESR[{w}]": float(np.mean(v)) for w, v in by_word.items()},
        "other_styles_top1": float(np.mean([r.rate("background", b) for (_, b), r in zip(others, r_oth)])),
        "objects_top1": float(np.mean([v["top1"] for v in obj_rates.values()])),
    }
    per_style: dict[str, list[PromptResult]] = {}
    for (_, b), r in [*zip(own, r_own), *zip(others, r_oth)]:
        per_style.setdefault(b, []).append(r)
    style_rates = {}
    for b, rs in per_style.items():
        style_rates[b] = {"top1": float(np.mean([r.rate("background", b) for r in rs]))}
        if check is not None:
            style_rates[b]["agreement"] = agreement(rs, "background")
    per_class = style_rates | obj_rates
    report: dict = {"scores": scores, "per_class": per_class}
    if check is not None:
        report["flagged"] = flagged_classes(per_class)
    return report
