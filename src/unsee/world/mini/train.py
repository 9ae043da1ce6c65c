"""Training the mini model: the VAE, the text encoder's pretext task, then the UNet (and optionally the text
encoder), with checkpoints that resume to the same weights. Each batch is fixed by the seed and the step,
so a resumed run sees exactly the data an uninterrupted one would.
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, StableDiffusionPipeline
from tqdm.auto import tqdm

from unsee.checkpoints import save_atomic
from unsee.machine import describe
from unsee.world.data import make_batch, scene_rng
from unsee.world.mini.components import build_components
from unsee.world.mini.config import _BEFORE_IT_EXISTED, MiniConfig, _result_config
from unsee.world.mini.export import export_pipeline
from unsee.world.mini.losses import diffusion_loss, min_snr_weights
from unsee.world.text_pretrain import pretrain_text_encoder

VAE_STREAM, UNET_STREAM = 1, 2


def _param_groups(unet: torch.nn.Module, text_encoder: torch.nn.Module, text_lr_scale: float) -> list[dict]:
    """The trainable parameters; the text encoder's in a group of its own only when its lr differs,
    so that checkpoints made before ``text_lr_scale`` existed (one group) still resume."""
    unet_p = [p for p in unet.parameters() if p.requires_grad]
    text_p = [p for p in text_encoder.parameters() if p.requires_grad]
    if text_lr_scale == 1.0 or not text_p:
        return [{"params": unet_p + text_p, "lr_scale": 1.0}]
    return [{"params": unet_p, "lr_scale": 1.0}, {"params": text_p, "lr_scale": text_lr_scale}]


def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for pe, pm in zip(ema.parameters(), model.parameters()):
            pe.lerp_(pm, 1 - decay)


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
            f"{cfg.detail_to}; set `detail_from`/`detail_to`, or `detail_to=0` for none"
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
            raise FileNotFoundError(f"no checkpoint at {ckpt_path}; run without `resume=True` to start training")
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        # A setting added after the checkpoint was made counts at the value that means "as before it existed".
        if _result_config(asdict(MiniConfig()) | _BEFORE_IT_EXISTED | ck["config"]) != _result_config(asdict(cfg)):
            raise ValueError(f"checkpoint {ckpt_path} was made with another config; use the same settings or a new `out`")
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
        save_atomic(
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
            raise FloatingPointError(f"VAE loss is {loss.item()} at step {s}; lower `vae_lr`")
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
            raise FloatingPointError(f"UNet loss is {loss.item()} at step {s}; lower `lr` or resume from the checkpoint")
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


@torch.no_grad()
def _latent_scale(vae: AutoencoderKL, cfg: MiniConfig) -> float:
    """1 / std of the latents, as SD's 0.18215 was chosen: unit-variance latents for the UNet."""
    batch = make_batch(scene_rng(cfg.seed, 99, 0), 256)
    z = vae.encode(batch.images.to(vae.device)).latent_dist.mean
    return float(1.0 / z.std())
