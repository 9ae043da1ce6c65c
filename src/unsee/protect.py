"""Anti-personalisation: perturb a person's images so that a personalisation trained on them learns something else.

A bounded perturbation ``delta`` (``||delta||_inf <= eps``, pixels kept in [0, 1]) is found by projected signed
gradient steps on the model's denoising loss, as Anti-DreamBooth (Van Le et al., ICCV 2023) and Mist (Liang et al.,
2023) do:

- ``targeted``: *minimise* ``semantic * E_{t, eps} ||eps_theta(z_t(x + delta), t, c_target) - eps||^2 +
  textural * ||E(x + delta) - E(x_target)||^2``: the images are best explained by the target concept's prompt, and
  their latents sit on those of the model's own images of the target (Mist's fused loss; ``E`` the VAE encoder,
  ``x_target`` drawn by the model from the target prompt). A textual inversion or fine-tune on them then has the
  target to learn instead of the identity; with an *alpha* concept (:mod:`unsee.impact.alpha`) as the target, the
  talk's Idea 5, what is learned takes over whatever it is composed with;
- ``untargeted``: *maximise* the denoising loss under ``prompt`` (Anti-DreamBooth's FSMG against the fixed model);
- ``noise``: uniform noise in the same ball, the control at the same budget.

Every draw (timesteps, noise, the uniform start) comes from the caller's ``torch.Generator``, so the same seed
gives the same protected images. Gradients flow through the VAE encoder: the perturbation lives in pixels. Steps
follow the sign of a momentum of the normalised gradients (MI-FGSM): a denoising loss is a noisy estimate, and the
sign of one draw's gradient is close to a coin toss per pixel.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline
from tqdm.auto import tqdm

from unsee.concepts.inversion import denoising_loss, denoising_target
from unsee.models import fingerprint, sampling_defaults
from unsee.sampling import encode_prompts, latent_shape, sample, unet_eps

Mode = Literal["targeted", "untargeted", "noise"]
MODES: tuple[str, ...] = ("targeted", "untargeted", "noise")


@dataclass(frozen=True)
class ProtectConfig:
    """Settings of a protection.

    ``eps``: the l_inf budget in [0, 1] pixel units (Anti-DreamBooth's 8/255 by default, 0.05 in its paper's
    stronger setting); ``step_size``: each PGD step (Anti-DreamBooth: 0.005 ~ 1.3/255; on the mini model, steps of
    2/255 raised the targeted loss they descend, from the noise of its estimate, and 0.5/255 lowered it); ``steps`` PGD steps,
    each on ``batch_size`` (image, t, noise) draws of the whole set; ``target``: the prompt the targeted mode
    pulls the images towards; ``prompt``: what the untargeted mode conditions on.
    """

    mode: Mode = "targeted"
    target: str | None = None
    prompt: str = ""
    eps: float = 8 / 255
    step_size: float = 0.5 / 255
    steps: int = 100
    batch_size: int = 8
    semantic: float = 1.0
    textural: float = 1.0
    momentum: float = 0.9
    surrogate_steps: int = 0
    """Anti-DreamBooth's ASPL, turned on textual inversion: before each PGD step the surrogate token takes this many
    inversion steps (Adam, ``surrogate_lr``, warm-started) on the images as protected so far, and the PGD step also
    *ascends* that token's denoising loss, weighted ``surrogate``. The images then stop being explained by what a
    personaliser learns from them, not only by the fixed model's prompts. 0: off."""
    surrogate: float = 1.0
    surrogate_lr: float = 5e-3

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown `mode` {self.mode!r}; choose one of {', '.join(MODES)}")
        if not 0 < self.eps <= 1:
            raise ValueError(f"`eps` must be in (0, 1] (got {self.eps}): the l_inf budget in [0, 1] pixel units, e.g. 8/255")
        if self.mode == "targeted" and not self.target:
            raise ValueError("the targeted protection needs `target`: the prompt of the concept to learn instead")
        if self.mode != "noise":
            if self.steps < 1 or self.batch_size < 1:
                raise ValueError(f"`steps` and `batch_size` must be at least 1 (got {self.steps}, {self.batch_size})")
            if self.step_size <= 0:
                raise ValueError(f"`step_size` must be positive (got {self.step_size})")
            if self.semantic < 0 or self.textural < 0 or not 0 <= self.momentum < 1:
                raise ValueError("`semantic` and `textural` must be >= 0 and `momentum` in [0, 1)")
            if self.surrogate_steps < 0:
                raise ValueError(f"`surrogate_steps` must be >= 0 (got {self.surrogate_steps}); 0 turns the surrogate off")
            if self.surrogate < 0 or self.surrogate_lr <= 0:
                raise ValueError(f"`surrogate` must be >= 0 and `surrogate_lr` positive (got {self.surrogate}, "
                                 f"{self.surrogate_lr})")  # fmt: skip


@dataclass(frozen=True)
class Protected:
    """Protected images ``(N, 3, H, W)`` in [0, 1] and how they were made."""

    images: torch.Tensor = field(repr=False)
    config: ProtectConfig
    seed: int
    model_fingerprint: str
    linf: float
    seconds: float
    log: list[dict] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict:
        return {"config": asdict(self.config), "seed": self.seed, "model_fingerprint": self.model_fingerprint,
                "linf": self.linf, "seconds": self.seconds, "images": len(self.images), "log": self.log}  # fmt: skip


def check_images(pipe: StableDiffusionPipeline, images: torch.Tensor) -> None:
    """One line naming the fix for images the model cannot take."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3 or len(images) == 0:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"`images` must be a non-empty (N, 3, H, W) RGB batch, got {shape}; convert them to RGB")
    _, _, lh, lw = latent_shape(pipe, 1)
    f = pipe.vae_scale_factor
    if tuple(images.shape[-2:]) != (lh * f, lw * f):
        raise ValueError(f"`images` are {images.shape[-1]}x{images.shape[-2]} but the model draws {lw * f}x{lh * f}; "
                         "resize them to the model's size")  # fmt: skip
    if images.min() < 0 or images.max() > 1:
        raise ValueError("`images` must hold values in [0, 1]; divide 8-bit images by 255")


def _latents(pipe: StableDiffusionPipeline, x: torch.Tensor) -> torch.Tensor:
    """The VAE's latent means of ``x`` in [0, 1], differentiable, scaled as the UNet sees them."""
    dev, dt = pipe.vae.device, pipe.vae.dtype
    return pipe.vae.encode((x * 2 - 1).to(dev, dt)).latent_dist.mean.float() * pipe.vae.config.scaling_factor


def protect(
    pipe: StableDiffusionPipeline,
    images: torch.Tensor,
    config: ProtectConfig,
    generator: torch.Generator,
    *,
    target_images: torch.Tensor | None = None,
    prompts: Sequence[str] | None = None,
    captions: Sequence[str] | None = None,
    progress: bool = False,
) -> Protected:
    """Protect ``images`` ``(N, 3, H, W)`` in [0, 1] against personalisation on ``pipe`` (see the module).

    ``target_images`` (one per image) are what the textural term pulls the latents towards; by default the model
    draws them from ``config.target`` with ``generator`` at its sampling defaults. ``prompts`` (one per image)
    replace ``config.target`` (targeted) or ``config.prompt`` (untargeted) in the semantic term: a personalisation
    that trains its token beside captions ("a red <id>") is best answered by the captions with the target's word in
    the token's place ("a red circle"). ``captions`` (one per image, as :func:`unsee.concepts.inversion.invert`
    takes them) are what the surrogate token is trained beside (``config.surrogate_steps``)."""
    check_images(pipe, images)
    for name, v in (("prompts", prompts), ("captions", captions)):
        if v is not None and len(v) != len(images):
            raise ValueError(f"`{name}` holds {len(v)} entries for {len(images)} images; pass one per image")
    t0 = time.perf_counter()
    seed = generator.initial_seed()
    x = images.detach().float().cpu()
    eps = config.eps
    if config.mode == "noise":
        delta = (torch.rand(x.shape, generator=generator) * 2 - 1) * eps
        out = (x + delta).clamp(0, 1)
        return Protected(out, config, seed, fingerprint(pipe), float((out - x).abs().max()), time.perf_counter() - t0)
    for p in (pipe.unet, pipe.text_encoder, pipe.vae):
        p.requires_grad_(False)
    sched = DDIMScheduler.from_config(pipe.scheduler.config)
    targeted = config.mode == "targeted"
    with torch.no_grad():
        # one conditioning for every image, or each image's own
        cond = encode_prompts(pipe, list(prompts) if prompts is not None else [config.target if targeted else config.prompt])
        z_target = None
        if targeted and config.textural > 0:
            if target_images is None:
                d = sampling_defaults(pipe)
                target_images = sample(pipe, [config.target] * len(x), steps=d.steps, guidance_scale=d.guidance_scale,
                                       generator=generator)  # fmt: skip
            check_images(pipe, target_images)
            if len(target_images) != len(x):
                raise ValueError(f"`target_images` holds {len(target_images)} images for {len(x)}; pass one per image")
            z_target = _latents(pipe, target_images.float()).cpu()
    delta = torch.zeros_like(x)
    velocity = torch.zeros_like(x)
    log = []
    dev = pipe.unet.device
    sur = _Surrogate(pipe, config, captions, generator) if config.surrogate_steps > 0 else None
    for step in tqdm(range(config.steps), desc=f"protecting ({config.mode})", disable=not progress):
        if sur is not None:
            sur.learn(sched, (x + delta).clamp(0, 1))
        idx = torch.randint(len(x), (config.batch_size,), generator=generator)
        t = torch.randint(len(sched.alphas_cumprod), (config.batch_size,), generator=generator)
        d = delta[idx].clone().requires_grad_(True)
        z0 = _latents(pipe, (x[idx] + d).clamp(0, 1))
        noise = torch.randn(z0.shape, generator=generator).to(z0.device)
        z_t = sched.add_noise(z0, noise, t.to(z0.device))
        target = denoising_target(sched, z0, noise, t.to(z0.device))
        c = cond[idx.to(cond.device)] if prompts is not None else cond.expand(len(idx), -1, -1)
        pred = unet_eps(pipe.unet, z_t.to(dev, pipe.unet.dtype), t.to(dev), c)
        sem = torch.nn.functional.mse_loss(pred.float(), target.to(dev).float())
        # descend towards the target; ascend the loss otherwise
        loss = config.semantic * sem if targeted else -sem
        if z_target is not None:
            loss = loss + config.textural * torch.nn.functional.mse_loss(z0, z_target[idx].to(z0.device))
        if sur is not None:  # ascend what the personaliser's token, as learned so far, explains of these images
            loss = loss - config.surrogate * sur.loss(z_t, t, target, idx)
        (grad,) = torch.autograd.grad(loss, d)
        with torch.no_grad():
            g = grad.cpu() / grad.abs().flatten(1).mean(1).clamp_min(1e-12).view(-1, 1, 1, 1)
            full = torch.zeros_like(delta).index_add_(0, idx, g)
            drawn = torch.zeros(len(x), dtype=torch.bool)
            drawn[idx] = True
            velocity[drawn] = config.momentum * velocity[drawn] + full[drawn]
            delta[drawn] = (delta[drawn] - config.step_size * velocity[drawn].sign()).clamp(-eps, eps)
            delta = (x + delta).clamp(0, 1) - x  # valid pixels
        if step % 10 == 0 or step == config.steps - 1:
            log.append({"step": step, "loss": loss.item(), "semantic": sem.item()})
    out = (x + delta).clamp(0, 1)
    return Protected(out, config, seed, fingerprint(pipe), float((out - x).abs().max()), time.perf_counter() - t0, log)


class _Surrogate:
    """The personaliser in the loop: a textual-inversion token trained on the images as they are being protected."""

    TOKEN = "<surrogate>"

    def __init__(self, pipe: StableDiffusionPipeline, config: ProtectConfig, captions: Sequence[str] | None,
                 generator: torch.Generator):  # fmt: skip
        from unsee.concepts.inversion import InversionConfig, _initial_vectors

        self.pipe, self.config, self.g = pipe, config, generator
        self.inv = InversionConfig(token=self.TOKEN, lr=config.surrogate_lr, batch_size=config.batch_size)
        self.captions = captions
        self.vectors = torch.nn.Parameter(_initial_vectors(pipe, self.inv).to(pipe.text_encoder.device))
        self.opt = torch.optim.Adam([self.vectors], lr=config.surrogate_lr)

    def cond(self, idx: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        tpl = torch.randint(len(self.inv.templates), (len(idx),), generator=self.g)
        words = [self.TOKEN if self.captions is None else f"{self.captions[int(i)]} {self.TOKEN}".strip() for i in idx]
        prompts = [self.inv.templates[int(k)].format(w) for k, w in zip(tpl, words)]
        return encode_prompts(self.pipe, prompts, {self.TOKEN: vectors})

    def learn(self, sched: DDIMScheduler, images: torch.Tensor) -> None:
        """``surrogate_steps`` inversion steps on ``images`` (the images get no gradient)."""
        pipe = self.pipe
        for _ in range(self.config.surrogate_steps):
            idx = torch.randint(len(images), (self.config.batch_size,), generator=self.g)
            t = torch.randint(len(sched.alphas_cumprod), (len(idx),), generator=self.g)
            with torch.no_grad():
                z0 = _latents(pipe, images[idx])
            noise = torch.randn(z0.shape, generator=self.g).to(z0.device)
            z_t, target = sched.add_noise(z0, noise, t.to(z0.device)), denoising_target(sched, z0, noise, t.to(z0.device))
            loss = denoising_loss(pipe, z_t, t, self.cond(idx, self.vectors), target)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()

    def loss(self, z_t: torch.Tensor, t: torch.Tensor, target: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """The surrogate token's denoising loss on these noisy latents (differentiable in the images, not the token)."""
        return denoising_loss(self.pipe, z_t, t, self.cond(idx, self.vectors.detach()), target)


# -- what an attacker tries first ---------------------------------------------------------------------------


def blur(images: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """Gaussian blur (a 5-tap kernel per axis), the simplest purification."""
    if sigma <= 0:
        raise ValueError(f"`sigma` must be positive (got {sigma})")
    r = 2
    k = torch.exp(-(torch.arange(-r, r + 1, dtype=torch.float32) ** 2) / (2 * sigma**2))
    k = (k / k.sum()).to(images.dtype)
    c = images.shape[1]
    x = torch.nn.functional.pad(images, (r, r, r, r), mode="reflect")
    x = torch.nn.functional.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return torch.nn.functional.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c).clamp(0, 1)


def resample(images: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Downscale by ``factor`` (area) and upscale back (bilinear): the other purification an attacker tries."""
    if factor < 2:
        raise ValueError(f"`factor` must be at least 2 (got {factor})")
    h, w = images.shape[-2:]
    small = torch.nn.functional.interpolate(images, size=(h // factor, w // factor), mode="area")
    return torch.nn.functional.interpolate(small, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)


PURIFICATIONS = {"none": lambda x: x, "blur": blur, "resample": resample}
