"""One contract every erasure method must pass: a new method gets the whole suite by registering."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import StableDiffusionPipeline

from unsee.edits import Edit, FingerprintMismatch
from unsee.methods import Run, config_class, config_from_dict, erase, make_config, methods
from unsee.models import fingerprint

FAST = dict(iterations=2, batch_size=2, ddim_steps=3)
CONCEPTS = ["circle", "square"]
TRAINED = [m for m in methods() if config_class(m).trains]
"""The fine-tuning methods; a closed-form one (uce) has no iterations, random draws or checkpoints."""


def _fast(method: str, **kw) -> dict:
    return (FAST if config_class(method).trains else {}) | kw


def _images(pipe, method: str) -> dict:
    """D_ce for the methods that learn from pictures: 3 fixed random images per concept at the model's size."""
    if not config_class(method).uses_images:
        return {}
    size = pipe.vae_scale_factor * pipe.unet.config.sample_size
    g = torch.Generator().manual_seed(123)
    return {"images": [torch.rand(3, 3, size, size, generator=g) for _ in CONCEPTS]}


def _erase(pipe, method, seed=0, **kw):
    cfg = make_config(method, **_fast(method, **kw))
    return erase(pipe, CONCEPTS, cfg, torch.Generator().manual_seed(seed), **_images(pipe, method))


@pytest.mark.parametrize("method", methods())
def test_runs_and_changes_only_its_declared_parameters(tiny_pipe, method):
    before = fingerprint(tiny_pipe)
    originals = {n: p.detach().clone() for n, p in tiny_pipe.unet.named_parameters()}
    edit = _erase(tiny_pipe, method)
    assert isinstance(edit, Edit) and edit.method == method and edit.concepts == tuple(CONCEPTS)
    assert fingerprint(tiny_pipe) == before == edit.base_fingerprint, "erase leaves the pipeline unchanged"
    declared = {f"unet.{n}" for n in make_config(method).changed_params(tiny_pipe.unet)}
    assert declared and set(edit.tensors) == declared
    moved = [k for k, v in edit.tensors.items() if not torch.equal(v, originals[k.split(".", 1)[1]])]
    assert moved, "training changed at least one declared tensor"


@pytest.mark.parametrize("method", methods())
def test_runs_on_a_v_prediction_pipeline(tiny_v_pipe, method):
    # SD-2 style models predict v; every method compares UNet outputs, so it must work unchanged
    edit = _erase(tiny_v_pipe, method)
    assert edit.tensors and all(bool(torch.isfinite(v).all()) for v in edit.tensors.values())
    edit.apply(tiny_v_pipe)
    assert fingerprint(tiny_v_pipe) != edit.base_fingerprint


@pytest.mark.parametrize("method", methods())
def test_same_seed_same_edit(tiny_pipe, method):
    a, b = _erase(tiny_pipe, method, seed=3), _erase(tiny_pipe, method, seed=3)
    for k in a.tensors:
        assert torch.equal(a.tensors[k], b.tensors[k]), k
    c = _erase(tiny_pipe, method, seed=4)
    differ = any(not torch.equal(a.tensors[k], c.tensors[k]) for k in a.tensors)
    # a trained edit follows its generator; a closed form has nothing random, so the seed must not matter
    assert differ == config_class(method).trains


@pytest.mark.parametrize("method", methods())
def test_save_load_apply_restore_are_exact(tiny_pipe, method, tmp_path):
    edit = _erase(tiny_pipe, method)
    edit.save(tmp_path / "e")
    loaded = Edit.load(tmp_path / "e")
    assert loaded.method == edit.method and loaded.config == edit.config and loaded.seed == edit.seed
    for k in edit.tensors:
        assert torch.equal(loaded.tensors[k], edit.tensors[k])
    base_fp = fingerprint(tiny_pipe)
    originals = {n: p.detach().clone() for n, p in tiny_pipe.unet.named_parameters()}
    undo = loaded.apply(tiny_pipe)
    params = dict(tiny_pipe.unet.named_parameters())
    for k, v in loaded.tensors.items():
        assert torch.equal(params[k.split(".", 1)[1]].detach(), v)
    assert fingerprint(tiny_pipe) != base_fp
    undo.restore()
    assert fingerprint(tiny_pipe) == base_fp
    for n, p in tiny_pipe.unet.named_parameters():
        assert torch.equal(p.detach(), originals[n]), n


@pytest.mark.parametrize("method", methods())
def test_config_round_trips_through_json(method):
    cfg = make_config(method, **_fast(method))
    again = config_from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and type(again) is type(cfg)


@pytest.mark.parametrize("method", TRAINED)
def test_interrupted_erasure_resumes_to_the_same_edit(tiny_pipe, method, tmp_path):
    cfg = make_config(method, **(FAST | {"iterations": 4}))
    ims = _images(tiny_pipe, method)
    straight = erase(tiny_pipe, CONCEPTS, cfg, torch.Generator().manual_seed(0), **ims)
    part = make_config(method, **(FAST | {"iterations": 2}))
    erase(tiny_pipe, CONCEPTS, part, torch.Generator().manual_seed(0), run=Run(tmp_path, 2, progress=False), **ims)
    resumed = erase(tiny_pipe, CONCEPTS, cfg, torch.Generator().manual_seed(0),
                    run=Run(tmp_path, 2, resume=True, progress=False), **ims)  # fmt: skip
    for k in straight.tensors:
        torch.testing.assert_close(resumed.tensors[k], straight.tensors[k], rtol=0, atol=0)


@pytest.mark.parametrize("method", methods())
def test_nan_loss_is_a_clear_error(tiny_pipe, method):
    trains = config_class(method).trains
    # a NaN where the method reads: anywhere for a trained UNet, a projection it solves for in closed form
    name = "conv_in.bias" if trains else make_config(method).changed_params(tiny_pipe.unet)[0]
    with torch.no_grad():
        dict(tiny_pipe.unet.named_parameters())[name].view(-1)[0] = float("nan")
    with pytest.raises(FloatingPointError, match=r"lower `lr` \(now " if trains else r"not finite.*raise `lamb`"):
        _erase(tiny_pipe, method)


@pytest.mark.parametrize("method", sorted(set(methods()) - set(TRAINED)))
def test_closed_form_refuses_resume_and_is_exactly_repeatable(tiny_pipe, method, tmp_path):
    a = _erase(tiny_pipe, method)
    b = erase(tiny_pipe, CONCEPTS, make_config(method), torch.Generator().manual_seed(0), run=Run(tmp_path, progress=False))
    assert all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors)
    assert not list(tmp_path.iterdir()), "a closed form writes no checkpoint"
    with pytest.raises(ValueError, match="nothing to resume; drop `resume`"):
        erase(tiny_pipe, CONCEPTS, make_config(method), run=Run(tmp_path, resume=True, progress=False))


@pytest.mark.parametrize("method", methods())
def test_bad_concepts_are_refused(tiny_pipe, method):
    cfg = make_config(method, **_fast(method))
    with pytest.raises(ValueError, match="no concept"):
        erase(tiny_pipe, [], cfg)
    with pytest.raises(ValueError, match="empty concept"):
        erase(tiny_pipe, ["  "], cfg)
    with pytest.raises(ValueError, match="splits 'zebra'.*pass `allow_split=True`"):
        erase(tiny_pipe, ["zebra"], cfg)


def test_unknown_method_and_setting():
    with pytest.raises(ValueError, match="unknown method 'nope'; available: age, eap, .*uce"):
        make_config("nope")
    with pytest.raises(ValueError, match="esd has no setting colour"):
        make_config("esd", colour=1)
    with pytest.raises(ValueError, match="unknown parameter set"):
        make_config("esd", params="everything")


@pytest.mark.parametrize("params", ["xattn", "noxattn", "selfattn", "full"])
def test_esd_parameter_sets(tiny_pipe, params):
    edit = _erase(tiny_pipe, "esd", params=params, iterations=1)
    names = {k.split(".", 1)[1] for k in edit.tensors}
    if params == "xattn":
        assert names and all("attn2" in n for n in names)
    elif params == "selfattn":
        assert names and all("attn1" in n for n in names)
    elif params == "noxattn":
        assert not any("attn2" in n for n in names) and "conv_in.weight" in names
        assert not any(n.startswith(("time_embedding", "conv_out")) for n in names)
    else:
        assert names == {n for n, _ in tiny_pipe.unet.named_parameters()}


def test_edit_refuses_another_base_model_unless_forced(tiny_pipe, tmp_path):
    edit = _erase(tiny_pipe, "esd")
    with torch.no_grad():
        tiny_pipe.unet.conv_in.bias.add_(1.0)
    with pytest.raises(FingerprintMismatch, match="pass `force=True`"):
        edit.apply(tiny_pipe)
    edit.apply(tiny_pipe, force=True).restore()


def test_merge_writes_a_plain_diffusers_folder(tiny_pipe, tmp_path):
    edit = _erase(tiny_pipe, "esd")
    base_fp = fingerprint(tiny_pipe)
    edit.merge(tiny_pipe, tmp_path / "merged")
    assert fingerprint(tiny_pipe) == base_fp
    merged = StableDiffusionPipeline.from_pretrained(tmp_path / "merged")
    params = dict(merged.unet.named_parameters())
    for k, v in edit.tensors.items():
        assert torch.equal(params[k.split(".", 1)[1]].detach(), v)
