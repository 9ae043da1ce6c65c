"""The path to real weights: an SD-1.4-shaped pipeline saved locally, loaded, sampled. Marked slow."""

from __future__ import annotations

import pytest
import torch

from unsee.models import fingerprint, load_pipeline
from unsee.sampling import encode_prompts, sample, sample_until
from unsee.testing import sd14_shaped_pipeline


@pytest.mark.slow
def test_sd14_shaped_pipeline_loads_and_samples_like_diffusers(tmp_path):
    src = sd14_shaped_pipeline(seed=0)
    assert sum(p.numel() for p in src.unet.parameters()) > 850_000_000
    src.save_pretrained(tmp_path / "sd14")
    fp = fingerprint(src)
    del src
    pipe = load_pipeline(tmp_path / "sd14")
    assert fingerprint(pipe) == fp
    assert pipe.unet.dtype == torch.float32
    ours = sample(pipe, ["a red circle"], steps=1, guidance_scale=7.5, generator=torch.Generator().manual_seed(0))
    ref = pipe(["a red circle"], num_inference_steps=1, guidance_scale=7.5, generator=torch.Generator().manual_seed(0),
               output_type="pt").images  # fmt: skip
    assert ours.shape == (1, 3, 512, 512)
    assert (ours - ref).abs().max().item() <= 1e-4
    part = sample_until(pipe, encode_prompts(pipe, ["a red circle"]), 1, steps=2, guidance_scale=7.5,
                        generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert part.z_t.shape == (1, 4, 64, 64) and torch.isfinite(part.z_t).all()
