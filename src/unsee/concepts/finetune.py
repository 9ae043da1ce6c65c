"""Personalisation by fine-tuning the UNet on a few images, DreamBooth-style: the other way a concept is learned.

Custom Diffusion (Kumari et al., CVPR 2023) trains only the cross-attention key and value projections on the
images captioned with an identifier (``"a photo of sks"``), which is what a few hundred steps on one GPU can
afford; ``params="xattn"`` trains all of cross-attention. The result is an :class:`unsee.edits.Edit`, so it applies,
saves, composes and is judged like any erasure. The anti-personalisation benchmark (:mod:`unsee.protect`) trains it
on clean and on protected images.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline
from tqdm.auto import tqdm

from unsee.concepts.inversion import encode_images, noisy_batch
from unsee.edits import Edit
from unsee.methods.base import TrainedUNet, select_params
from unsee.models import architecture, fingerprint, model_source
from unsee.sampling import encode_prompts, unet_eps


@dataclass(frozen=True)
class FinetuneConfig:
    """``token``: the identifier learned; each image is trained on ``template`` holding it ("a photo of sks"), or,
    with ``captions``, on its caption followed by it ("a red sks"); ``params``: ``kv`` (cross-attention keys and
    values, Custom Diffusion) or ``xattn`` (all of cross-attention)."""

    token: str = "sks"
    template: str = "a photo of {}"
    steps: int = 200
    lr: float = 1e-4
    batch_size: int = 4
    params: Literal["kv", "xattn"] = "kv"

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"`steps` and `batch_size` must be at least 1 (got {self.steps}, {self.batch_size})")
        if self.lr <= 0:
            raise ValueError(f"`lr` must be positive (got {self.lr})")
        if self.params not in ("kv", "xattn"):
            raise ValueError(f"unknown `params` {self.params!r}; use kv or xattn")
        if "{}" not in self.template:
            raise ValueError(f"`template` ({self.template!r}) must hold {{}} where the token goes")


def finetune(pipe: StableDiffusionPipeline, images: torch.Tensor, config: FinetuneConfig, generator: torch.Generator,
             *, captions: Sequence[str] | None = None, progress: bool = False) -> Edit:  # fmt: skip
    """Fine-tune ``pipe``'s UNet on ``images`` ``(N, 3, H, W)`` in [0, 1], each captioned as ``config`` says (and
    ``captions``, one per image, say what else it shows); the weights trained stay fp32, ``pipe`` is left unchanged."""
    if captions is not None and len(captions) != len(images):
        raise ValueError(f"`captions` must hold one caption per image: {len(captions)} for {len(images)} images")
    t0 = time.perf_counter()
    seed = generator.initial_seed()
    latents = encode_images(pipe, images)
    names = select_params(pipe.unet, "xattn")
    if config.params == "kv":
        names = [n for n in names if ".to_k." in n or ".to_v." in n]
    own = dict(pipe.unet.named_parameters())
    params = {n: torch.nn.Parameter(own[n].detach().float().clone()) for n in names}
    for p in (pipe.unet, pipe.text_encoder, pipe.vae):
        p.requires_grad_(False)
    opt = torch.optim.Adam(params.values(), lr=config.lr)
    sched = DDIMScheduler.from_config(pipe.scheduler.config)
    texts = [config.template.format(config.token)] * len(images) if captions is None else \
        [f"{c} {config.token}".strip() for c in captions]  # fmt: skip
    with torch.no_grad():
        conds = encode_prompts(pipe, texts)
    unet = TrainedUNet(pipe.unet, params)
    log = []
    for step in tqdm(range(config.steps), desc="fine-tuning", disable=not progress):
        x_t, t, target, idx = noisy_batch(sched, latents, config.batch_size, generator, return_index=True)
        pred = unet_eps(unet, x_t.to(pipe.unet.device, pipe.unet.dtype), t.to(pipe.unet.device), conds[idx])
        loss = torch.nn.functional.mse_loss(pred.float(), target.to(pred.device).float())
        if not torch.isfinite(loss):
            raise FloatingPointError(f"fine-tuning loss is {loss.item()} at step {step}; lower `lr` (now {config.lr})")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 10 == 0 or step == config.steps - 1:
            log.append({"step": step, "loss": loss.item()})
    tensors = {f"unet.{n}": p.detach().float().cpu().clone() for n, p in params.items()}
    return Edit(method="finetune", config=asdict(config), concepts=(config.token,), base_fingerprint=fingerprint(pipe),
                seed=seed, tensors=tensors, info={"seconds": time.perf_counter() - t0, "log": log},
                base_model=model_source(pipe), architecture=architecture(pipe))  # fmt: skip
