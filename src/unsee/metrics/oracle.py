"""Oracle-judged generation metrics on the mini world: what the model draws for each prompt.

Each prompt's images come from z_T drawn with that prompt's own seed, so a prompt's result does
not depend on which other prompts are evaluated with it or on batching.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from diffusers import StableDiffusionPipeline
from tqdm.auto import tqdm

from unsee.models import sampling_defaults
from unsee.sampling import ddim, decode, denoise, encode_prompts, latent_shape
from unsee.world.oracle import HEADS, Oracle


@dataclass(frozen=True)
class PromptResult:
    """Top-k oracle labels per head for each image of one prompt."""

    prompt: str
    topk: dict[str, list[list[str]]]
    images: torch.Tensor | None = field(default=None, repr=False)

    def rate(self, head: str, label: str, k: int = 1) -> float:
        """Fraction of images whose top-k on ``head`` contains ``label``."""
        rows = self.topk[head]
        return sum(label in r[:k] for r in rows) / len(rows)


def prompt_latents(pipe: StableDiffusionPipeline, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator("cpu").manual_seed(seed)
    z = torch.randn(latent_shape(pipe, n), generator=g)
    return (z * ddim(pipe, 1).init_noise_sigma).to(pipe.unet.device, pipe.unet.dtype)


@torch.no_grad()
def prompt_images(
    pipe: StableDiffusionPipeline,
    prompts: Sequence[str],
    *,
    n: int = 8,
    seed: int = 0,
    steps: int | None = None,
    guidance_scale: float | None = None,
    batch_size: int = 64,
    progress: bool = False,
) -> list[torch.Tensor]:
    """``n`` images per prompt ``(n, 3, H, W)`` in [0, 1]; prompt i's z_T comes from seed ``seed + i``.

    ``steps`` and ``guidance_scale`` default to the model's own (``unsee.models.sampling_defaults``).
    """
    d = sampling_defaults(pipe)
    steps = d.steps if steps is None else steps
    guidance_scale = d.guidance_scale if guidance_scale is None else guidance_scale
    jobs = [(i, j) for i in range(len(prompts)) for j in range(n)]
    latents = {i: prompt_latents(pipe, n, seed + i) for i in range(len(prompts))}
    neg = encode_prompts(pipe, [""])
    images: dict[int, list[torch.Tensor]] = {i: [] for i in range(len(prompts))}
    for s in tqdm(range(0, len(jobs), batch_size), desc="sampling", disable=not progress):
        chunk = jobs[s : s + batch_size]
        z = torch.stack([latents[i][j] for i, j in chunk])
        cond = encode_prompts(pipe, [prompts[i] for i, _ in chunk])
        sched = ddim(pipe, steps)
        z = denoise(pipe.unet, sched, z, cond, neg.expand(len(chunk), -1, -1), guidance_scale, sched.timesteps)
        for (i, _), im in zip(chunk, decode(pipe, z)):
            images[i].append(im.cpu())
    return [torch.stack(images[i]) for i in range(len(prompts))]


@torch.no_grad()
def judge_prompts(
    pipe: StableDiffusionPipeline,
    oracle: Oracle,
    prompts: Sequence[str],
    *,
    n: int = 8,
    seed: int = 0,
    steps: int | None = None,
    guidance_scale: float | None = None,
    k: int = 3,
    batch_size: int = 64,
    keep_images: bool = False,
    progress: bool = False,
) -> list[PromptResult]:
    """Generate ``n`` images per prompt (prompt i seeded ``seed + i``) and read them with the oracle."""
    images = prompt_images(pipe, prompts, n=n, seed=seed, steps=steps, guidance_scale=guidance_scale,
                           batch_size=batch_size, progress=progress)  # fmt: skip
    return [PromptResult(p, oracle.topk(ims, k), ims if keep_images else None) for p, ims in zip(prompts, images)]


def accuracy(results: Sequence[PromptResult], head: str, labels: Sequence[str], k: int = 1) -> float:
    """Mean over prompts of the rate at which each prompt's expected label is in the top-k."""
    if head not in HEADS:
        raise ValueError(f"unknown oracle head {head!r}; known: {', '.join(HEADS)}")
    return sum(r.rate(head, lab, k) for r, lab in zip(results, labels)) / len(results)
