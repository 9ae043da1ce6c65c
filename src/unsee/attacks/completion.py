"""The diffusion-completion probe of "When Are Concepts Erased From Diffusion Models?" (Lu et al., NeurIPS 2025).

The base model takes the first few DDIM steps from z_T, where the image's layout is decided, and the
erased model finishes from that latent. An erasure that only keeps the model from *starting* the
concept lets it complete one it is handed. Each switch point is a variant; the judge keeps the best.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import StableDiffusionPipeline

from unsee.attacks.base import AttackConfig, AttackRun, Found, Target, register
from unsee.edits import Edit
from unsee.models import sampling_defaults
from unsee.sampling import Learned, sample


@dataclass
class CompletionConfig(AttackConfig):
    """The paper's switch points: the base model takes 1, 2 or 3 of the 50 DDIM steps (its interrupt steps 0, 1, 2).

    ``switch_steps`` counts base-model steps in the sampling schedule (``steps``), each below it; 0 is
    the erased model's plain sampling.
    """

    switch_steps: tuple[int, ...] = (1, 2, 3)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.switch_steps or any(k < 0 for k in self.switch_steps):
            raise ValueError(f"`switch_steps` must be a non-empty tuple of step counts at least 0, got {self.switch_steps}")


@dataclass(frozen=True)
class CompletionSampler:
    """The base model's first ``switch`` DDIM steps from z_T, then the erased model's."""

    switch: int

    @property
    def name(self) -> str:
        return f"switch={self.switch}"

    def __call__(self, pipe: StableDiffusionPipeline, edit: Edit, prompts: list[str], latents: torch.Tensor, *, steps: int,
                 guidance_scale: float, learned: Learned | None = None, force: bool = False) -> torch.Tensor:  # fmt: skip
        kw = dict(steps=steps, guidance_scale=guidance_scale, learned=learned)
        z = latents
        if self.switch > 0:  # the base model: ``pipe`` comes unedited
            z = sample(pipe, prompts, latents=latents, stop_index=self.switch, return_latents=True, **kw)
        with edit.applied(pipe, force=force):
            return sample(pipe, prompts, latents=z, start_index=self.switch, **kw)


@register("completion", CompletionConfig)
def completion_probe(pipe: StableDiffusionPipeline, edit: Edit, target: Target, cfg: CompletionConfig,
                     generator: torch.Generator, *, run: AttackRun, force: bool = False) -> Found:  # fmt: skip
    steps = cfg.steps or sampling_defaults(pipe).steps
    if max(cfg.switch_steps) >= steps:
        raise ValueError(f"`switch_steps` must each be below the {steps} sampling steps (the erased model takes the rest), "
                         f"got {cfg.switch_steps}")  # fmt: skip
    samplers = tuple(CompletionSampler(k) for k in cfg.switch_steps)
    return Found([[p] for p in target.plain_prompts()], None, {"samplers": [s.name for s in samplers]}, samplers)
