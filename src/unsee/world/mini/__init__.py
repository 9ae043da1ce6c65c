"""The mini model: a Stable-Diffusion-shaped diffusers pipeline trained from scratch on the world.

Standard classes only (UNet2DConditionModel, CLIPTextModel, CLIPTokenizer, AutoencoderKL,
DDIMScheduler), so everything that works on it works on real SD 1.x pipelines too.
Training is two stages: the VAE, then the UNet and text encoder together (epsilon or v
prediction, cosine schedule, min-SNR weighting, EMA).

One module per job: ``config`` (settings, sampling defaults), ``components`` (the architecture),
``export`` (the diffusers folder), ``losses`` (min-SNR weights, targets, the batch loss) and
``train`` (the training loop, checkpoints and resumes).
"""

from unsee.world.mini.components import build_components, make_pipeline, scheduler_config
from unsee.world.mini.config import _BEFORE_IT_EXISTED, _RUN_ONLY, SAMPLING, MiniConfig, _result_config
from unsee.world.mini.export import export_pipeline
from unsee.world.mini.losses import diffusion_loss, min_snr_weights, training_target
from unsee.world.mini.train import (
    UNET_STREAM,
    VAE_STREAM,
    _Batches,
    _batches,
    _param_groups,
    learning_rate,
    seconds_per_step,
    train_mini,
)

__all__ = [
    "SAMPLING",
    "UNET_STREAM",
    "VAE_STREAM",
    "MiniConfig",
    "_BEFORE_IT_EXISTED",
    "_RUN_ONLY",
    "_Batches",
    "_batches",
    "_param_groups",
    "_result_config",
    "build_components",
    "diffusion_loss",
    "export_pipeline",
    "learning_rate",
    "make_pipeline",
    "min_snr_weights",
    "scheduler_config",
    "seconds_per_step",
    "training_target",
    "train_mini",
]
