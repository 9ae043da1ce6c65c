"""The probes beyond the text channel (noise, completion, inpaint, guided) do what they say on the tiny pipe."""

from __future__ import annotations

import pytest
import torch

from unsee.attacks import Target, attack, make_config
from unsee.attacks.completion import CompletionSampler
from unsee.attacks.guided import GuidedSampler
from unsee.attacks.inpaint import InpaintSampler, centre_mask
from unsee.attacks.noise import NoiseSampler
from unsee.edits import Edit
from unsee.judges import ClassifierJudge, score
from unsee.models import fingerprint
from unsee.sampling import initial_latents, sample

PROMPTS = ["a red circle", "a blue star"]
KW = dict(steps=4, guidance_scale=5.0)


@pytest.fixture
def edited(tiny_pipe):
    """An edit that changes the UNet's output layer a lot, so base and edited images clearly differ."""
    g = torch.Generator().manual_seed(0)
    w, b = tiny_pipe.unet.conv_out.weight, tiny_pipe.unet.conv_out.bias
    tensors = {"unet.conv_out.weight": w.detach() + 0.2 * torch.randn(w.shape, generator=g),
               "unet.conv_out.bias": b.detach() + 0.5}  # fmt: skip
    return tiny_pipe, Edit("test", {}, ("circle",), fingerprint(tiny_pipe), 0, tensors)


def _z(pipe, n=2):
    return initial_latents(pipe, n, torch.Generator().manual_seed(1))


def _plain(pipe, edit, z, **kw):
    with edit.applied(pipe):
        return sample(pipe, PROMPTS, latents=z, **(KW | kw))


def _judge() -> ClassifierJudge:
    # A toy differentiable classifier on the mean colour: "circle" is redder than it is blue.
    return ClassifierJudge(lambda x: 20 * torch.stack([x[:, 2].mean((-1, -2)), x[:, 0].mean((-1, -2))], -1),
                           ("other", "circle"), name="object")  # fmt: skip


def test_noise_with_eta_zero_is_plain_ddim_and_eta_past_one_is_finite_and_other(edited):
    pipe, edit = edited
    z = _z(pipe)
    plain = _plain(pipe, edit, z)
    assert torch.equal(NoiseSampler(0.0, 1.0, seed=3)(pipe, edit, PROMPTS, z, **KW), plain)
    a = NoiseSampler(1.85, 1.04, seed=3)(pipe, edit, PROMPTS, z, **KW)
    assert torch.isfinite(a).all() and (a - plain).abs().max() > 1e-3
    assert torch.equal(a, NoiseSampler(1.85, 1.04, seed=3)(pipe, edit, PROMPTS, z, **KW)), "the step noise is seeded"
    assert not torch.equal(a, NoiseSampler(1.85, 1.04, seed=4)(pipe, edit, PROMPTS, z, **KW))


def test_noise_leaves_the_pipeline_unedited(edited):
    pipe, edit = edited
    before = fingerprint(pipe)
    NoiseSampler(1.0, 1.0, seed=0)(pipe, edit, PROMPTS, _z(pipe), **KW)
    assert fingerprint(pipe) == before


def test_completion_from_step_zero_is_the_erased_model_and_late_switches_approach_the_base(edited):
    pipe, edit = edited
    z = _z(pipe)
    base = sample(pipe, PROMPTS, latents=z, **KW)
    erased = _plain(pipe, edit, z)
    assert torch.equal(CompletionSampler(0)(pipe, edit, PROMPTS, z, **KW), erased)
    gaps = [(CompletionSampler(k)(pipe, edit, PROMPTS, z, **KW) - base).abs().mean().item() for k in range(4)]
    assert gaps[0] == pytest.approx((erased - base).abs().mean().item())
    assert gaps[3] < gaps[0] and gaps[3] < 0.5 * gaps[0], gaps
    assert fingerprint(pipe) == edit.base_fingerprint


def test_completion_switches_past_the_steps_are_refused(edited):
    pipe, edit = edited
    target = Target("circle", _judge())
    with pytest.raises(ValueError, match=r"^`switch_steps` must each be below the 2 sampling steps"):
        attack(pipe, edit, target, make_config("completion", n=1, steps=2, switch_steps=(1, 2)))


def test_inpaint_keeps_the_base_latent_outside_the_hole_and_fills_the_hole(edited):
    pipe, edit = edited
    z = _z(pipe)
    base = sample(pipe, PROMPTS, latents=z, return_latents=True, **KW)
    erased = _plain(pipe, edit, z, return_latents=True)
    filled = InpaintSampler(0.5).fill(pipe, edit, PROMPTS, z, **KW)
    hole = centre_mask(z, 0.5).bool().expand_as(z)
    assert hole[0, 0].sum() == (z.shape[-2] // 2) * (z.shape[-1] // 2)
    assert torch.equal(filled[~hole], base[~hole])
    assert (filled[hole] - base[hole]).abs().mean() > 1e-2, "the erased model draws the hole"
    assert (filled[hole] - erased[hole]).abs().mean() < (base[hole] - erased[hole]).abs().mean()
    images = InpaintSampler(0.5)(pipe, edit, PROMPTS, z, **KW)
    assert images.shape[:2] == (2, 3) and 0 <= images.min() and images.max() <= 1


def test_guided_at_scale_zero_is_plain_and_a_positive_scale_raises_the_judges_reading(edited):
    pipe, edit = edited
    z = _z(pipe, 4)
    prompts = PROMPTS * 2
    with edit.applied(pipe):
        plain = sample(pipe, prompts, latents=z, **KW)
    judge = _judge()
    guided = lambda s: GuidedSampler(s, 0.0, 0, judge, "circle", batch_size=3)(pipe, edit, prompts, z, **KW)  # noqa: E731
    torch.testing.assert_close(guided(0.0), plain, rtol=0, atol=1e-5)  # chunks of 3: batched kernels round otherwise
    # the random tiny VAE passes little gradient, hence a large scale; every image moves toward "circle"
    p0, p1 = score(judge, plain, "circle"), score(judge, guided(1000.0), "circle")
    assert (p1 > p0).all() and p1.mean() > p0.mean() + 0.05, (p0, p1)


def test_guided_refuses_a_judge_without_gradients(edited):
    pipe, edit = edited
    frozen = ClassifierJudge(lambda x: _judge().fn(x).detach(), ("other", "circle"), name="object")
    with pytest.raises(ValueError, match=r"^guided needs a differentiable judge; `target.judge.probs`"):
        GuidedSampler(10.0, 0.0, 0, frozen, "circle")(pipe, edit, PROMPTS, _z(pipe), **KW)


def test_a_probe_attack_reports_which_variant_hit(edited):
    pipe, edit = edited
    target = Target("circle", _judge(), prompts=("a {}", "a red {}"))
    r = attack(pipe, edit, target, make_config("noise", n=2, steps=2, etas=(0.0, 1.5), variance_scales=(1.0,)))
    assert r.info["samplers"] == ["eta=0,variance_scale=1", "eta=1.5,variance_scale=1"]
    assert sum(r.info["sampler_hits"].values()) >= sum(map(sum, r.hits_attacked))
    # eta 0 is the erased model's plain DDIM: its hits are the unattacked ones
    assert r.info["sampler_hits"]["eta=0,variance_scale=1"] == sum(map(sum, r.hits_unattacked))
