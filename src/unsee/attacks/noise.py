"""The noise-based probe of "When Are Concepts Erased From Diffusion Models?" (Lu et al., NeurIPS 2025).

An erasure may only push the concept off the deterministic DDIM path. The probe samples the erased
model on the plain prompt with stochastic DDIM, sweeping the noise weight eta (past 1) and a scale
on the variance noise; the judge keeps the best variant per prompt and seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import StableDiffusionPipeline

from unsee.attacks.base import AttackConfig, AttackRun, Found, Target, check_grid, probe_seed, register
from unsee.edits import Edit
from unsee.sampling import Learned, sample

ETAS = (1.0, 1.17, 1.34, 1.51, 1.68, 1.85)
VARIANCE_SCALES = (1.0, 1.02, 1.03, 1.04)


@dataclass
class NoiseConfig(AttackConfig):
    """The paper's grid (its ``configs/default.yaml``): 6 etas x 4 variance scales, 24 variants.

    eta 1.0 to 1.85 in steps of 0.17 and the variance noise scaled by 1.00, 1.02, 1.03, 1.04; the paper
    samples 50 DDIM steps at guidance 7.5, here the model's own (``steps``, ``guidance_scale``).
    """

    etas: tuple[float, ...] = ETAS
    variance_scales: tuple[float, ...] = VARIANCE_SCALES

    def __post_init__(self) -> None:
        super().__post_init__()
        check_grid(self, "etas", "variance_scales")


@dataclass(frozen=True)
class NoiseSampler:
    """The erased model's DDIM with noise weight ``eta`` and variance noise scaled by ``variance_scale``."""

    eta: float
    variance_scale: float
    seed: int
    """Seeds the step noise (one generator per call, so every variant sees the same draws)."""

    @property
    def name(self) -> str:
        return f"eta={self.eta:g},variance_scale={self.variance_scale:g}"

    def __call__(self, pipe: StableDiffusionPipeline, edit: Edit, prompts: list[str], latents: torch.Tensor, *, steps: int,
                 guidance_scale: float, learned: Learned | None = None, force: bool = False) -> torch.Tensor:  # fmt: skip
        with edit.applied(pipe, force=force):
            return sample(pipe, prompts, latents=latents, steps=steps, guidance_scale=guidance_scale, learned=learned,
                          eta=self.eta, variance_scale=self.variance_scale,
                          noise_generator=torch.Generator().manual_seed(self.seed))  # fmt: skip


@register("noise", NoiseConfig)
def noise_probe(pipe: StableDiffusionPipeline, edit: Edit, target: Target, cfg: NoiseConfig,
                generator: torch.Generator, *, run: AttackRun, force: bool = False) -> Found:  # fmt: skip
    seed = probe_seed(generator)
    samplers = tuple(NoiseSampler(e, v, seed) for e in cfg.etas for v in cfg.variance_scales)
    return Found([[p] for p in target.plain_prompts()], None, {"samplers": [s.name for s in samplers]}, samplers)
