"""The cheapest attack: ask for the concept by another of its names.

An erasure trained on one word may leave its synonyms drawing the concept ("disk" for "circle",
"chequered" for "checkered"). Every synonym replaces the concept in each prompt; the judge keeps the
best synonym per prompt and seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import StableDiffusionPipeline

from unsee.attacks.base import AttackConfig, AttackRun, Found, Target, register
from unsee.edits import Edit


@dataclass
class SynonymConfig(AttackConfig):
    """No search: the target's ``synonyms`` are the attack."""


@register("synonym", SynonymConfig)
def synonym_attack(pipe: StableDiffusionPipeline, edit: Edit, target: Target, cfg: SynonymConfig,
                   generator: torch.Generator, *, run: AttackRun, force: bool = False) -> Found:  # fmt: skip
    names = [s for s in target.synonyms if s != target.concept]
    if not names:
        raise ValueError(f"no synonyms known for {target.concept!r}; pass `Target(synonyms=...)` or use another attack")
    return Found([[p.format(s) for s in names] for p in target.prompts], None, {"synonyms": names})
