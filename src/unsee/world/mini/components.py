"""The mini pipeline's parts: standard diffusers / transformers classes at the mini world's sizes."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from unsee.world.captions import caption_words
from unsee.world.mini.config import MiniConfig
from unsee.world.render import IMAGE_SIZE
from unsee.world.tokenizer import MAX_LENGTH, build_tokenizer


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


def _default_scheduler() -> DDIMScheduler:
    return DDIMScheduler(**scheduler_config())
