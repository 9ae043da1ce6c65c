"""The mini model's settings: architecture and training (saved beside every checkpoint), and how it is sampled."""

from __future__ import annotations

from dataclasses import dataclass, field


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


# Settings that do not change the trained weights: a run may resume with other values.
_RUN_ONLY = ("steps", "checkpoint_every", "export_every", "workers", "threads", "keep_exports")


# Settings whose default is not what a run made before they existed did; the others' defaults are.
_BEFORE_IT_EXISTED = {"freeze_text_encoder": False, "text_pretrain_steps": 0}


def _result_config(c: dict) -> dict:
    return {k: v for k, v in c.items() if k not in _RUN_ONLY}


SAMPLING = {"steps": 20, "guidance_scale": 6.0}
"""How the mini model is meant to be sampled. 20 DDIM steps: with 10, the 2-hour recipe's model draws
squares and hexagons a third of the time as other shapes (corners come in the low-noise steps)."""
