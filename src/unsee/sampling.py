"""unsee's own short denoising loop: DDIM with classifier-free guidance and an explicit generator.

It equals ``StableDiffusionPipeline.__call__`` (SD 1.x and 2.x, epsilon or v prediction) and
``StableDiffusionXLPipeline.__call__`` for the same seed and settings, and it can stop at an intermediate
step (:func:`sample_until`) to hand back ``z_t``, which erasure needs (the field's reference code gets
there by monkey-patching the pipeline instead).

The text conditioning ``cond`` is one tensor ``(B, L, D)`` for every model, so that erasers cat, expand,
chunk and index it alike. For SD 1.x/2.x it is the text encoder's hidden states. For SDXL
(:func:`is_xl`) it is packed (:func:`encode_prompts`): the two encoders' penultimate hidden states,
concatenated (``(B, 77, 768 + 1280 = 2048)``), followed by one more token that carries the pooled
embedding of ``text_encoder_2`` (its first 1280 entries; the rest zero). Every UNet call goes through
:func:`unet_eps`, which unpacks it into ``encoder_hidden_states`` and ``added_cond_kwargs`` and builds
SDXL's size conditioning from the latent's size, as the pipeline does by default.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline
from diffusers.utils.torch_utils import randn_tensor

Pipeline = StableDiffusionPipeline | StableDiffusionXLPipeline
"""The pipelines unsee samples, erases and attacks."""
PIXELS_PER_LATENT = 8
"""SDXL's size conditioning is in pixels: every SDXL VAE downsamples by 8 (``pipe.vae_scale_factor``)."""

EpsFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


Learned = Mapping[str, torch.Tensor]
"""Learned tokens: token string -> its ``(n_vectors, D)`` input embeddings (textual inversion)."""


def tokenize(tokenizer, prompts: Sequence[str]) -> torch.Tensor:
    """Token ids ``(B, L)`` of prompts, padded (and cut) to the tokenizer's length as SD does."""
    return tokenizer(list(prompts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids  # fmt: skip


def tokenize_learned(tokenizer, prompts: Sequence[str], learned: Learned) -> tuple[torch.Tensor, list[list[tuple[int, str]]]]:
    """Token ids of prompts that may hold learned tokens, and where each learned token's vectors go.

    A learned token becomes ``n_vectors`` placeholder ids (the tokenizer's BOS id, which no prompt
    position after the first uses), at the positions diffusers' ``load_textual_inversion`` gives
    ``"<tok>"``, ``"<tok>_1"``, ...; the rest of the prompt tokenizes exactly as without them.
    Returns ``(ids (B, L), [[(position, token), ...] per prompt])``.
    """
    if not learned:
        return tokenize(tokenizer, prompts), [[] for _ in prompts]
    pattern = re.compile("(" + "|".join(re.escape(t) for t in sorted(learned, key=len, reverse=True)) + ")")
    L, bos, eos = tokenizer.model_max_length, tokenizer.bos_token_id, tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    rows, where = [], []
    for prompt in prompts:
        ids, spots = [bos], []
        for part in pattern.split(prompt):
            if part in learned:
                for _ in range(learned[part].shape[0]):
                    spots.append((len(ids), part))
                    ids.append(bos)
            elif part.strip():
                ids += tokenizer(part.strip(), add_special_tokens=False).input_ids
        ids = ids[: L - 1] + [eos]
        spots = [(i, tok) for i, tok in spots if i < L - 1]
        rows.append(ids + [pad] * (L - len(ids)))
        where.append(spots)
    return torch.tensor(rows), where


def encode_text(tokenizer, text_encoder: torch.nn.Module, prompts: Sequence[str], learned: Learned | None = None) -> torch.Tensor:
    """Text-encoder hidden states ``(B, L, D)`` of prompts (:func:`tokenize`).

    ``learned`` tokens in the prompts enter as their learned input embeddings, through a forward
    hook on the input-embedding layer that lives only for this call (gradients flow to them).
    """
    if not learned or not any(t in p for p in prompts for t in learned):
        return text_encoder(tokenize(tokenizer, prompts).to(text_encoder.device))[0]
    ids, where = tokenize_learned(tokenizer, prompts, learned)
    layer = text_encoder.get_input_embeddings()

    def swap(_module, _inputs, out: torch.Tensor) -> torch.Tensor:
        out = out.clone()
        for b, spots in enumerate(where):
            seen: dict[str, int] = {}
            for pos, tok in spots:
                k = seen.get(tok, 0) % learned[tok].shape[0]
                seen[tok] = k + 1
                out[b, pos] = learned[tok][k].to(out.device, out.dtype)
        return out

    handle = layer.register_forward_hook(swap)
    try:
        return text_encoder(ids.to(text_encoder.device))[0]
    finally:
        handle.remove()


def is_xl(model: Pipeline | torch.nn.Module) -> bool:
    """Whether a pipeline (or its UNet) takes SDXL's added conditioning: pooled text embeddings and size ids."""
    unet = getattr(model, "unet", model)
    return getattr(unet.config, "addition_embed_type", None) == "text_time"


def encode_prompts(pipe: Pipeline, prompts: Sequence[str], learned: Learned | None = None) -> torch.Tensor:
    """The conditioning ``(B, L, D)`` the UNet takes for prompts (through :func:`unet_eps`).

    SD 1.x/2.x: :func:`encode_text` with the pipeline's tokenizer and text encoder. SDXL: as
    ``StableDiffusionXLPipeline.encode_prompt`` (penultimate hidden states of both encoders, concatenated,
    and ``text_encoder_2``'s pooled projection), packed as one tensor (see the module's docstring). With
    ``force_zeros_for_empty_prompt`` in the pipeline's config, the empty prompt encodes as zeros, which is
    what SDXL's pipeline gives as the unconditional input when no negative prompt is given.
    """
    if not is_xl(pipe):
        return encode_text(pipe.tokenizer, pipe.text_encoder, prompts, learned)
    if learned and any(t in p for p in prompts for t in learned):
        raise ValueError("learned tokens (textual inversion) are not supported on SDXL yet; use an SD 1.x/2.x model")
    hidden, pooled = [], None
    pairs = [(pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2)]
    for tokenizer, encoder in [(t, e) for t, e in pairs if e is not None]:
        out = encoder(tokenize(tokenizer, prompts).to(encoder.device), output_hidden_states=True)
        hidden.append(out.hidden_states[-2])
        pooled = out[0] if out[0].ndim == 2 else pooled  # the projection of the last encoder that has one
    h = torch.cat(hidden, dim=-1)
    if pooled is None or pooled.shape[-1] > h.shape[-1]:
        raise ValueError("this SDXL pipeline's text_encoder_2 gives no pooled projection that fits the packing; "
                         "it needs a CLIPTextModelWithProjection")  # fmt: skip
    extra = torch.zeros(h.shape[0], 1, h.shape[-1], dtype=h.dtype, device=h.device)
    extra[:, 0, : pooled.shape[-1]] = pooled.to(h.dtype)
    cond = torch.cat([h, extra], dim=1)
    if pipe.config.get("force_zeros_for_empty_prompt", False):
        empty = torch.tensor([p == "" for p in prompts], device=cond.device)
        cond = torch.where(empty[:, None, None], torch.zeros_like(cond), cond)
    return cond


def unet_eps(unet: torch.nn.Module, z: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    """The UNet's output at ``(z, t)`` for the conditioning ``cond`` of :func:`encode_prompts`: every UNet call of
    unsee goes through here.

    For SDXL it unpacks ``cond`` into the hidden states and the pooled embedding (``text_embeds``) and passes
    the size conditioning ``time_ids`` = (original size, crop top-left (0, 0), target size), both sizes being
    the latent's size in pixels: what ``StableDiffusionXLPipeline`` passes when sampling at that size.
    """
    if not is_xl(unet):
        return unet(z, t, encoder_hidden_states=cond).sample
    cfg = unet.config
    width = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
    h, w = (s * PIXELS_PER_LATENT for s in z.shape[-2:])
    time_ids = torch.tensor([[h, w, 0, 0, h, w]], dtype=cond.dtype, device=cond.device).expand(len(cond), 6)
    added = {"text_embeds": cond[:, -1, :width], "time_ids": time_ids}
    return unet(z, t, encoder_hidden_states=cond[:, :-1], added_cond_kwargs=added).sample


def check_sampling(steps: int, guidance_scale: float) -> None:
    """Refuse sampler settings that cannot mean anything, naming the parameter to fix."""
    if steps < 1:
        raise ValueError(f"`steps` must be at least 1 (got {steps}): DDIM takes at least one denoising step")
    if guidance_scale < 0:
        raise ValueError(f"`guidance_scale` must be at least 0 (got {guidance_scale}): up to 1 samples without "
                         "classifier-free guidance, SD's default is 7.5")  # fmt: skip


def ddim(pipe: Pipeline, steps: int) -> DDIMScheduler:
    """A fresh DDIM scheduler from the pipeline's config with ``steps`` timesteps set."""
    sched = DDIMScheduler.from_config(pipe.scheduler.config)
    sched.set_timesteps(steps, device=pipe.unet.device)
    return sched


def latent_shape(pipe: Pipeline, batch: int, height: int | None = None, width: int | None = None):
    f = pipe.vae_scale_factor
    h = height or pipe.unet.config.sample_size * f
    w = width or pipe.unet.config.sample_size * f
    return (batch, pipe.unet.config.in_channels, h // f, w // f)


def initial_latents(
    pipe: Pipeline, batch: int, generator: torch.Generator | None, height: int | None = None,
    width: int | None = None,
) -> torch.Tensor:  # fmt: skip
    """z_T: Gaussian latents drawn from ``generator`` (on the generator's device, as diffusers does)."""
    z = randn_tensor(latent_shape(pipe, batch, height, width), generator=generator, device=pipe.unet.device,
                     dtype=pipe.unet.dtype)  # fmt: skip
    return z * ddim(pipe, 1).init_noise_sigma


def guided_eps(
    unet: torch.nn.Module, z: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor | None,
    guidance_scale: float,
) -> torch.Tensor:  # fmt: skip
    """Classifier-free guided noise prediction: eps(z, "") + g (eps(z, c) - eps(z, ""))."""
    if uncond is None or guidance_scale <= 1.0:
        return unet_eps(unet, z, t, cond)
    both = unet_eps(unet, torch.cat([z, z]), t, torch.cat([uncond, cond]))
    e_u, e_c = both.chunk(2)
    return e_u + guidance_scale * (e_c - e_u)


EpsHook = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, slice], torch.Tensor]
"""``eps_hook(z_t, t, eps, rows) -> eps``: changes the guided noise prediction before the DDIM step."""
StepHook = Callable[[torch.Tensor, torch.Tensor, slice], torch.Tensor]
"""``step_hook(z_prev, t, rows) -> z_prev``: changes the latent right after the DDIM step from ``t``."""


def ddim_step(sched: DDIMScheduler, out: torch.Tensor, t: torch.Tensor, z: torch.Tensor, *, eta: float = 0.0,
              noise: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """One DDIM step from ``z`` at ``t`` (Song et al. 2021, eq. 12); ``noise`` is the variance noise when ``eta > 0``.

    ``eta = 0`` is diffusers' own step. ``eta > 0`` follows diffusers' formula with ``|1 - a_prev - sigma^2|``
    under the square root: the noise-based probe of Lu et al. (NeurIPS 2025) sweeps eta past 1, where the
    plain formula takes the root of a negative number, and its reference scheduler takes the magnitude.
    """
    res = sched.step(out, t, z)
    if eta == 0:
        return res.prev_sample
    if noise is None:
        raise ValueError("`noise` is needed when `eta` > 0: the variance noise of the step")
    t_i = int(t)
    prev = t_i - sched.config.num_train_timesteps // sched.num_inference_steps
    a_t = sched.alphas_cumprod[t_i]
    a_prev = sched.alphas_cumprod[prev] if prev >= 0 else sched.final_alpha_cumprod
    x0, kind = res.pred_original_sample, sched.config.prediction_type
    if kind == "epsilon":
        eps = out
    elif kind == "v_prediction":
        eps = a_t**0.5 * out + (1 - a_t) ** 0.5 * z
    else:
        eps = (z - a_t**0.5 * x0) / (1 - a_t) ** 0.5
    std = eta * sched._get_variance(t_i, prev) ** 0.5
    return a_prev**0.5 * x0 + (1 - a_prev - std**2).abs() ** 0.5 * eps + std * noise


def denoise(
    unet: torch.nn.Module, sched: DDIMScheduler, z: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor | None,
    guidance_scale: float, timesteps: torch.Tensor, *, eta: float = 0.0, variance_scale: float = 1.0,
    noise_generator: torch.Generator | None = None, eps_hook: EpsHook | None = None, step_hook: StepHook | None = None,
    rows: slice = slice(None),
) -> torch.Tensor:  # fmt: skip
    """DDIM steps over ``timesteps`` from z (eta 0 unless given; see :func:`sample` for the rest)."""
    if eta > 0 and noise_generator is None:
        raise ValueError(f"`noise_generator` is needed when `eta` > 0 (got eta={eta}): every random draw takes a generator")
    for t in timesteps:
        eps = guided_eps(unet, sched.scale_model_input(z, t), t, cond, uncond, guidance_scale)
        if eps_hook is not None:
            eps = eps_hook(z, t, eps, rows)
        noise = None
        if eta > 0:
            noise = variance_scale * randn_tensor(z.shape, generator=noise_generator, device=z.device, dtype=z.dtype)
        z = ddim_step(sched, eps, t, z, eta=eta, noise=noise)
        if step_hook is not None:
            z = step_hook(z, t, rows)
    return z


@dataclass(frozen=True)
class PartialSample:
    """z_t after ``index`` of ``steps`` DDIM steps, and the timestep t it sits at."""

    z_t: torch.Tensor
    t: torch.Tensor
    index: int
    steps: int


def sample_until(
    pipe: Pipeline,
    cond: torch.Tensor,
    until: int,
    *,
    steps: int,
    guidance_scale: float,
    generator: torch.Generator | None = None,
    latents: torch.Tensor | None = None,
    uncond: torch.Tensor | None = None,
    unet: torch.nn.Module | None = None,
    height: int | None = None,
    width: int | None = None,
) -> PartialSample:
    """Run ``until`` of ``steps`` DDIM steps (eta 0) from z_T and return z_t with its timestep.

    ``unet`` defaults to the pipeline's; erasure passes the model being trained. ``until = 0``
    returns z_T itself at the first timestep. ``height``/``width`` (pixels) size a z_T drawn here.
    """
    unet = unet or pipe.unet
    check_sampling(steps, guidance_scale)
    if not 0 <= until < steps:
        raise ValueError(f"until must be in [0, {steps}), got {until}")
    sched = ddim(pipe, steps)
    z = latents if latents is not None else initial_latents(pipe, cond.shape[0], generator, height, width)
    if uncond is None and guidance_scale > 1.0:
        uncond = encode_prompts(pipe, [""]).expand(cond.shape[0], -1, -1)
    z = denoise(unet, sched, z, cond, uncond, guidance_scale, sched.timesteps[:until])
    return PartialSample(z_t=z, t=sched.timesteps[until], index=until, steps=steps)


def decode(pipe: Pipeline, z: torch.Tensor, *, grad: bool = False) -> torch.Tensor:
    """Latents to images in [0, 1], ``(B, 3, H, W)`` float32; ``grad=True`` keeps the graph (classifier guidance).

    For SDXL as its pipeline decodes: latents un-normalised by the VAE's ``latents_mean``/``latents_std`` when its
    config has them, and an fp16 VAE marked ``force_upcast`` (SDXL's overflows in fp16) run in fp32 for the call.
    """
    vae, cfg = pipe.vae, pipe.vae.config
    if not is_xl(pipe):
        with torch.set_grad_enabled(grad):
            x = vae.decode(z / cfg.scaling_factor).sample
        return (x.float() / 2 + 0.5).clamp(0, 1)
    upcast = vae.dtype == torch.float16 and cfg.get("force_upcast", False)
    if upcast:
        vae.to(dtype=torch.float32)
    z = z.to(vae.dtype)
    if cfg.get("latents_mean") is not None and cfg.get("latents_std") is not None:
        mean = torch.tensor(cfg.latents_mean).view(1, -1, 1, 1).to(z.device, z.dtype)
        std = torch.tensor(cfg.latents_std).view(1, -1, 1, 1).to(z.device, z.dtype)
        z = z * std / cfg.scaling_factor + mean
    else:
        z = z / cfg.scaling_factor
    try:
        with torch.set_grad_enabled(grad):
            x = vae.decode(z).sample
    finally:
        if upcast:
            vae.to(dtype=torch.float16)
    return (x.float() / 2 + 0.5).clamp(0, 1)


@torch.no_grad()
def sample(
    pipe: Pipeline,
    prompts: Sequence[str],
    *,
    steps: int = 50,
    guidance_scale: float = 7.5,
    generator: torch.Generator | None = None,
    latents: torch.Tensor | None = None,
    negative_prompt: str = "",
    batch_size: int = 64,
    return_latents: bool = False,
    learned: Learned | None = None,
    eta: float = 0.0,
    variance_scale: float = 1.0,
    noise_generator: torch.Generator | None = None,
    start_index: int = 0,
    stop_index: int | None = None,
    eps_hook: EpsHook | None = None,
    step_hook: StepHook | None = None,
    height: int | None = None,
    width: int | None = None,
) -> torch.Tensor:
    """Generate one image per prompt as ``(B, 3, H, W)`` in [0, 1] (or the final latents).

    Prompts go through in chunks of ``batch_size``; z_T is drawn once for all prompts, so the
    result does not depend on the chunking. ``learned`` tokens (textual inversion) may appear in prompts.

    What the probes beyond the text channel change (the defaults leave plain DDIM as it is):
    ``eta > 0`` adds ``eta * sigma_t * variance_scale * noise`` at every step, the noise drawn from
    ``noise_generator`` chunk by chunk (so with eta > 0 the images depend on ``batch_size``);
    ``start_index``/``stop_index`` run only ``timesteps[start_index:stop_index]`` of the ``steps``
    (``latents`` is then z at ``timesteps[start_index]``); ``eps_hook(z_t, t, eps, rows)`` changes the
    noise prediction and ``step_hook(z_prev, t, rows)`` the latent after each step, ``rows`` being the
    chunk's slice of ``prompts``. Hooks run under ``no_grad``; one that needs gradients enables them.
    ``height``/``width``: the image size in pixels (the model's default size unless given), as diffusers takes them.
    """
    if len(prompts) == 0:
        raise ValueError("`prompts` is empty: pass at least one prompt to sample")
    check_sampling(steps, guidance_scale)
    stop = steps if stop_index is None else stop_index
    if not 0 <= start_index < stop <= steps:
        raise ValueError(f"`start_index` and `stop_index` must satisfy 0 <= start_index < stop_index <= steps ({steps}), "
                         f"got {start_index} and {stop_index}")  # fmt: skip
    z_all = latents if latents is not None else initial_latents(pipe, len(prompts), generator, height, width)
    neg = encode_prompts(pipe, [negative_prompt])
    out = []
    for i in range(0, len(prompts), batch_size):
        chunk = list(prompts[i : i + batch_size])
        cond = encode_prompts(pipe, chunk, learned)
        sched = ddim(pipe, steps)
        uncond = neg.expand(len(chunk), -1, -1)
        z = denoise(pipe.unet, sched, z_all[i : i + len(chunk)], cond, uncond, guidance_scale,
                    sched.timesteps[start_index:stop], eta=eta, variance_scale=variance_scale,
                    noise_generator=noise_generator, eps_hook=eps_hook, step_hook=step_hook,
                    rows=slice(i, i + len(chunk)))  # fmt: skip
        out.append(z if return_latents else decode(pipe, z))
    return torch.cat(out)
