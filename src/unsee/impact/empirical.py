"""Empirical impact of an edit: the same seeds through the base and the edited model, compared.

For each concept, ``n`` images from both models with identical z_T; the image distance between the
pairs, and, given a :class:`unsee.judges.Judge` that knows the concept, its top-1 rate before and after. Agreement with
a spectrum is the Spearman correlation between its impact (−score) and these measurements.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from diffusers import StableDiffusionPipeline
from scipy.stats import spearmanr

from unsee.edits import Edit
from unsee.impact.spectrum import Spectrum, concept_prompt
from unsee.judges import Judge, detects, knows
from unsee.metrics.judged import prompt_images


@dataclass(frozen=True)
class EmpiricalImpact:
    """Per concept: mean image distance (RMS over pixels in [0, 1]) between same-seed base and edited
    images, and, where the judge knows the concept, its top-1 rate before and after."""

    concepts: tuple[str, ...]
    distance: dict[str, float]
    accuracy_before: dict[str, float] = field(default_factory=dict)
    accuracy_after: dict[str, float] = field(default_factory=dict)
    images: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict, repr=False)

    @property
    def accuracy_drop(self) -> dict[str, float]:
        return {c: self.accuracy_before[c] - self.accuracy_after[c] for c in self.accuracy_before}

    def agreement(self, spec: Spectrum, exclude: Sequence[str] = ()) -> dict[str, float]:
        """Spearman between the spectrum's impact (−score) and the distance / accuracy drop."""
        out = {}
        for name, vals in (("distance", self.distance), ("accuracy_drop", self.accuracy_drop)):
            cs = [c for c in vals if c in spec.words and c not in exclude]
            if len(cs) < 3:
                continue
            impact = [-float(spec.scores[spec.words.index(c)]) for c in cs]
            out[f"spearman_{name}"] = float(spearmanr(impact, [vals[c] for c in cs]).statistic)
        return out

    def to_dict(self) -> dict:
        return {"concepts": list(self.concepts), "distance": self.distance, "accuracy_before": self.accuracy_before,
                "accuracy_after": self.accuracy_after, "accuracy_drop": self.accuracy_drop}  # fmt: skip


@torch.no_grad()
def empirical_impact(
    pipe: StableDiffusionPipeline,
    edit: Edit | None,
    concepts: Sequence[str],
    *,
    judge: Judge | None = None,
    labels: Mapping[str, str] | None = None,
    n: int = 4,
    seed: int = 0,
    steps: int | None = None,
    guidance_scale: float | None = None,
    template: str = "a {}",
    keep_images: bool = False,
    force: bool = False,
) -> EmpiricalImpact:
    """Sample ``n`` images per concept from the base and the edited model with the same seeds and compare.

    ``judge`` reads both: a concept counts under ``labels[concept]`` (the judge's name for it, e.g. a
    synonym's class; a world supplies its own map, as the mini world's ``JUDGE_LABELS`` in its captions
    module), else under its own name when the judge knows it. ``steps`` and ``guidance_scale`` default to
    the model's own sampling settings."""
    if not concepts:
        raise ValueError("no concepts to measure; pass at least one")
    prompts = [concept_prompt(c, template) for c in concepts]
    kw = dict(n=n, seed=seed, steps=steps, guidance_scale=guidance_scale)
    before = prompt_images(pipe, prompts, **kw)
    if edit is None:
        after = [b.clone() for b in before]
    else:
        with edit.applied(pipe, force=force):
            after = prompt_images(pipe, prompts, **kw)
    dist, acc0, acc1 = {}, {}, {}
    for c, b, a in zip(concepts, before, after):
        dist[c] = float(((a - b) ** 2).flatten(1).mean(-1).sqrt().mean())
        label = (labels or {}).get(c, c) if judge is not None else None
        if label is not None and knows(judge, label):
            acc0[c] = float(detects(judge, b, label).float().mean())
            acc1[c] = float(detects(judge, a, label).float().mean())
    imgs = {c: (b, a) for c, b, a in zip(concepts, before, after)} if keep_images else {}
    return EmpiricalImpact(tuple(concepts), dist, acc0, acc1, imgs)


def extremes_grid(spec: Spectrum, emp: EmpiricalImpact, path, *, k: int | None = None):
    """Two rows per concept, base then edited images with the same seeds, labelled with its score."""
    from unsee.images import image_grid

    if not emp.images:
        raise ValueError("the empirical impact kept no images; call empirical_impact(..., keep_images=True)")
    k = k or len(next(iter(emp.images.values()))[0])
    rows, names = [], []
    for c in emp.concepts:
        b, a = emp.images[c]
        s = float(spec.scores[spec.words.index(c)]) if c in spec.words else float("nan")
        rows += [*b[:k], *a[:k]]
        names += [f"{c or repr(c)} base", f"edited ({s:.2g})"]
    grid = image_grid(torch.stack(rows), cols=k, cell=64, row_labels=names,
                      title=f"{spec.method} erasing {', '.join(spec.concepts)}: most and least affected")  # fmt: skip
    grid.save(path)
    return grid
