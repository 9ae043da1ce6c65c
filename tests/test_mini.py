"""The mini model: loads with plain diffusers, and its trainer learns, checkpoints and resumes."""

from __future__ import annotations

import json
from dataclasses import asdict
from types import SimpleNamespace

import pytest
import torch
from diffusers import DDPMScheduler, StableDiffusionPipeline

from conftest import tiny_config
from unsee.models import BUNDLED, folder_size
from unsee.world.data import make_batch, scene_rng
from unsee.world.mini import (
    SAMPLING,
    UNET_STREAM,
    MiniConfig,
    _batches,
    _result_config,
    build_components,
    diffusion_loss,
    learning_rate,
    min_snr_weights,
    scheduler_config,
    train_mini,
    training_target,
)


def test_shipped_pipeline_loads_with_plain_diffusers_and_generates():
    path = BUNDLED["mini"]
    assert folder_size(path) <= 30 * 2**20
    pipe = StableDiffusionPipeline.from_pretrained(path)
    assert pipe.unet.dtype == torch.float32 and pipe.text_encoder.dtype == torch.float32
    out = pipe("a red circle", num_inference_steps=2, guidance_scale=6.0, generator=torch.Generator().manual_seed(0),
               output_type="np")  # fmt: skip
    img = out.images[0]
    assert img.shape == (32, 32, 3) and 0 <= img.min() and img.max() <= 1


def _fixed_loss(comps) -> float:
    batch = make_batch(scene_rng(0, 77, 0), 16)
    w = min_snr_weights(5.0, comps["scheduler"])
    with torch.no_grad():
        return diffusion_loss(comps, batch.images, batch.captions, w, torch.Generator().manual_seed(1)).item()


EPS, V = dict(prediction_type="epsilon", zero_terminal_snr=False), dict(prediction_type="v_prediction", zero_terminal_snr=True)


@pytest.mark.parametrize("kind", [EPS, V], ids=["epsilon", "v"])
def test_a_few_training_steps_lower_the_loss(tmp_path, kind):
    cfg = tiny_config(vae_steps=4, steps=25, lr=2e-3, warmup=5, export_every=25, checkpoint_every=1000, **kind)
    before = build_components(cfg)
    train_mini(cfg, tmp_path, progress=False)
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    after = build_components(cfg)
    after["vae"].load_state_dict(ck["vae"])
    after["vae"].register_to_config(scaling_factor=ck["scaling_factor"])
    before["vae"] = after["vae"]  # same VAE: the comparison is about the UNet and text encoder
    after["unet"].load_state_dict(ck["unet"])
    after["text_encoder"].load_state_dict(ck["text_encoder"])
    assert _fixed_loss(after) < 0.8 * _fixed_loss(before)
    assert (tmp_path / "pipeline" / "model_index.json").exists()
    # the export says how to sample it and how far it was trained, so `unsee generate --model` samples it as meant
    from unsee.models import sampling_defaults

    d = sampling_defaults(str(tmp_path / "pipeline"))
    assert (d.steps, d.guidance_scale) == (SAMPLING["steps"], SAMPLING["guidance_scale"])
    assert json.loads((tmp_path / "pipeline" / "unsee.json").read_text())["training"]["steps"] == 25
    # the export tells diffusers what the UNet predicts, so plain diffusers samples it correctly
    sched = json.loads((tmp_path / "pipeline" / "scheduler" / "scheduler_config.json").read_text())
    assert sched["prediction_type"] == cfg.prediction_type and sched["rescale_betas_zero_snr"] == cfg.zero_terminal_snr


def test_interrupted_run_resumes_to_the_same_weights(tmp_path):
    # The lr anneals inside the run, so the resumed half must pick the schedule up where it stopped.
    run = dict(vae_steps=3, checkpoint_every=2, export_every=100, warmup=1, anneal_from=1, anneal_to=4)
    cfg = tiny_config(steps=4, **run)
    train_mini(cfg, tmp_path / "straight", progress=False)
    # An interrupted run: stop after 2 UNet steps (the checkpoint at step 2), then resume to 4.
    train_mini(tiny_config(steps=2, **run), tmp_path / "split", progress=False)
    train_mini(cfg, tmp_path / "split", resume=True, progress=False)
    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=False)
    assert a["state"]["step"] == b["state"]["step"] == 4
    for key in ("unet", "text_encoder", "ema_unet", "vae"):
        for name, t in a[key].items():
            torch.testing.assert_close(b[key][name], t, rtol=0, atol=0, msg=f"{key}.{name}")


DETAIL = dict(vae_steps=3, export_every=100, warmup=1, anneal_from=1, anneal_to=2, detail_from=2, detail_to=5,
              detail_gamma=50.0, lr=2e-3)  # fmt: skip


def _same_weights(a: dict, b: dict, keys=("unet", "text_encoder", "ema_unet", "ema_text")) -> None:
    for key in keys:
        for name, t in a[key].items():
            torch.testing.assert_close(b[key][name], t, rtol=0, atol=0, msg=f"{key}.{name}")


def _stage1_then_warm_start(tmp_path, **warm_extra) -> dict:
    """Stage 1 of DETAIL into tmp_path/s1, then a warm start from its export with the detail stage's gamma and
    lr schedule into tmp_path/s2; returns stage 1's settings."""
    stage1 = dict(DETAIL, detail_from=0, detail_to=0)
    train_mini(tiny_config(steps=2, checkpoint_every=100, **stage1), tmp_path / "s1", progress=False)
    warm = dict(stage1, anneal_from=2, anneal_to=5, min_snr_gamma=50.0) | warm_extra
    train_mini(tiny_config(steps=5, checkpoint_every=100, **warm), tmp_path / "s2", progress=False,
               init_from=tmp_path / "s1" / "pipeline", start_step=2)  # fmt: skip
    return stage1


def test_detail_stage_is_a_warm_start_from_the_stage_one_export(tmp_path):
    # One run with a detail stage from step 2 to 5 ...
    one = tiny_config(steps=5, checkpoint_every=100, **DETAIL)
    train_mini(one, tmp_path / "one", progress=False)
    # ... equals stage 1 alone, then `unsee world train --init-from stage1/pipeline --start-step 2` with the
    # detail stage's gamma and lr schedule: the restart is from the EMA weights, with a fresh optimiser.
    stage1 = _stage1_then_warm_start(tmp_path)
    a = torch.load(tmp_path / "one" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "s2" / "checkpoint.pt", weights_only=False)
    assert a["state"]["step"] == b["state"]["step"] == 5 and a["state"]["detail_started"]
    _same_weights(a, b)
    # a warm start at the detail stage's first step, with the same config, is the same run too
    train_mini(tiny_config(steps=5, checkpoint_every=100, **DETAIL), tmp_path / "s3", progress=False,
               init_from=tmp_path / "s1" / "pipeline", start_step=2)  # fmt: skip
    _same_weights(a, torch.load(tmp_path / "s3" / "checkpoint.pt", weights_only=False))
    # the restart changed something: without it (no detail stage) the weights differ
    train_mini(tiny_config(steps=5, checkpoint_every=100, **stage1), tmp_path / "plain", progress=False)
    c = torch.load(tmp_path / "plain" / "checkpoint.pt", weights_only=False)
    assert not torch.equal(c["unet"]["conv_in.weight"], a["unet"]["conv_in.weight"])


def test_detail_stage_batch_size_is_the_warm_start_s_batch_size(tmp_path):
    # --detail-batch-size 2: the detail stage draws batches of 2 (the same scenes as the first 2 of
    # the full batch), and the run equals stage 1, then a warm start with --batch-size 2.
    assert [len(c) for _, c in _batches(tiny_config(**DETAIL, detail_batch_size=2), UNET_STREAM, 0, 5)] == [4, 4, 2, 2, 2]
    full, small = make_batch(scene_rng(0, UNET_STREAM, 3), 4), make_batch(scene_rng(0, UNET_STREAM, 3), 2)
    assert small.scenes == full.scenes[:2]
    one = tiny_config(steps=5, checkpoint_every=100, detail_batch_size=2, **DETAIL)
    train_mini(one, tmp_path / "one", progress=False)
    _stage1_then_warm_start(tmp_path, batch_size=2)
    a = torch.load(tmp_path / "one" / "checkpoint.pt", weights_only=False)
    _same_weights(a, torch.load(tmp_path / "s2" / "checkpoint.pt", weights_only=False))


def test_run_interrupted_in_the_detail_stage_resumes_to_the_same_weights(tmp_path):
    for stop in (2, 3):  # at the restart itself, and inside the detail stage
        train_mini(tiny_config(steps=stop, checkpoint_every=1, **DETAIL), tmp_path / f"split{stop}", progress=False)
        train_mini(tiny_config(steps=5, checkpoint_every=1, **DETAIL), tmp_path / f"split{stop}", resume=True, progress=False)
    train_mini(tiny_config(steps=5, checkpoint_every=100, **DETAIL), tmp_path / "straight", progress=False)
    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=False)
    for stop in (2, 3):
        _same_weights(a, torch.load(tmp_path / f"split{stop}" / "checkpoint.pt", weights_only=False))


def test_detail_stage_settings_are_checked():
    with pytest.raises(ValueError, match="detail_from < detail_to"):
        train_mini(tiny_config(anneal_to=10, detail_from=5, detail_to=20), "unused", progress=False)
    cfg = MiniConfig(lr=1e-3, warmup=10, anneal_from=50, anneal_to=100, detail_from=100, detail_to=200)
    lrs = [learning_rate(cfg, s) for s in range(220)]
    assert lrs[99] == pytest.approx(2e-5)  # stage 1 anneals to ~0 ...
    assert lrs[100] == pytest.approx(1e-4) and lrs[109] == pytest.approx(9.1e-4)  # ... the detail stage warms up again
    assert lrs[150] == pytest.approx(5e-4) and lrs[200] == 0.0 and max(lrs[200:]) == 0.0
    # a warm start inside the detail stage warms up from its own step
    assert learning_rate(cfg, 150, warm_from=150) == pytest.approx(5e-5)


def test_keep_exports_keeps_every_export_with_its_step(tmp_path):
    train_mini(tiny_config(vae_steps=2, steps=4, export_every=2, checkpoint_every=100, keep_exports=True), tmp_path,
               progress=False)  # fmt: skip
    for step in (2, 4):
        info = json.loads((tmp_path / "exports" / f"step{step}" / "unsee.json").read_text())
        assert info["training"]["steps"] == step and info["training"]["elapsed_s"] > 0
    a = StableDiffusionPipeline.from_pretrained(tmp_path / "exports" / "step4").unet.state_dict()
    b = StableDiffusionPipeline.from_pretrained(tmp_path / "pipeline").unet.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_frozen_token_embeddings_stay_at_initialisation(tmp_path):
    cfg = tiny_config(vae_steps=2, steps=3, lr=1e-2, warmup=1, checkpoint_every=100, freeze_token_embeddings=True)
    train_mini(cfg, tmp_path, progress=False)
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    init = build_components(cfg)["text_encoder"].state_dict()
    key = "embeddings.token_embedding.weight"
    assert torch.equal(ck["text_encoder"][key], init[key]) and torch.equal(ck["ema_text"][key], init[key])
    moved = "embeddings.position_embedding.weight"
    assert not torch.equal(ck["text_encoder"][moved], init[moved])


def test_frozen_text_encoder_stays_at_initialisation(tmp_path):
    cfg = tiny_config(vae_steps=2, steps=3, lr=1e-2, warmup=1, checkpoint_every=100, freeze_text_encoder=True)
    train_mini(cfg, tmp_path, progress=False)
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    comps = build_components(cfg)
    for key, t in comps["text_encoder"].state_dict().items():
        assert torch.equal(ck["text_encoder"][key], t) and torch.equal(ck["ema_text"][key], t), key
    assert not torch.equal(ck["unet"]["conv_in.weight"], comps["unet"].state_dict()["conv_in.weight"])


def test_text_lr_scale_scales_only_the_text_encoders_step(tmp_path):
    # Adam's first step is lr * g / (|g| + eps) plus decay lr * wd * p: both scale with the lr.
    moved = {}
    for scale in (1.0, 0.25):
        cfg = tiny_config(vae_steps=2, steps=1, warmup=1, checkpoint_every=100, text_lr_scale=scale)
        train_mini(cfg, tmp_path / str(scale), progress=False)
        ck = torch.load(tmp_path / str(scale) / "checkpoint.pt", weights_only=False)
        init = build_components(cfg)
        moved[scale] = {m: {k: ck[m][k] - v for k, v in init[m].state_dict().items()} for m in ("unet", "text_encoder")}
    for k, d in moved[1.0]["unet"].items():
        assert torch.allclose(moved[0.25]["unet"][k], d, atol=1e-7), k
    key = "encoder.layers.0.mlp.fc1.weight"
    assert moved[1.0]["text_encoder"][key].abs().max() > 1e-5
    for k, d in moved[1.0]["text_encoder"].items():
        assert torch.allclose(moved[0.25]["text_encoder"][k], 0.25 * d, atol=1e-7), k


def test_resume_refuses_another_config(tmp_path):
    train_mini(tiny_config(vae_steps=2, steps=1, checkpoint_every=1), tmp_path, progress=False)
    with pytest.raises(ValueError, match="another config"):
        train_mini(tiny_config(vae_steps=2, steps=2, lr=1e-5), tmp_path, resume=True, progress=False)
    # a checkpoint from before a setting existed resumes when that setting is at its default, and only then
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    del ck["config"]["text_grad_min_snr"], ck["config"]["text_lr_scale"]
    for group in ck["opt"]["param_groups"]:
        del group["lr_scale"]
    torch.save(ck, tmp_path / "checkpoint.pt")
    train_mini(tiny_config(vae_steps=2, steps=2, checkpoint_every=1), tmp_path, resume=True, progress=False)
    with pytest.raises(ValueError, match="another config"):
        train_mini(tiny_config(vae_steps=2, steps=3, text_grad_min_snr=1.0), tmp_path, resume=True, progress=False)
    # ... and a setting whose default has changed counts at what runs did before it existed
    off = dict(vae_steps=2, checkpoint_every=1, freeze_text_encoder=False, text_pretrain_steps=0)
    train_mini(tiny_config(steps=1, **off), tmp_path / "old", progress=False)
    ck = torch.load(tmp_path / "old" / "checkpoint.pt", weights_only=False)
    del ck["config"]["freeze_text_encoder"], ck["config"]["text_pretrain_steps"]
    torch.save(ck, tmp_path / "old" / "checkpoint.pt")
    with pytest.raises(ValueError, match="another config"):
        train_mini(tiny_config(steps=2, **(off | {"freeze_text_encoder": True})), tmp_path / "old", resume=True, progress=False)
    train_mini(tiny_config(steps=2, **off), tmp_path / "old", resume=True, progress=False)
    with pytest.raises(FileNotFoundError, match="without `resume=True`"):
        train_mini(tiny_config(), tmp_path / "empty", resume=True, progress=False)


def test_shipped_model_records_how_it_was_trained():
    info = json.loads((BUNDLED["mini"] / "unsee.json").read_text())
    assert info["sampling"]["steps"] > 0 and info["training"]["steps"] > 0
    # `unsee world train` with no flags reproduces what ships: the same settings, trained to the end.
    made, default = info["training"]["config"], json.loads(json.dumps(asdict(MiniConfig())))
    assert _result_config(made) == _result_config(default)
    assert info["training"]["steps"] == default["steps"]


def test_learning_rate_warms_up_holds_and_anneals_to_zero():
    cfg = MiniConfig(lr=1e-3, warmup=10, anneal_from=100, anneal_to=200)
    lrs = [learning_rate(cfg, s) for s in range(250)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(x == pytest.approx(1e-3) for x in lrs[9:101])
    assert lrs[150] == pytest.approx(5e-4) and lrs[200] == 0.0 and max(lrs[200:]) == 0.0
    assert all(a >= b for a, b in zip(lrs[100:], lrs[101:]))  # monotone decay
    # a warm start (--init-from at step 100) warms up again, then follows the same absolute schedule
    assert learning_rate(cfg, 100, warm_from=100) == pytest.approx(1e-4)
    assert learning_rate(cfg, 150, warm_from=100) == pytest.approx(5e-4)


class _ConstantUNet(torch.nn.Module):
    """Predicts -c(t) everywhere, so the per-sample MSE is c(t)^2 + E[noise^2]: a known function of t."""

    device = torch.device("cpu")

    def forward(self, xt, t, cond):
        return SimpleNamespace(sample=-(t.float() / 500).view(-1, 1, 1, 1).expand_as(xt))


def test_weighted_timestep_sampling_keeps_the_min_snr_objective():
    # epsilon: the expected loss below is the epsilon target's (the branch default may be v)
    comps = build_components(tiny_config(prediction_type="epsilon", zero_terminal_snr=False)) | {"unet": _ConstantUNet()}
    batch = make_batch(scene_rng(0, 78, 0), 4096)
    w = min_snr_weights(5.0)
    t = torch.arange(len(w)).float()
    expected = float((w * ((t / 500) ** 2 + 1)).mean())  # uniform t, weight w(t), MSE c(t)^2 + 1
    with torch.no_grad():
        got = {s: diffusion_loss(comps, batch.images, batch.captions, w, torch.Generator().manual_seed(2), t_sampling=s).item()
               for s in ("uniform", "weighted")}  # fmt: skip
    for s, v in got.items():
        assert v == pytest.approx(expected, rel=0.04), s
    with pytest.raises(ValueError, match="t_sampling"):
        diffusion_loss(comps, batch.images[:2], batch.captions[:2], w, torch.Generator(), t_sampling="sqrt")


def test_text_grad_min_snr_stops_only_the_text_encoders_gradient_from_noisy_samples():
    comps = build_components(tiny_config(**V))
    batch = make_batch(scene_rng(0, 79, 0), 16)
    w = min_snr_weights(5.0, comps["scheduler"])  # 16 uniform draws of t: samples on both sides of SNR 1 (checked last)

    def grads(thr: float):
        for m in (comps["unet"], comps["text_encoder"]):
            m.zero_grad(set_to_none=True)
        loss = diffusion_loss(comps, batch.images, batch.captions, w, torch.Generator().manual_seed(3), text_grad_min_snr=thr)
        loss.backward()
        te = torch.cat([p.grad.flatten() if p.grad is not None else torch.zeros(p.numel())
                        for p in comps["text_encoder"].parameters()])  # fmt: skip
        return loss.item(), torch.cat([p.grad.flatten() for p in comps["unet"].parameters()]), te

    (l0, u0, t0), (l1, u1, t1), (li, ui, ti) = grads(0.0), grads(1.0), grads(float("inf"))
    assert l0 == l1 == li  # the same features go forward ...
    torch.testing.assert_close(u1, u0)  # ... and the UNet learns the same
    torch.testing.assert_close(ui, u0)
    assert ti.abs().max() == 0 and t0.abs().max() > 0  # no sample passes, or every sample does
    assert t1.abs().max() > 0 and not torch.allclose(t1, t0)  # only the low-noise ones do (so the batch had both)


def test_v_target_is_the_schedulers_velocity():
    sched = build_components(tiny_config(**V))["scheduler"]
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(5, 4, 8, 8, generator=g), torch.randn(5, 4, 8, 8, generator=g)
    t = torch.tensor([0, 250, 500, 998, 999])
    a = sched.alphas_cumprod[t].view(-1, 1, 1, 1)
    ref = DDPMScheduler.from_config(sched.config).get_velocity(x0, noise, t)
    torch.testing.assert_close(training_target(x0, noise, a, "v_prediction"), ref)
    assert torch.equal(training_target(x0, noise, a, "epsilon"), noise)
    # at t = T there is no signal left: v is -x0, the image the prompt alone must give
    torch.testing.assert_close(training_target(x0, noise, a, "v_prediction")[-1], -x0[-1])


def test_zero_terminal_snr_trains_the_pure_noise_step():
    sched = build_components(tiny_config(**V))["scheduler"]
    assert sched.alphas_cumprod[-1] == 0
    w = min_snr_weights(5.0, sched)
    assert bool((w > 0).all()) and w[-1] == w.max() == 1.0
    # min-SNR's own v weight, min(SNR, gamma) / (SNR + 1), would be 0 here and t = T never drawn
    draws = torch.multinomial(w, 20_000, replacement=True, generator=torch.Generator().manual_seed(0))
    assert int((draws == len(w) - 1).sum()) > 0
    # where SNR >= 1 the v weights are min-SNR's: w_v = w_eps * SNR / (SNR + 1) on the same schedule
    snr = sched.alphas_cumprod / (1 - sched.alphas_cumprod)
    w_eps = torch.clamp(snr, max=5.0) / snr
    torch.testing.assert_close(w[snr >= 1], (w_eps * snr / (snr + 1))[snr >= 1])
    # a lower floor trains the steps near t = T less, but still trains them
    w_low = min_snr_weights(5.0, sched, snr_floor=0.1)
    assert w_low[-1] == pytest.approx(0.1) and torch.equal(w_low[snr >= 1], w[snr >= 1])
    with pytest.raises(ValueError, match="snr_floor"):
        min_snr_weights(5.0, sched, snr_floor=0.0)
    # the sampler starts at t = T, where training put pure noise
    sched.set_timesteps(10)
    assert int(sched.timesteps[0]) == 999


def test_zero_terminal_snr_needs_v_prediction():
    with pytest.raises(ValueError, match="v_prediction"):
        build_components(tiny_config(prediction_type="epsilon", zero_terminal_snr=True))
    with pytest.raises(ValueError, match="prediction_type"):
        scheduler_config("sample")
