"""Shared fixtures: tiny components built in code (as diffusers' tests do) and the shipped mini model."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))

from unsee.world.mini import MiniConfig, build_components, make_pipeline  # noqa: E402

# The tiny runs train the text encoder with the UNet (the recipe's frozen, pretext-trained encoder has
# tests of its own), so that every trained part moves in the training tests.
TINY = dict(unet_channels=(32, 32, 32), vae_channels=(32, 32), text_width=32, text_layers=1, text_heads=2, heads=4,
            batch_size=4, freeze_text_encoder=False, text_pretrain_steps=0)  # fmt: skip


def tiny_config(**kw) -> MiniConfig:
    return MiniConfig(**(TINY | kw))


@pytest.fixture
def tiny_pipe():
    """A random-weight mini-shaped pipeline, fresh for each test."""
    return make_pipeline(build_components(tiny_config()))


@pytest.fixture
def tiny_v_pipe():
    """As ``tiny_pipe``, but SD-2 style: v prediction, with a zero terminal SNR and "trailing" DDIM."""
    return make_pipeline(build_components(tiny_config(prediction_type="v_prediction", zero_terminal_snr=True)))


@pytest.fixture(scope="session")
def mini_pipe():
    from unsee.models import load_pipeline

    return load_pipeline("mini")
