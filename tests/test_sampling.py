"""unsee's sampler equals diffusers' pipeline, and partial sampling continues exactly."""

from __future__ import annotations

import pytest
import torch

from unsee.sampling import ddim, decode, denoise, encode_prompts, sample, sample_until

PROMPTS = ["a red circle", "a blue star on a dotted background"]


@pytest.mark.parametrize("guidance", [1.0, 6.0])
def test_parity_with_diffusers_on_the_mini_model(mini_pipe, guidance):
    ours = sample(mini_pipe, PROMPTS, steps=5, guidance_scale=guidance, generator=torch.Generator().manual_seed(3))
    ref = mini_pipe(PROMPTS, num_inference_steps=5, guidance_scale=guidance,
                    generator=torch.Generator().manual_seed(3), output_type="pt").images  # fmt: skip
    assert ours.shape == ref.shape
    assert (ours - ref).abs().max().item() <= 1e-4


def test_parity_with_diffusers_on_a_v_prediction_pipeline(tiny_v_pipe):
    # SD-2's parameterisation, with a zero terminal SNR: unsee's loop must follow the scheduler's config
    ours = sample(tiny_v_pipe, PROMPTS, steps=4, guidance_scale=6.0, generator=torch.Generator().manual_seed(3))
    ref = tiny_v_pipe(PROMPTS, num_inference_steps=4, guidance_scale=6.0, generator=torch.Generator().manual_seed(3),
                      output_type="pt").images  # fmt: skip
    assert (ours - ref).abs().max().item() <= 1e-4
    assert ddim(tiny_v_pipe, 4).timesteps[0] == 999


def test_same_seed_same_images_other_seed_other_images(tiny_pipe):
    a = sample(tiny_pipe, PROMPTS, steps=2, guidance_scale=5.0, generator=torch.Generator().manual_seed(0))
    b = sample(tiny_pipe, PROMPTS, steps=2, guidance_scale=5.0, generator=torch.Generator().manual_seed(0))
    c = sample(tiny_pipe, PROMPTS, steps=2, guidance_scale=5.0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_chunking_does_not_change_the_result(tiny_pipe):
    g = lambda: torch.Generator().manual_seed(4)  # noqa: E731
    whole = sample(tiny_pipe, PROMPTS * 2, steps=2, guidance_scale=5.0, generator=g())
    chunked = sample(tiny_pipe, PROMPTS * 2, steps=2, guidance_scale=5.0, generator=g(), batch_size=1)
    torch.testing.assert_close(whole, chunked, atol=1e-5, rtol=0)


def test_sample_until_then_continue_equals_a_full_run(tiny_pipe):
    cond = encode_prompts(tiny_pipe, PROMPTS)
    steps, k = 6, 3
    part = sample_until(tiny_pipe, cond, k, steps=steps, guidance_scale=3.0, generator=torch.Generator().manual_seed(2))
    sched = ddim(tiny_pipe, steps)
    assert part.t == sched.timesteps[k] and part.z_t.shape == (2, 4, 16, 16)
    uncond = encode_prompts(tiny_pipe, [""]).expand(2, -1, -1)
    with torch.no_grad():
        rest = denoise(tiny_pipe.unet, sched, part.z_t, cond, uncond, 3.0, sched.timesteps[k:])
    full = sample(tiny_pipe, PROMPTS, steps=steps, guidance_scale=3.0, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(decode(tiny_pipe, rest), full, atol=1e-5, rtol=0)


def test_sample_until_checks_its_range(tiny_pipe):
    cond = encode_prompts(tiny_pipe, PROMPTS[:1])
    with pytest.raises(ValueError, match="until"):
        sample_until(tiny_pipe, cond, 5, steps=5, guidance_scale=1.0)


def test_sampling_refuses_settings_that_cannot_sample(tiny_pipe):
    with pytest.raises(ValueError, match=r"^`prompts` is empty: pass at least one prompt"):
        sample(tiny_pipe, [], steps=2)
    for steps in (0, -3):
        with pytest.raises(ValueError, match=rf"^`steps` must be at least 1 \(got {steps}\)"):
            sample(tiny_pipe, PROMPTS[:1], steps=steps)
        with pytest.raises(ValueError, match=rf"^`steps` must be at least 1 \(got {steps}\)"):
            sample_until(tiny_pipe, encode_prompts(tiny_pipe, PROMPTS[:1]), 0, steps=steps, guidance_scale=1.0)
    with pytest.raises(ValueError, match=r"^`guidance_scale` must be at least 0 \(got -1.0\)"):
        sample(tiny_pipe, PROMPTS[:1], steps=2, guidance_scale=-1.0)
    sample(tiny_pipe, PROMPTS[:1], steps=1, guidance_scale=0.0)  # the edges are fine


def test_prompt_images_refuses_settings_that_cannot_sample(tiny_pipe):
    from unsee.metrics.judged import prompt_images

    with pytest.raises(ValueError, match=r"^`steps` must be at least 1 \(got 0\)"):
        prompt_images(tiny_pipe, PROMPTS[:1], n=1, steps=0)
    with pytest.raises(ValueError, match=r"^`guidance_scale` must be at least 0 \(got -2.0\)"):
        prompt_images(tiny_pipe, PROMPTS[:1], n=1, steps=1, guidance_scale=-2.0)
    with pytest.raises(ValueError, match=r"^`n` must be at least 1 \(got 0\): the images per prompt"):
        prompt_images(tiny_pipe, PROMPTS[:1], n=0, steps=1)
