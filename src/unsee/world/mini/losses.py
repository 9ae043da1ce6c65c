"""The UNet stage's objective: min-SNR weights, the prediction target, and the loss of a batch."""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler

from unsee.sampling import encode_text
from unsee.world.mini.components import _default_scheduler


def min_snr_weights(gamma: float, scheduler: DDIMScheduler | None = None, snr_floor: float = 1.0) -> torch.Tensor:
    """Per-timestep loss weights of min-SNR-gamma (Hang et al. 2023) for the scheduler's prediction type.

    Epsilon: min(SNR, gamma) / SNR. v: min(max(SNR, f), gamma) / (SNR + 1) with f = ``snr_floor``,
    i.e. the same weights where SNR >= f, with the SNR floored below (f = 1: the "truncated SNR"
    of Salimans & Ho 2022).
    Min-SNR's own v weight, min(SNR, gamma) / (SNR + 1), goes to 0 as SNR -> 0: it would never
    train t = T, the one step that must take the image from the prompt alone.
    """
    scheduler = scheduler or _default_scheduler()
    alphas = scheduler.alphas_cumprod  # float32, as the weights of earlier runs
    snr = alphas / (1 - alphas)
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        if bool((snr == 0).any()):
            raise ValueError("epsilon prediction has no loss weight at SNR 0; use v_prediction with zero_terminal_snr")
        return torch.clamp(snr, max=gamma) / snr
    if kind == "v_prediction":
        if not 0 < snr_floor <= gamma:
            raise ValueError(f"snr_floor must be in (0, gamma={gamma}], got {snr_floor}")
        return torch.clamp(snr, min=snr_floor, max=gamma) / (snr + 1)
    raise ValueError(f"unknown prediction_type {kind!r}; use 'epsilon' or 'v_prediction'")


def training_target(x0: torch.Tensor, noise: torch.Tensor, alpha_bar: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """What the UNet learns to output at x_t = sqrt(a) x0 + sqrt(1 - a) noise: noise, or v = sqrt(a) noise - sqrt(1 - a) x0."""
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * x0
    raise ValueError(f"unknown prediction_type {prediction_type!r}; use 'epsilon' or 'v_prediction'")


def diffusion_loss(
    comps: dict,
    images: torch.Tensor,
    captions: list[str],
    weight: torch.Tensor,
    generator: torch.Generator,
    t_sampling: str = "uniform",
    text_grad_min_snr: float = 0.0,
) -> torch.Tensor:
    """Min-SNR-weighted MSE on a batch, against the target of ``comps["scheduler"]``'s prediction
    type and on its noise schedule; all noise drawn on the CPU from ``generator``.

    ``t_sampling="weighted"`` draws t with probability w(t) / sum(w) and weighs every sample
    by mean(w): the same objective in expectation as uniform t with weights w(t). Samples with
    SNR(t) < ``text_grad_min_snr`` see the same text features but pass no gradient into the encoder.
    """
    if t_sampling not in ("uniform", "weighted"):
        raise ValueError(f"unknown t_sampling {t_sampling!r}; use 'uniform' or 'weighted'")
    vae, unet, sched = comps["vae"], comps["unet"], comps["scheduler"]
    device = unet.device
    with torch.no_grad():
        post = vae.encode(images.to(device)).latent_dist
        x0 = post.mean + post.std * torch.randn(post.mean.shape, generator=generator).to(device)
        x0 = x0 * vae.config.scaling_factor
    w = weight.cpu()
    if t_sampling == "weighted":
        t = torch.multinomial(w, x0.shape[0], replacement=True, generator=generator)
        w_t = w.mean().expand(x0.shape[0])
    else:
        t = torch.randint(0, len(w), (x0.shape[0],), generator=generator)
        w_t = w[t]
    noise = torch.randn(x0.shape, generator=generator).to(device)
    a = sched.alphas_cumprod[t].view(-1, 1, 1, 1).to(device)
    xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
    target = training_target(x0, noise, a, sched.config.prediction_type)
    cond = encode_text(comps["tokenizer"], comps["text_encoder"], captions)
    if text_grad_min_snr > 0:
        keep = (a / (1 - a) >= text_grad_min_snr).to(cond.dtype).view(-1, 1, 1)
        cond = keep * cond + (1 - keep) * cond.detach()
    pred = unet(xt, t.to(device), cond).sample
    return (w_t.to(device) * ((pred - target) ** 2).mean(dim=(1, 2, 3))).mean()
