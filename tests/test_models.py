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


def test_split_geglu_is_geglu_with_the_same_parameters():
    from diffusers.models.activations import GEGLU

    from unsee.models import SplitGEGLU, split_geglu

    torch.manual_seed(0)
    ref = torch.nn.Sequential(GEGLU(16, 24), GEGLU(24, 8))
    fast = torch.nn.Sequential(GEGLU(16, 24), GEGLU(24, 8))
    fast.load_state_dict(ref.state_dict())
    assert split_geglu(fast) == 2 and all(type(m) is SplitGEGLU for m in fast)
    assert list(fast.state_dict()) == list(ref.state_dict())
    x = torch.randn(3, 5, 16)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), ref(x), rtol=1e-5, atol=1e-6)
    # Training: the same gradients (the in-place product runs only without autograd).
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ref(xa).square().sum().backward()
    fast(xb).square().sum().backward()
    torch.testing.assert_close(xb.grad, xa.grad, rtol=1e-5, atol=1e-6)
    for (n, p), q in zip(fast.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-6, msg=n)


def test_split_geglu_runs_a_wrapped_projection():
    # A LoRA layer (peft) replaces `proj` by a wrapper: its output, not the bare weight's, must reach the gate.
    from diffusers.models.activations import GEGLU

    from unsee.models import split_geglu

    class Shifted(torch.nn.Module):
        def __init__(self, lin: torch.nn.Linear):
            super().__init__()
            self.lin, self.out_features = lin, lin.out_features

        def forward(self, x):
            return self.lin(x) + 1.0

    torch.manual_seed(0)
    ref, fast = GEGLU(8, 4), GEGLU(8, 4)
    fast.load_state_dict(ref.state_dict())
    split_geglu(fast)
    ref.proj, fast.proj = Shifted(ref.proj), Shifted(fast.proj)
    x = torch.randn(2, 8)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), ref(x))


def test_load_pipeline_splits_the_gates_on_cpu_only_when_asked(tiny_pipe, tmp_path):
    from unsee.models import SplitGEGLU

    tiny_pipe.save_pretrained(tmp_path)
    gates = lambda p: {type(m).__name__ for m in p.unet.modules() if "GEGLU" in type(m).__name__}  # noqa: E731
    assert gates(load_pipeline(tmp_path)) == {SplitGEGLU.__name__}
    plain = load_pipeline(tmp_path, split_ff=False)
    assert gates(plain) == {"GEGLU"}
    fast = load_pipeline(tmp_path)
    g = torch.Generator().manual_seed(0)
    z, t = torch.randn(2, 4, 8, 8, generator=g), torch.tensor([10, 500])
    c = torch.randn(2, 7, plain.unet.config.cross_attention_dim, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(fast.unet(z, t, c).sample, plain.unet(z, t, c).sample, rtol=1e-4, atol=1e-5)


def test_keep_freed_memory_applies_on_glibc():
    import platform

    from unsee.machine import keep_freed_memory

    assert keep_freed_memory() is (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")
