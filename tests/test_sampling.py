"""unsee's sampler equals diffusers' pipeline, and partial sampling continues exactly."""

from __future__ import annotations

import pytest
import torch

from unsee.sampling import ddim, ddim_step, decode, denoise, encode_prompts, initial_latents, sample, sample_until

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


@pytest.mark.parametrize("pipe_name", ["tiny_pipe", "tiny_v_pipe"])
def test_stochastic_ddim_step_equals_diffusers_up_to_eta_one(request, pipe_name):
    # ddim_step takes |1 - a_prev - sigma^2| so that eta may pass 1 (the noise probe); up to 1 it is diffusers' step
    pipe = request.getfixturevalue(pipe_name)
    sched = ddim(pipe, 5)
    g = torch.Generator().manual_seed(0)
    z, out, noise = (torch.randn(2, 4, 16, 16, generator=g) for _ in range(3))
    for t in sched.timesteps:
        for eta in (0.3, 1.0):
            ref = sched.step(out, t, z, eta=eta, variance_noise=noise).prev_sample
            torch.testing.assert_close(ddim_step(sched, out, t, z, eta=eta, noise=noise), ref, atol=1e-5, rtol=1e-5)
        assert torch.equal(ddim_step(sched, out, t, z), sched.step(out, t, z).prev_sample)
        assert torch.isfinite(ddim_step(sched, out, t, z, eta=1.85, noise=noise)).all()


def test_start_and_stop_split_a_run_exactly(tiny_pipe):
    z = initial_latents(tiny_pipe, 2, torch.Generator().manual_seed(5))
    kw = dict(steps=4, guidance_scale=3.0)
    half = sample(tiny_pipe, PROMPTS, latents=z, stop_index=2, return_latents=True, **kw)
    rest = sample(tiny_pipe, PROMPTS, latents=half, start_index=2, **kw)
    assert torch.equal(rest, sample(tiny_pipe, PROMPTS, latents=z, **kw))


def test_stochastic_sampling_needs_a_generator_and_a_valid_range(tiny_pipe):
    with pytest.raises(ValueError, match=r"^`noise_generator` is needed when `eta` > 0"):
        sample(tiny_pipe, PROMPTS[:1], steps=2, eta=0.5)
    with pytest.raises(ValueError, match=r"^`start_index` and `stop_index` must satisfy"):
        sample(tiny_pipe, PROMPTS[:1], steps=2, start_index=2)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    a = sample(tiny_pipe, PROMPTS, steps=2, generator=g(), eta=1.5, noise_generator=g())
    assert torch.equal(a, sample(tiny_pipe, PROMPTS, steps=2, generator=g(), eta=1.5, noise_generator=g()))
    assert not torch.equal(a, sample(tiny_pipe, PROMPTS, steps=2, generator=g(), eta=1.5, variance_scale=1.04,
                                     noise_generator=g()))  # fmt: skip
