"""The mini model: a Stable-Diffusion-shaped diffusers pipeline trained from scratch on the world.

Standard classes only (UNet2DConditionModel, CLIPTextModel, CLIPTokenizer, AutoencoderKL,
DDIMScheduler), so everything that works on it works on real SD 1.x pipelines too.
Training is two stages: the VAE, then the UNet and text encoder together (epsilon or v
prediction, cosine schedule, min-SNR weighting, EMA). Each batch is fixed by the seed and
the step, so a resumed run sees exactly the data an uninterrupted one would.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from tqdm.auto import tqdm
from transformers import CLIPTextConfig, CLIPTextModel

from unsee.machine import describe
from unsee.sampling import encode_text
from unsee.world.captions import caption_words
from unsee.world.data import make_batch, scene_rng
from unsee.world.render import IMAGE_SIZE
from unsee.world.text_pretrain import pretrain_text_encoder
from unsee.world.tokenizer import MAX_LENGTH, build_tokenizer

VAE_STREAM, UNET_STREAM = 1, 2


@dataclass
class MiniConfig:
    """Architecture and training settings of the mini model (saved beside every checkpoint)."""

    seed: int = 0
    vae_steps: int = 500
    vae_lr: float = 1e-3
    vae_kl_weight: float = 1e-6
    steps: int = 4000
    batch_size: int = 32
    lr: float = 8e-4
    warmup: int = 400
    # lr falls linearly to 0 from anneal_from to anneal_to (absolute steps, so that stopping
    # early and resuming gives the same weights as one run).
    anneal_from: int = 2000
    anneal_to: int = 4000
    weight_decay: float = 1e-2
    ema_decay: float = 0.998
    min_snr_gamma: float = 5.0
    # "weighted": draw t with probability proportional to its min-SNR weight (same objective in
    # expectation, no compute spent on near-zero-weight low-noise steps); "uniform": as in SD.
    t_sampling: str = "weighted"
    # Keep the text encoder's token embeddings at their random (near-orthogonal) initialisation.
    freeze_token_embeddings: bool = False
    # Keep the whole text encoder fixed in the UNet stage (as the pretext task left it, or at its
    # initialisation), as SD keeps its pretrained CLIP frozen: a jointly trained encoder merges words
    # whose pictures look alike at high noise
    # (hexagon, circle and square become one direction), and the UNet then cannot tell them apart.
    freeze_text_encoder: bool = True
    # Samples with SNR(t) below this pass no gradient into the text encoder (0 = all do). At high
    # noise, alike shapes look alike, and those samples teach the encoder to give their words one
    # direction; the UNet still learns from every sample. Measured at 1: the words stay apart early,
    # but colours and backgrounds, learned from those samples, come much later (README).
    text_grad_min_snr: float = 0.0
    # The text encoder's lr as a fraction of the UNet's (warmup, anneal and detail restart alike). A
    # middle ground between a jointly trained encoder (merges alike words) and a frozen one (the UNet
    # learns backgrounds from random features, slowly).
    text_lr_scale: float = 1.0
    # Steps of the text encoder's pretext task before the UNet stage (0 = none; world/text_pretrain.py):
    # the encoder learns which concepts a caption names, as CLIP arrives pretrained in SD.
    text_pretrain_steps: int = 300
    text_pretrain_lr: float = 1e-3
    # "epsilon" as SD 1.x, or "v_prediction" as SD 2.x. zero_terminal_snr (v only) rescales the
    # betas so that t = T is pure noise and DDIM starts there ("trailing"), as Lin et al. 2024 do:
    # sampling then starts where training did, and the prompt, not the noise, sets the coarse image.
    prediction_type: str = "epsilon"
    zero_terminal_snr: bool = False
    # v only: the SNR is floored here in the min-SNR weights, so that steps near t = T still train.
    snr_floor: float = 1.0
    # The detail stage (off when detail_to = 0): at step detail_from training restarts from the EMA
    # weights with a fresh optimiser, the lr warms up again and falls to 0 at detail_to, and the
    # min-SNR weights cap the SNR at detail_gamma instead of min_snr_gamma, so low-noise steps,
    # where corners and fine texture are drawn, weigh as much as the rest.
    detail_from: int = 0
    detail_to: int = 0
    detail_gamma: float = 1000.0
    # Batch size in the detail stage (0 = batch_size). Refining a model that already draws every
    # concept needs less gradient averaging than learning it, and a step costs in proportion.
    detail_batch_size: int = 0
    checkpoint_every: int = 200
    export_every: int = 600
    unet_channels: tuple[int, ...] = (64, 128, 128)
    vae_channels: tuple[int, ...] = (32, 64)
    text_width: int = 128
    text_layers: int = 3
    text_heads: int = 4
    heads: int = 4
    threads: int = 0  # 0 = torch's default
    workers: int = 0  # processes drawing batches; 0 draws in the training process
    keep_exports: bool = False  # also keep every export as out_dir/exports/step{N} (accuracy by step)
    extra: dict = field(default_factory=dict)


def _param_groups(unet: torch.nn.Module, text_encoder: torch.nn.Module, text_lr_scale: float) -> list[dict]:
    """The trainable parameters; the text encoder's in a group of its own only when its lr differs,
    so that checkpoints made before ``text_lr_scale`` existed (one group) still resume."""
    unet_p = [p for p in unet.parameters() if p.requires_grad]
    text_p = [p for p in text_encoder.parameters() if p.requires_grad]
    if text_lr_scale == 1.0 or not text_p:
        return [{"params": unet_p + text_p, "lr_scale": 1.0}]
    return [{"params": unet_p, "lr_scale": 1.0}, {"params": text_p, "lr_scale": text_lr_scale}]


# Settings that do not change the trained weights: a run may resume with other values.
_RUN_ONLY = ("steps", "checkpoint_every", "export_every", "workers", "threads", "keep_exports")


# Settings whose default is not what a run made before they existed did; the others' defaults are.
_BEFORE_IT_EXISTED = {"freeze_text_encoder": False, "text_pretrain_steps": 0}


def _result_config(c: dict) -> dict:
    return {k: v for k, v in c.items() if k not in _RUN_ONLY}


def scheduler_config(prediction_type: str = "epsilon", zero_terminal_snr: bool = False) -> dict:
    """Cosine betas. Without a zero terminal SNR, DDIM must start at a "leading" timestep: with
    epsilon prediction "trailing" starts where alpha_bar ~ 0 and ruins the samples."""
    if prediction_type not in ("epsilon", "v_prediction"):
        raise ValueError(f"unknown prediction_type {prediction_type!r}; use 'epsilon' or 'v_prediction'")
    if zero_terminal_snr and prediction_type != "v_prediction":
        raise ValueError("zero_terminal_snr needs prediction_type='v_prediction' (epsilon says nothing about x0 at SNR 0)")
    return dict(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        prediction_type=prediction_type,
        clip_sample=False,
        set_alpha_to_one=False,
        rescale_betas_zero_snr=zero_terminal_snr,
        steps_offset=1,  # "trailing" ignores it; diffusers warns on any other value
        timestep_spacing="trailing" if zero_terminal_snr else "leading",
    )


def build_components(cfg: MiniConfig) -> dict:
    """Fresh, untrained components of the mini pipeline, initialised under ``cfg.seed``."""
    scheduler = DDIMScheduler(**scheduler_config(cfg.prediction_type, cfg.zero_terminal_snr))  # checks the pair first
    torch.manual_seed(cfg.seed)  # module initialisers draw from the global generator
    tokenizer = build_tokenizer(caption_words())
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=cfg.text_width,
            intermediate_size=4 * cfg.text_width,
            num_hidden_layers=cfg.text_layers,
            num_attention_heads=cfg.text_heads,
            max_position_embeddings=MAX_LENGTH,
            projection_dim=cfg.text_width,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    n = len(cfg.vae_channels)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=cfg.vae_channels,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=IMAGE_SIZE,
    )
    unet = UNet2DConditionModel(
        sample_size=IMAGE_SIZE // 2 ** (n - 1),
        in_channels=4,
        out_channels=4,
        block_out_channels=cfg.unet_channels,
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cfg.text_width,
        attention_head_dim=cfg.heads,
        norm_num_groups=32,
    )
    return dict(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        unet=unet,
        scheduler=scheduler,
    )


def make_pipeline(components: dict) -> StableDiffusionPipeline:
    return StableDiffusionPipeline(**components, safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for pe, pm in zip(ema.parameters(), model.parameters()):
            pe.lerp_(pm, 1 - decay)


def _save_atomic(obj: dict, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


SAMPLING = {"steps": 20, "guidance_scale": 6.0}
"""How the mini model is meant to be sampled. 20 DDIM steps: with 10, the 2-hour recipe's model draws
squares and hexagons a third of the time as other shapes (corners come in the low-noise steps)."""


def export_pipeline(components: dict, out: Path, dtype: torch.dtype = torch.float32, training: dict | None = None) -> None:
    """Write a diffusers folder in fp32 (transformers loads weights in their saved dtype), with an
    ``unsee.json`` giving its sampling defaults and how far it was trained."""
    pipe = make_pipeline({k: copy.deepcopy(v) for k, v in components.items()})
    pipe.to(dtype=dtype)
    # Write beside, then swap: a run killed mid-export must not leave a folder mixing two steps.
    out = Path(out)
    tmp, old = out.with_name(out.name + ".tmp"), out.with_name(out.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp, safe_serialization=True)
    (tmp / "unsee.json").write_text(json.dumps({"sampling": SAMPLING, "training": training or {}}, indent=2))
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


class _Batches(torch.utils.data.Dataset):
    """Batch ``i`` of a stream, drawn from its own seed: workers and resumes see the same data."""

    def __init__(self, seed: int, stream: int, start: int, stop: int, size: int, size_from: int = 0, size_after: int = 0):
        self.seed, self.stream, self.start, self.stop, self.size = seed, stream, start, stop, size
        self.size_from, self.size_after = size_from, size_after  # batches from step size_from have size_after

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, i: int):
        step = self.start + i
        size = self.size_after if self.size_after and step >= self.size_from else self.size
        b = make_batch(scene_rng(self.seed, self.stream, step), size)
        return b.images, b.captions


def _batches(cfg: MiniConfig, stream: int, start: int, stop: int):
    detail_size = cfg.detail_batch_size if stream == UNET_STREAM and cfg.detail_to else 0
    ds = _Batches(cfg.seed, stream, start, stop, cfg.batch_size, cfg.detail_from, detail_size)
    if cfg.workers == 0:
        return (ds[i] for i in range(len(ds)))
    return iter(torch.utils.data.DataLoader(ds, batch_size=None, num_workers=cfg.workers, prefetch_factor=4))


def train_mini(
    cfg: MiniConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    device: str = "cpu",
    init_from: str | Path | None = None,
    start_step: int = 0,
) -> Path:
    """Train the mini model into ``out_dir``; returns the exported pipeline folder ``out_dir/pipeline``.

    ``out_dir/checkpoint.pt`` is written every ``cfg.checkpoint_every`` steps; with ``resume``
    training continues from it and produces the same weights as an uninterrupted run.
    """
    if cfg.detail_to and not cfg.anneal_to <= cfg.detail_from < cfg.detail_to:
        raise ValueError(
            f"the detail stage needs anneal_to <= detail_from < detail_to, got {cfg.anneal_to}, {cfg.detail_from}, "
            f"{cfg.detail_to}; set --detail-from/--detail-to, or --detail-to 0 for none"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_dir / "checkpoint.pt"
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    comps = build_components(cfg)
    text_encoder, vae, unet = comps["text_encoder"], comps["vae"], comps["unet"]
    vae_opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr)
    if cfg.freeze_token_embeddings:
        text_encoder.get_input_embeddings().requires_grad_(False)
    if cfg.freeze_text_encoder:
        text_encoder.requires_grad_(False)
    groups = _param_groups(unet, text_encoder, cfg.text_lr_scale)
    params = [p for gr in groups for p in gr["params"]]
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema_unet, ema_text = copy.deepcopy(unet).requires_grad_(False), copy.deepcopy(text_encoder).requires_grad_(False)
    for m in (vae, unet, text_encoder, ema_unet, ema_text):
        m.to(device)
    state = {"vae_step": 0, "step": 0, "elapsed": 0.0, "log": []}

    if resume:
        if not ckpt_path.exists():
            raise FileNotFoundError(f"no checkpoint at {ckpt_path}; run without --resume to start training")
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        # A setting added after the checkpoint was made counts at the value that means "as before it existed".
        if _result_config(asdict(MiniConfig()) | _BEFORE_IT_EXISTED | ck["config"]) != _result_config(asdict(cfg)):
            raise ValueError(f"checkpoint {ckpt_path} was made with another config; use the same flags or a new --out")
        for name, mod in [("vae", vae), ("unet", unet), ("text_encoder", text_encoder), ("ema_unet", ema_unet),
                          ("ema_text", ema_text), ("vae_opt", vae_opt), ("opt", opt)]:  # fmt: skip
            mod.load_state_dict(ck[name])  # optimizer state follows its parameters' device
        state = ck["state"]
        if "scaling_factor" in ck:
            vae.register_to_config(scaling_factor=ck["scaling_factor"])
    elif init_from is not None:
        src = StableDiffusionPipeline.from_pretrained(init_from, dtype=torch.float32)
        for mine, theirs in ((vae, src.vae), (unet, src.unet), (text_encoder, src.text_encoder),
                             (ema_unet, src.unet), (ema_text, src.text_encoder)):  # fmt: skip
            mine.load_state_dict(theirs.state_dict())
        vae.register_to_config(scaling_factor=src.vae.config.scaling_factor)
        state.update(vae_step=cfg.vae_steps, step=start_step, warm_from=start_step, init_from=str(init_from))
        state["text_pretrained"] = True  # the warm start brings its encoder
    (out_dir / "config.json").write_text(json.dumps(asdict(cfg), indent=2))

    def checkpoint() -> None:
        _save_atomic(
            {
                "config": asdict(cfg),
                "state": state,
                "vae": vae.state_dict(),
                "unet": unet.state_dict(),
                "text_encoder": text_encoder.state_dict(),
                "ema_unet": ema_unet.state_dict(),
                "ema_text": ema_text.state_dict(),
                "vae_opt": vae_opt.state_dict(),
                "opt": opt.state_dict(),
                "scaling_factor": vae.config.scaling_factor,
            },
            ckpt_path,
        )

    # Seconds and steps of each stage, summed over resumes: what a step costs on this machine.
    stage_s = state.setdefault("stage_seconds", {})
    clock = [time.perf_counter()]

    def tick(stage: str, steps: int = 1) -> None:
        now = time.perf_counter()
        done = stage_s.setdefault(stage, {"seconds": 0.0, "steps": 0})
        done["seconds"] += now - clock[0]
        done["steps"] += steps
        clock[0] = now

    # Stage 1: the VAE (a 2x autoencoder: 32x32x3 -> 16x16x4).
    t0 = time.perf_counter() - state["elapsed"]
    bar = tqdm(total=cfg.vae_steps, initial=state["vae_step"], desc="vae", disable=not progress)
    vae.train()
    for images, _ in _batches(cfg, VAE_STREAM, state["vae_step"], cfg.vae_steps):
        s = state["vae_step"]
        images = images.to(device)
        # Noise is drawn on the CPU so every device sees the same draws.
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + s)
        post = vae.encode(images).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=g).to(device)
        rec = vae.decode(z).sample
        loss = F.mse_loss(rec, images) + 0.5 * F.l1_loss(rec, images) + cfg.vae_kl_weight * post.kl().mean()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"VAE loss is {loss.item()} at step {s}; lower --vae-lr")
        vae_opt.zero_grad(set_to_none=True)
        loss.backward()
        vae_opt.step()
        state["vae_step"] += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if state["vae_step"] % cfg.checkpoint_every == 0 or state["vae_step"] == cfg.vae_steps:
            if state["vae_step"] == cfg.vae_steps:
                vae.register_to_config(scaling_factor=_latent_scale(vae, cfg))
            state["elapsed"] = time.perf_counter() - t0
            checkpoint()
        tick("vae")
    bar.close()
    vae.eval().requires_grad_(False)

    # Stage 1b: the text encoder's pretext task (seconds); both the encoder and its EMA start from it.
    if cfg.text_pretrain_steps and not state.get("text_pretrained"):
        clock[0] = time.perf_counter()
        losses = pretrain_text_encoder(text_encoder, comps["tokenizer"], cfg.text_pretrain_steps, seed=cfg.seed,
                                       lr=cfg.text_pretrain_lr, progress=progress).losses  # fmt: skip
        ema_text.load_state_dict(text_encoder.state_dict())
        state.update(text_pretrained=True, text_pretrain_loss=(losses[0], losses[-1]))
        tick("text_pretrain", cfg.text_pretrain_steps)
        state["elapsed"] = time.perf_counter() - t0
        checkpoint()

    # Stage 2: UNet + text encoder, epsilon or v prediction with min-SNR-gamma weights.
    # The weights stay on the CPU, where t is drawn: no device sync per step.
    weight = min_snr_weights(cfg.min_snr_gamma, comps["scheduler"], cfg.snr_floor)
    detail_weight = min_snr_weights(cfg.detail_gamma, comps["scheduler"], cfg.snr_floor) if cfg.detail_to else None
    bar = tqdm(total=cfg.steps, initial=state["step"], desc="unet", disable=not progress)
    unet.train()
    text_encoder.train()
    clock[0] = time.perf_counter()
    for images, captions in _batches(cfg, UNET_STREAM, state["step"], cfg.steps):
        s = state["step"]
        if cfg.detail_to and s == cfg.detail_from and not state.get("detail_started"):
            # Restart from the EMA weights, as a warm start from the stage-1 export would.
            unet.load_state_dict(ema_unet.state_dict())
            text_encoder.load_state_dict(ema_text.state_dict())
            fresh = _param_groups(unet, text_encoder, cfg.text_lr_scale)
            opt = torch.optim.AdamW(fresh, lr=cfg.lr, weight_decay=cfg.weight_decay)
            state["detail_started"] = True
        # By step, not by the restart: a warm start (--init-from) inside the detail stage is its restart.
        w = detail_weight if cfg.detail_to and s >= cfg.detail_from else weight
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + 500_000 + s)
        loss = diffusion_loss(comps | {"unet": unet, "text_encoder": text_encoder, "vae": vae}, images, list(captions),
                              w, g, t_sampling=cfg.t_sampling, text_grad_min_snr=cfg.text_grad_min_snr)  # fmt: skip
        if not torch.isfinite(loss):
            raise FloatingPointError(f"UNet loss is {loss.item()} at step {s}; lower --lr or resume from the checkpoint")
        lr = learning_rate(cfg, s, state.get("warm_from", 0))
        for group in opt.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)  # absent in checkpoints made before it
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        _ema_update(ema_unet, unet, cfg.ema_decay)
        _ema_update(ema_text, text_encoder, cfg.ema_decay)
        state["step"] += 1
        tick("unet")
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if state["step"] % 50 == 0:
            state["log"].append({"step": state["step"], "loss": loss.item(), "time": time.perf_counter() - t0})
        done = state["step"] == cfg.steps
        if state["step"] % cfg.checkpoint_every == 0 or done:
            state["elapsed"] = time.perf_counter() - t0
            checkpoint()
        if state["step"] % cfg.export_every == 0 or done:
            training = {"steps": state["step"], "elapsed_s": round(time.perf_counter() - t0, 1), "device": device,
                        "machine": describe(device), "seconds_per_step": seconds_per_step(state),
                        "config": asdict(cfg)}  # fmt: skip
            export_pipeline(dict(comps, unet=ema_unet, text_encoder=ema_text, vae=vae), out_dir / "pipeline", training=training)
            if cfg.keep_exports:
                shutil.copytree(out_dir / "pipeline", out_dir / "exports" / f"step{state['step']}", dirs_exist_ok=True)
            (out_dir / "train_log.json").write_text(json.dumps(state["log"]))
    bar.close()
    summary = {"elapsed_s": time.perf_counter() - t0, "stage_seconds": stage_s, "seconds_per_step": seconds_per_step(state),
               "machine": describe(device), "log": state["log"]}  # fmt: skip
    (out_dir / "train_log.json").write_text(json.dumps(summary, indent=1))
    return out_dir / "pipeline"


def seconds_per_step(state: dict) -> dict[str, float]:
    """Mean wall seconds per step of each stage so far (checkpoints and exports included)."""
    return {k: round(v["seconds"] / v["steps"], 4) for k, v in state.get("stage_seconds", {}).items() if v["steps"]}


def learning_rate(cfg: MiniConfig, step: int, warm_from: int = 0) -> float:
    """Linear warm-up over ``cfg.warmup`` steps, constant, then linear decay to 0 over [anneal_from, anneal_to].

    In the detail stage: a new warm-up from ``detail_from``, and linear decay to 0 at ``detail_to``.
    """
    start, stop = cfg.anneal_from, cfg.anneal_to
    if cfg.detail_to and step >= cfg.detail_from:
        warm_from, start, stop = max(warm_from, cfg.detail_from), cfg.detail_from, cfg.detail_to
    warm = min(1.0, (step - warm_from + 1) / cfg.warmup)
    span = max(stop - start, 1)
    decay = min(1.0, max(0.0, (stop - step) / span))
    return cfg.lr * warm * decay


def _default_scheduler() -> DDIMScheduler:
    return DDIMScheduler(**scheduler_config())


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


@torch.no_grad()
def _latent_scale(vae: AutoencoderKL, cfg: MiniConfig) -> float:
    """1 / std of the latents, as SD's 0.18215 was chosen: unit-variance latents for the UNet."""
    batch = make_batch(scene_rng(cfg.seed, 99, 0), 256)
    z = vae.encode(batch.images.to(vae.device)).latent_dist.mean
    return float(1.0 / z.std())
