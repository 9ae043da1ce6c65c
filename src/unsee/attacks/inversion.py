"""The inversion attack, equation (10) (Concept Inversion, Pham et al., ICLR 2024).

Textual inversion (:func:`unsee.concepts.inversion.invert`) run through the *erased* model on images
of the erased concept; the learned token then stands in for the concept's word in every prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from diffusers import StableDiffusionPipeline

from unsee.attacks.base import AttackConfig, AttackRun, Found, Target, register
from unsee.concepts.inversion import TEMPLATES, InversionConfig, InversionRun, invert
from unsee.edits import Edit


@dataclass
class InversionAttackConfig(AttackConfig):
    """Concept Inversion's settings: one new token, lr 5e-3; ``steps`` scaled to the model (see the benchmark)."""

    uses_images: ClassVar[bool] = True

    token: str = "<adv>"
    n_vectors: int = 1
    init_word: str | None = None
    inversion_steps: int = 400
    lr: float = 5e-3
    batch_size: int = 8
    templates: tuple[str, ...] = TEMPLATES


@register("inversion", InversionAttackConfig)
def inversion_attack(pipe: StableDiffusionPipeline, edit: Edit, target: Target, cfg: InversionAttackConfig,
                     generator: torch.Generator, *, run: AttackRun, force: bool = False) -> Found:  # fmt: skip
    images = target.needs_images("inversion")
    icfg = InversionConfig(token=cfg.token, n_vectors=cfg.n_vectors, init_word=cfg.init_word, steps=cfg.inversion_steps,
                           lr=cfg.lr, batch_size=cfg.batch_size, templates=cfg.templates)  # fmt: skip
    irun = InversionRun(run.dir, run.checkpoint_every, run.resume, run.progress)
    learned = invert(pipe, images, icfg, generator, edit=edit, run=irun, force=force)
    return Found([[p.format(cfg.token)] for p in target.prompts], learned,
                 {"seconds": learned.info["seconds"], "final_loss": learned.info["log"][-1]["loss"]})  # fmt: skip
