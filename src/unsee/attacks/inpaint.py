"""The inpainting probe of "When Are Concepts Erased From Diffusion Models?" (Lu et al., NeurIPS 2025).

The base model draws the concept; its image's centre is masked and the erased model fills the hole,
with the known surroundings held fixed. An erasure that only keeps the model from drawing the
concept from scratch may still complete it from context.

The known image is the base model's own generation for the same prompt and z_T (always at hand, and
the paper's choice: its base images are the base model's for the same prompts and seeds). The hole
is filled in latent space the way diffusers' inpainting pipeline does with an ordinary (4-channel)
UNet, blended-latent style: after every erased-model DDIM step the known region of z is replaced by
the base latent noised to that step with the z_T noise; after the last step, by the base latent itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import StableDiffusionPipeline

from unsee.attacks.base import AttackConfig, AttackRun, Found, Target, register
from unsee.edits import Edit
from unsee.sampling import Learned, ddim, decode, sample


@dataclass
class InpaintConfig(AttackConfig):
    """The paper's centred 256 x 256 mask on 512 x 512 images: the centre half of each side.

    ``mask_fractions``: the masked box's side as a fraction of the image's, one variant each.
    """

    mask_fractions: tuple[float, ...] = (0.5,)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.mask_fractions or any(not 0 < f <= 1 for f in self.mask_fractions):
            raise ValueError(f"`mask_fractions` must be a non-empty tuple of fractions in (0, 1], got {self.mask_fractions}")


def centre_mask(latents: torch.Tensor, fraction: float) -> torch.Tensor:
    """``(1, 1, h, w)``: 1 in the centred box of side ``fraction`` (at least one latent pixel), 0 around it."""
    h, w = latents.shape[-2:]
    mh, mw = max(1, round(h * fraction)), max(1, round(w * fraction))
    m = torch.zeros((1, 1, h, w), device=latents.device, dtype=latents.dtype)
    m[..., (h - mh) // 2 : (h - mh) // 2 + mh, (w - mw) // 2 : (w - mw) // 2 + mw] = 1
    return m


@dataclass(frozen=True)
class InpaintSampler:
    """The erased model fills the centre (side ``mask_fraction``) of the base model's image."""

    mask_fraction: float

    @property
    def name(self) -> str:
        return f"mask_fraction={self.mask_fraction:g}"

    def __call__(self, pipe: StableDiffusionPipeline, edit: Edit, prompts: list[str], latents: torch.Tensor, *, steps: int,
                 guidance_scale: float, learned: Learned | None = None, force: bool = False) -> torch.Tensor:  # fmt: skip
        z = self.fill(pipe, edit, prompts, latents, steps=steps, guidance_scale=guidance_scale, learned=learned, force=force)
        return decode(pipe, z)

    @torch.no_grad()
    def fill(self, pipe: StableDiffusionPipeline, edit: Edit, prompts: list[str], latents: torch.Tensor, *, steps: int,
             guidance_scale: float, learned: Learned | None = None, force: bool = False) -> torch.Tensor:  # fmt: skip
        """The final latents: the base model's outside the hole, the erased model's fill inside."""
        kw = dict(steps=steps, guidance_scale=guidance_scale, learned=learned)
        known = sample(pipe, prompts, latents=latents, return_latents=True, **kw)  # the base model: ``pipe`` comes unedited
        hole = centre_mask(latents, self.mask_fraction)
        sched = ddim(pipe, steps)
        noise = latents / sched.init_noise_sigma

        def keep_known(z: torch.Tensor, t: torch.Tensor, rows: slice) -> torch.Tensor:
            prev = int(t) - sched.config.num_train_timesteps // sched.num_inference_steps
            k = known[rows]
            if prev >= 0:  # z now sits at the previous timestep: the known part must be as noisy
                k = sched.add_noise(k, noise[rows], torch.tensor([prev]))
            return hole * z + (1 - hole) * k

        with edit.applied(pipe, force=force):
            return sample(pipe, prompts, latents=latents, step_hook=keep_known, return_latents=True, **kw)


@register("inpaint", InpaintConfig)
def inpaint_probe(pipe: StableDiffusionPipeline, edit: Edit, target: Target, cfg: InpaintConfig,
                  generator: torch.Generator, *, run: AttackRun, force: bool = False) -> Found:  # fmt: skip
    samplers = tuple(InpaintSampler(f) for f in cfg.mask_fractions)
    return Found([[p] for p in target.plain_prompts()], None, {"samplers": [s.name for s in samplers]}, samplers)
