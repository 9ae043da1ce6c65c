"""The classifier-guidance probe of "When Are Concepts Erased From Diffusion Models?" (Lu et al., NeurIPS 2025).

The erased model samples the plain prompt while a classifier pulls every step toward the concept
(Dhariwal & Nichol 2021): ``eps <- eps - s * sqrt(1 - alphabar_t) * grad_z log p(concept | z_t)``.
An erasure that leaves the concept reachable lets a small push bring it back. The paper trains a
classifier on noisy latents; here the target's own judge reads the image decoded from the step's
prediction of x_0 (eps held fixed, so no gradient runs through the UNet, only through the VAE and
the judge), so the judge must be differentiable. Scales and etas are swept; the judge keeps the best.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from diffusers import StableDiffusionPipeline

from unsee.attacks.base import AttackConfig, AttackRun, Found, Target, check_grid, probe_seed, register
from unsee.attacks.noise import ETAS
from unsee.edits import Edit
from unsee.judges import Judge, score
from unsee.sampling import Learned, ddim, decode, sample

SCALES = tuple(float(s) for s in range(25, 194, 7))


@dataclass
class GuidedConfig(AttackConfig):
    """The paper's grid (its ``configs/default.yaml``): classifier scales 25 to 193 in steps of 7 (25 values), each
    with the noise probe's 6 etas (1.0 to 1.85), 150 variants at 50 steps and guidance 7.5.

    Its scales multiply the gradient of a latent classifier's log-probability; here that of the judge
    on the decoded x_0 prediction, so a benchmark may need other ``scales``. ``batch_size``: images
    guided at once (each step backpropagates through the VAE decoder).
    """

    scales: tuple[float, ...] = SCALES
    etas: tuple[float, ...] = ETAS
    batch_size: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        check_grid(self, "scales", "etas")
        if self.batch_size < 1:
            raise ValueError(f"`batch_size` must be at least 1, got {self.batch_size}")


@dataclass(frozen=True)
class GuidedSampler:
    """The erased model's DDIM (noise weight ``eta``) with the judge's gradient toward ``label`` at ``scale``."""

    scale: float
    eta: float
    seed: int
    judge: Judge = field(repr=False, compare=False)
    label: str
    batch_size: int = 8

    @property
    def name(self) -> str:
        return f"scale={self.scale:g},eta={self.eta:g}"

    def __call__(self, pipe: StableDiffusionPipeline, edit: Edit, prompts: list[str], latents: torch.Tensor, *, steps: int,
                 guidance_scale: float, learned: Learned | None = None, force: bool = False) -> torch.Tensor:  # fmt: skip
        kind = pipe.scheduler.config.prediction_type
        if kind != "epsilon":
            raise ValueError(f"the guided attack shifts a noise (epsilon) prediction; this model predicts {kind!r} "
                             "(`pipe.scheduler.config.prediction_type`)")  # fmt: skip
        sched = ddim(pipe, steps)
        guide = None if self.scale == 0 else self._guide(pipe, sched)
        with edit.applied(pipe, force=force):
            return sample(pipe, prompts, latents=latents, steps=steps, guidance_scale=guidance_scale, learned=learned,
                          eta=self.eta, noise_generator=torch.Generator().manual_seed(self.seed), eps_hook=guide,
                          batch_size=self.batch_size)  # fmt: skip

    def _guide(self, pipe: StableDiffusionPipeline, sched):
        def guide(z: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, rows: slice) -> torch.Tensor:
            a = sched.alphas_cumprod[int(t)].to(z.device)
            with torch.enable_grad():
                zg = z.detach().requires_grad_(True)
                x0 = (zg - (1 - a) ** 0.5 * eps.detach()) / a**0.5
                logp = score(self.judge, decode(pipe, x0, grad=True), self.label).clamp_min(1e-12).log().sum()
                if not logp.requires_grad:
                    raise ValueError("guided needs a differentiable judge; `target.judge.probs` returned no gradient "
                                     "(use a torch judge such as unsee.judges.ClassifierJudge, or another attack)")  # fmt: skip
                (grad,) = torch.autograd.grad(logp, zg)
            return eps - self.scale * (1 - a) ** 0.5 * grad.to(eps.dtype)

        return guide


@register("guided", GuidedConfig)
def guided_probe(pipe: StableDiffusionPipeline, edit: Edit, target: Target, cfg: GuidedConfig,
                 generator: torch.Generator, *, run: AttackRun, force: bool = False) -> Found:  # fmt: skip
    seed = probe_seed(generator)
    samplers = tuple(GuidedSampler(s, e, seed, target.judge, target.judge_label, cfg.batch_size)
                     for s in cfg.scales for e in cfg.etas)  # fmt: skip
    return Found([[p] for p in target.plain_prompts()], None, {"samplers": [s.name for s in samplers]}, samplers)
