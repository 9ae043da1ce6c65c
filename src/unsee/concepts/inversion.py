"""Textual inversion, equation (8): learn a new token's input embeddings from images of a concept.

p* = argmin_p E_{x in D_c, t, eps} || eps_theta(sqrt(abar_t) E(x) + sqrt(1 - abar_t) eps, t, prompt(p)) - eps ||^2

Only the token's ``n_vectors`` embeddings train (fp32, Adam); the UNet, text encoder and VAE stay
frozen. With an ``edit`` the model learned through is the erased one: that is the inversion attack,
equation (10). v-prediction models train against v, as they were trained.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline
from tqdm.auto import tqdm

from unsee.checkpoints import save_atomic
from unsee.concepts.learned import LearnedConcept, check_new_token
from unsee.edits import Edit
from unsee.models import fingerprint
from unsee.sampling import encode_prompts, latent_shape, unet_eps

TEMPLATES: tuple[str, ...] = ("{}", "a {}", "a picture of {}", "an image of {}", "a photo of {}")


@dataclass
class InversionConfig:
    """Settings of textual inversion (Concept Inversion's, scaled to the model by ``steps``)."""

    token: str = "<concept>"
    n_vectors: int = 1
    """Input vectors the token stands for (diffusers names the extra ones ``<tok>_1``, ...)."""
    init_word: str | None = None
    """Start every vector at this word's embedding; None: the mean of the vocabulary's embeddings."""
    steps: int = 400
    lr: float = 5e-3
    batch_size: int = 8
    templates: tuple[str, ...] = TEMPLATES
    """Prompts the token is trained in; ``{}`` is the token (with ``captions``: the image's caption, then the token)."""

    def __post_init__(self) -> None:
        for f in ("n_vectors", "steps", "batch_size"):
            if getattr(self, f) < 1:
                raise ValueError(f"`{f}` must be at least 1, got {getattr(self, f)}")
        if self.lr <= 0:
            raise ValueError(f"`lr` must be positive, got {self.lr}")
        if not self.templates or any("{}" not in t for t in self.templates):
            raise ValueError(f"every one of `templates` must hold '{{}}' where the token goes, got {list(self.templates)}")

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))


@dataclass
class InversionRun:
    """Where a long inversion checkpoints, and whether it resumes."""

    dir: Path | None = None
    checkpoint_every: int = 100
    resume: bool = False
    progress: bool = True


@torch.no_grad()
def encode_images(pipe: StableDiffusionPipeline, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """The VAE's latent means of images in [0, 1] (scaled as the UNet sees them), on the CPU: the noise and
    timesteps of training draws come from CPU generators, and the batches go to the model's device."""
    h, w = images.shape[-2:]
    _, _, lh, lw = latent_shape(pipe, 1)
    f = pipe.vae_scale_factor
    if (h, w) != (lh * f, lw * f):
        raise ValueError(f"images are {w}x{h} but the model draws {lw * f}x{lh * f}; resize them to the model's size")
    dev, dtype = pipe.vae.device, pipe.vae.dtype
    out = [pipe.vae.encode((images[i : i + batch_size] * 2 - 1).to(dev, dtype)).latent_dist.mean
           for i in range(0, len(images), batch_size)]  # fmt: skip
    return torch.cat(out).float().cpu() * pipe.vae.config.scaling_factor


def _initial_vectors(pipe: StableDiffusionPipeline, cfg: InversionConfig) -> torch.Tensor:
    table = pipe.text_encoder.get_input_embeddings().weight.detach().float()
    if cfg.init_word is None:
        v = table.mean(0)
    else:
        ids = pipe.tokenizer(cfg.init_word, add_special_tokens=False).input_ids
        if len(ids) != 1:
            raise ValueError(f"`init_word` {cfg.init_word!r} is {len(ids)} tokens to this tokenizer; pass a single known word")
        v = table[ids[0]]
    return v.expand(cfg.n_vectors, -1).clone().cpu()


def denoising_target(sched: DDIMScheduler, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What the UNet predicts at (x_t, t): the noise, or v for v-prediction models."""
    if sched.config.prediction_type == "v_prediction":
        return sched.get_velocity(x0, noise, t)
    if sched.config.prediction_type != "epsilon":
        raise ValueError(f"unsupported prediction_type {sched.config.prediction_type!r}; unsee supports epsilon and v_prediction")
    return noise


def noisy_batch(sched: DDIMScheduler, latents: torch.Tensor, batch_size: int, generator: torch.Generator,
                return_index: bool = False) -> tuple[torch.Tensor, ...]:  # fmt: skip
    """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps for a batch of ``latents`` at uniform t; returns (x_t, t, target)
    and, with ``return_index``, which latents were drawn."""
    idx = torch.randint(len(latents), (batch_size,), generator=generator)
    t = torch.randint(len(sched.alphas_cumprod), (batch_size,), generator=generator)
    x0 = latents[idx]
    noise = torch.randn(x0.shape, generator=generator)
    out = (sched.add_noise(x0, noise, t), t, denoising_target(sched, x0, noise, t))
    return (*out, idx) if return_index else out


def denoising_loss(pipe: StableDiffusionPipeline, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
                   target: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """|| eps_theta(x_t, t, cond) - target ||^2, the loss of equations (8) and (10)."""
    dev = pipe.unet.device
    pred = unet_eps(pipe.unet, x_t.to(dev, pipe.unet.dtype), t.to(dev), cond)
    return torch.nn.functional.mse_loss(pred.float(), target.to(dev))


def invert(
    pipe: StableDiffusionPipeline,
    images: torch.Tensor,
    cfg: InversionConfig,
    generator: torch.Generator | None = None,
    *,
    edit: Edit | None = None,
    run: InversionRun | None = None,
    force: bool = False,
    captions: Sequence[str] | None = None,
) -> LearnedConcept:
    """Learn ``cfg.token`` from ``images`` ``(N, 3, H, W)`` in [0, 1] through ``pipe`` (with ``edit`` applied).

    ``captions`` (optional, one per image) say what else each image shows, e.g. ``"a red circle"``; the
    token is trained after them ("a red circle <frame>"), so it learns what the captions do not say and
    keeps working beside other words. ``pipe`` is left unchanged; ``force`` applies an edit made for
    another base model.
    """
    if images.ndim != 4 or images.shape[1] != 3 or len(images) == 0:
        raise ValueError(f"`images` must be a non-empty (N, 3, H, W) batch, got shape {tuple(images.shape)}")
    if captions is not None and len(captions) != len(images):
        raise ValueError(f"`captions` must hold one caption per image: {len(captions)} for {len(images)} images")
    check_new_token(pipe.tokenizer, cfg.token)
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    run = run or InversionRun(progress=False)
    seed = g.initial_seed()
    base_fp = fingerprint(pipe)
    latents = encode_images(pipe, images)
    vectors = torch.nn.Parameter(_initial_vectors(pipe, cfg).to(pipe.text_encoder.device))
    opt = torch.optim.Adam([vectors], lr=cfg.lr)
    sched = DDIMScheduler.from_config(pipe.scheduler.config)
    state = {"step": 0, "log": [], "elapsed": 0.0}
    ck_path = None if run.dir is None else Path(run.dir) / "checkpoint.pt"
    if run.resume:
        if ck_path is None or not ck_path.exists():
            raise FileNotFoundError(f"no checkpoint at {ck_path}; start without `resume=True`")
        ck = torch.load(ck_path, map_location="cpu", weights_only=True)
        same = {k: v for k, v in ck["config"].items() if k != "steps"} == {k: v for k, v in cfg.to_dict().items() if k != "steps"}
        if not same or ck["base_fingerprint"] != base_fp or ck["edit"] != _edit_meta(edit):  # steps may grow on resume
            raise ValueError(f"checkpoint {ck_path} is for another inversion (settings, model or edit); use a new `run.dir`")
        with torch.no_grad():
            vectors.copy_(ck["vectors"])
        opt.load_state_dict(ck["opt"])
        g.set_state(ck["generator"])
        state = {k: ck[k] for k in ("step", "log", "elapsed")}
    for p in (pipe.unet, pipe.text_encoder, pipe.vae):
        p.requires_grad_(False)
    bar = tqdm(total=cfg.steps, initial=state["step"], desc=f"inverting {cfg.token}", disable=not run.progress)
    t0 = time.perf_counter() - state["elapsed"]
    ctx = edit.applied(pipe, force=force) if edit is not None else nullcontext()
    with ctx:
        model_fp = fingerprint(pipe) if edit is not None else base_fp
        while state["step"] < cfg.steps:
            x_t, t, target, idx = noisy_batch(sched, latents, cfg.batch_size, g, return_index=True)
            tpl = torch.randint(len(cfg.templates), (cfg.batch_size,), generator=g)
            words = [cfg.token if captions is None else f"{captions[int(i)]} {cfg.token}".strip() for i in idx]
            prompts = [cfg.templates[int(i)].format(w) for i, w in zip(tpl, words)]
            cond = encode_prompts(pipe, prompts, {cfg.token: vectors})
            loss = denoising_loss(pipe, x_t, t, cond, target)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"inversion loss is {loss.item()} at step {state['step']}; lower `lr` (now {cfg.lr})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            state["step"] += 1
            if state["step"] % 10 == 0 or state["step"] == cfg.steps:
                state["log"].append({"step": state["step"], "loss": loss.item()})
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
            state["elapsed"] = time.perf_counter() - t0
            if ck_path is not None and state["step"] % run.checkpoint_every == 0:
                save_atomic({"config": cfg.to_dict(), "base_fingerprint": base_fp, "edit": _edit_meta(edit),
                             "vectors": vectors.detach().cpu(), "opt": opt.state_dict(), "generator": g.get_state(),
                             **state}, ck_path)  # fmt: skip
    bar.close()
    settings = cfg.to_dict() | {"seed": seed, "images": len(images), "captions": captions is not None}
    return LearnedConcept(token=cfg.token, embeddings=vectors.detach().cpu().float().clone(), base_fingerprint=base_fp,
                          model_fingerprint=model_fp, settings=settings, edit=_edit_meta(edit),
                          info={"seconds": state["elapsed"], "log": state["log"]})  # fmt: skip


def _edit_meta(edit: Edit | None) -> dict[str, Any] | None:
    if edit is None:
        return None
    return {"method": edit.method, "concepts": list(edit.concepts), "digest": edit.digest}
