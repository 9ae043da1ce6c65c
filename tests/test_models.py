"""Loading pipelines: bundled, local folder, hub id; one-line errors that name the fix; fingerprints."""

from __future__ import annotations

import json

import pytest
import torch

from unsee.models import ModelError, SamplingDefaults, fingerprint, load_pipeline, resolve, sampling_defaults
from unsee.world.mini import SAMPLING


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_missing_folder(tmp_path):
    with pytest.raises(ModelError) as e:
        load_pipeline(tmp_path / "nowhere")
    assert "no folder" in _one_line(e) and "hub id" in _one_line(e)


def test_folder_that_is_not_a_pipeline(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"0")
    with pytest.raises(ModelError) as e:
        load_pipeline(tmp_path)
    assert "model_index.json" in _one_line(e) and "save_pretrained" in _one_line(e)


def test_folder_with_another_pipeline_class(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    with pytest.raises(ModelError) as e:
        load_pipeline(tmp_path)
    assert "FluxPipeline" in _one_line(e)


def test_unknown_name():
    with pytest.raises(ModelError) as e:
        load_pipeline("not-a-model")
    assert "unknown model" in _one_line(e) and "mini" in _one_line(e)


def test_hub_unreachable_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError) as e:
        load_pipeline("unsee-test/definitely-not-cached")
    assert "HF_HUB_OFFLINE" in _one_line(e) and "local folder" in _one_line(e)


def test_local_folder_round_trip(tiny_pipe, tmp_path):
    tiny_pipe.save_pretrained(tmp_path / "p")
    assert resolve(tmp_path / "p") == tmp_path / "p"
    pipe = load_pipeline(tmp_path / "p")
    assert pipe.unet.dtype == torch.float32
    assert fingerprint(pipe) == fingerprint(tiny_pipe)


def test_fingerprint_tracks_weights_not_dtype(tiny_pipe):
    fp = fingerprint(tiny_pipe)
    assert fp == fingerprint(tiny_pipe)
    with torch.no_grad():
        next(tiny_pipe.unet.parameters()).add_(0.5)
    assert fingerprint(tiny_pipe) != fp
    fp2 = fingerprint(tiny_pipe)
    tiny_pipe.to(dtype=torch.float16)
    assert fingerprint(tiny_pipe) == fp2


def test_mini_sampling_defaults():
    d = sampling_defaults("mini")
    assert (d.steps, d.guidance_scale) == (SAMPLING["steps"], SAMPLING["guidance_scale"]), "the trainer exports what ships"
    assert sampling_defaults("some/hub-id").steps == 50


def test_sampling_defaults_follow_a_loaded_pipeline(mini_pipe, tiny_pipe):
    from unsee.metrics.judged import prompt_images

    assert sampling_defaults(mini_pipe) == sampling_defaults("mini")
    assert sampling_defaults(tiny_pipe) == SamplingDefaults(), "built in code: SD's 50 steps at 7.5"
    # metrics sample a model as it is meant to be sampled unless told otherwise
    d = sampling_defaults(mini_pipe)
    own = prompt_images(mini_pipe, ["a red circle"], n=1)[0]
    assert torch.equal(own, prompt_images(mini_pipe, ["a red circle"], n=1, steps=d.steps, guidance_scale=d.guidance_scale)[0])
    assert not torch.equal(own, prompt_images(mini_pipe, ["a red circle"], n=1, steps=d.steps // 2)[0])
