"""Dominance on the mini world: its composed prompts per judge group, measured with its oracle.

The core (:mod:`unsee.impact.alpha`) takes templates and a judge; this module gives the world's: two
objects with fixed colours (``"a red {a} and a blue {b}"``), two colours on fixed objects (``"{A} circle
and {B} star"``), each template drawn both ways round so no colour or object favours a side.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from diffusers import StableDiffusionPipeline

from unsee.impact.alpha import AlphaConfig, Dominance, dominance, predictors, spearman_table
from unsee.judges import Judge, group_of
from unsee.world.captions import JUDGE_LABELS

TEMPLATES: dict[str, tuple[str, ...]] = {
    "object": (
        "a red {a} and a blue {b}",
        "a green {a} and a yellow {b}",
        "a purple {a} and a teal {b}",
        "a pink {a} and an orange {b}",
    ),  # fmt: skip
    "colour": (
        "{A} circle and {B} star",
        "{A} square and {B} cross",
        "{A} triangle and {B} hexagon",
        "{A} arrow and {B} diamond",
    ),  # fmt: skip
}
SINGLE: dict[str, str] = {"object": "a {}", "colour": "a {} shape"}


def by_group(judge: Judge, concepts: Sequence[str]) -> dict[str, list[str]]:
    """The concepts split by the oracle group that reads them, in the order given (one line for an unknown one)."""
    out: dict[str, list[str]] = {}
    for c in concepts:
        out.setdefault(group_of(judge, JUDGE_LABELS.get(c, c)), []).append(c)
    bad = [g for g in out if g not in TEMPLATES]
    if bad:
        raise ValueError(f"dominance on the mini world compares objects or colours, not the {bad[0]} concepts "
                         f"{out[bad[0]]}; leave them out of `concepts`")  # fmt: skip
    return out


def world_dominance(
    pipe: StableDiffusionPipeline,
    judge: Judge,
    concepts: Sequence[str],
    config: AlphaConfig | None = None,
    *,
    predict: bool = True,
    cache_dir: str | Path | None = None,
    progress: bool = False,
) -> dict[str, tuple[Dominance, dict, dict]]:
    """Per judge group of ``concepts``: its :class:`Dominance` (with the world's templates for that group, and
    ``config``'s other settings), and, when ``predict``, the predictors and their Spearman with alpha."""
    config = config or AlphaConfig()
    out = {}
    for group, cs in by_group(judge, concepts).items():
        if len(cs) < 2:
            raise ValueError(f"dominance needs at least 2 {group} concepts (got {cs}); add another to `concepts`")
        cfg = replace(config, templates=TEMPLATES[group], single=SINGLE[group])
        d = dominance(pipe, judge, cs, cfg, labels=JUDGE_LABELS, cache_dir=cache_dir, progress=progress)
        preds = predictors(pipe, cs, cfg) if predict else {}
        out[group] = (d, preds, spearman_table(d.alpha, preds) if preds else {})
    return out
