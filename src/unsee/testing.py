"""Random-weight pipelines of real Stable Diffusion shapes, for testing the real-scale path offline."""

from __future__ import annotations

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from unsee.world.captions import caption_words
from unsee.world.tokenizer import build_tokenizer


def sd14_shaped_pipeline(seed: int = 0, dtype: torch.dtype = torch.float32) -> StableDiffusionPipeline:
    """SD-1.4's true UNet, text-encoder and VAE configurations with random weights (about 1.07B parameters).

    The tokenizer is unsee's small in-code CLIP tokenizer padded to SD's 77 tokens: its ids are a
    subset of SD's 49,408-token vocabulary, so the text encoder keeps its true shape.
    """
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=768, attention_head_dim=8,
    )  # fmt: skip
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
            projection_dim=768,
        )  # fmt: skip
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=512,
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        scaling_factor=0.18215,
    )  # fmt: skip
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)  # fmt: skip
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=build_tokenizer(caption_words(), max_length=77), unet=unet,
        scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    return pipe.to(dtype=dtype)


CLIP_IDS = {"bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1}
"""What the real CLIP text configs say: eos_token_id 2 makes the pooled output take the highest token id's position
(the end-of-text token, in the real vocabulary as in unsee's in-code tokenizer)."""


def _tokenizer():
    return build_tokenizer(caption_words(), max_length=77)


def _sd_vae(sample_size: int, scaling_factor: float, **kw) -> AutoencoderKL:
    """SD's VAE (the same in 1.x, 2.x and XL but for its sample size and latent scale)."""
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=sample_size,
        block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, scaling_factor=scaling_factor, **kw,
    )  # fmt: skip


def sd21_pipeline(seed: int = 0, dtype: torch.dtype = torch.float32) -> StableDiffusionPipeline:
    """SD-2.1's true configurations (stabilityai/stable-diffusion-2-1: the 768 px v-prediction model) with random
    weights: the UNet with per-block heads, linear projections and cross-attention 1024, OpenCLIP-H's text tower as
    a 23-layer ``CLIPTextModel`` (SD 2 drops the last of its 24 layers), and its DDIM scheduler (about 1.3B parameters).
    """
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=96, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=(5, 10, 20, 20), cross_attention_dim=1024, use_linear_projection=True,
        upcast_attention=True, act_fn="silu", norm_num_groups=32, norm_eps=1e-5, flip_sin_to_cos=True, freq_shift=0,
    )  # fmt: skip
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
        max_position_embeddings=77, hidden_act="gelu", projection_dim=512, **CLIP_IDS,
    ))  # fmt: skip
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1, prediction_type="v_prediction")  # fmt: skip
    pipe = StableDiffusionPipeline(
        vae=_sd_vae(768, 0.18215), text_encoder=text_encoder, tokenizer=_tokenizer(), unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    return pipe.to(dtype=dtype)


def sdxl_pipeline(seed: int = 0, dtype: torch.dtype = torch.float32) -> StableDiffusionXLPipeline:
    """SDXL base 1.0's true configurations (stabilityai/stable-diffusion-xl-base-1.0) with random weights: the UNet
    (3 levels, 1/2/10 transformer layers, cross-attention 2048, ``text_time`` added conditioning), CLIP-L and
    OpenCLIP-bigG (32 layers, 1280 wide, with its projection) as text encoders, the SDXL VAE (latent scale 0.13025)
    and its Euler scheduler (about 3.5B parameters; 14 GB in fp32).
    """
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
        use_linear_projection=True, addition_embed_type="text_time", addition_embed_type_num_heads=64,
        addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816, act_fn="silu", norm_num_groups=32,
        norm_eps=1e-5, flip_sin_to_cos=True, freq_shift=0,
    )  # fmt: skip
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
        max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768, **CLIP_IDS,
    ))  # fmt: skip
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(
        vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
        max_position_embeddings=77, hidden_act="gelu", projection_dim=1280, **CLIP_IDS,
    ))  # fmt: skip
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1, timestep_spacing="leading", prediction_type="epsilon")  # fmt: skip
    pipe = StableDiffusionXLPipeline(
        vae=_sd_vae(1024, 0.13025, force_upcast=True), text_encoder=text_encoder, text_encoder_2=text_encoder_2,
        tokenizer=_tokenizer(), tokenizer_2=_tokenizer(), unet=unet, scheduler=scheduler,
        force_zeros_for_empty_prompt=True, add_watermarker=False,
    )  # fmt: skip
    return pipe.to(dtype=dtype)


def tiny_sdxl_pipeline(seed: int = 0) -> StableDiffusionXLPipeline:
    """A random-weight SDXL pipeline small enough for the default test run (diffusers' own test components, with a
    VAE that downsamples by 8 as SDXL's does; 64 px images)."""
    torch.manual_seed(seed)
    tok = _tokenizer()
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=80,
        cross_attention_dim=64, norm_num_groups=1,
    )  # fmt: skip

    def text(cls):
        return cls(CLIPTextConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=37, num_hidden_layers=3,
                                  num_attention_heads=4, max_position_embeddings=77, hidden_act="gelu",
                                  projection_dim=32, **CLIP_IDS))  # fmt: skip

    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, sample_size=64,
                        block_out_channels=(8, 8, 8, 8), norm_num_groups=4, down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, scaling_factor=0.13025)  # fmt: skip
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)  # fmt: skip
    pipe = StableDiffusionXLPipeline(
        vae=vae, text_encoder=text(CLIPTextModel), text_encoder_2=text(CLIPTextModelWithProjection), tokenizer=tok,
        tokenizer_2=_tokenizer(), unet=unet, scheduler=scheduler, force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    return pipe
