"""LoRA export (issue 28, item 5): an edit's weight deltas by truncated SVD, loaded by plain diffusers."""

from __future__ import annotations

import copy
import json

import pytest
import torch

import unsee.methods
from unsee.cli import main
from unsee.edits import Edit
from unsee.export.lora import REPORT_NAME, WEIGHTS_NAME, LoraExport, export_lora
from unsee.models import fingerprint, load_pipeline
from unsee.testing import sd14_shaped_pipeline

BLOCK = "unet.down_blocks.0.attentions.0.transformer_blocks.0"
# Layers of the mini model that allow rank 64 at most, one of each kind a LoRA carries: linear layers of
# cross-attention and of the time embedding, a 3x3 and a 1x1 convolution.
FULL_64 = [f"{BLOCK}.attn2.to_k.weight", f"{BLOCK}.attn2.to_q.weight", "unet.down_blocks.0.resnets.0.time_emb_proj.weight",
           "unet.down_blocks.0.resnets.0.conv1.weight", "unet.down_blocks.0.attentions.0.proj_in.weight"]  # fmt: skip
# Text-encoder projections (128 wide in the mini): moved by deltas of rank 64 only, so rank 64 is exact for them too.
TEXT = ["text_encoder.encoder.layers.0.self_attn.q_proj.weight", "text_encoder.encoder.layers.0.mlp.fc1.weight"]


def value(pipe, key: str) -> torch.Tensor:
    comp, _, name = key.partition(".")
    return dict(getattr(pipe, comp).named_parameters())[name].detach().clone()


def make_edit(pipe, keys, seed: int = 0, rank: int | None = None) -> Edit:
    """Move each of ``keys`` by a seeded random delta (of rank ``rank`` at most, when given)."""
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for k in keys:
        w = value(pipe, k)
        if rank is None:
            delta = torch.randn(w.shape, generator=g)
        else:
            delta = (torch.randn(w.shape[0], rank, generator=g) @ torch.randn(rank, w[0].numel(), generator=g)).reshape(w.shape)
        tensors[k] = w + 0.01 * delta / delta.std()
    return Edit("test", {"seed": seed}, ("circle",), fingerprint(pipe), seed, tensors)


def state(pipe) -> dict[str, torch.Tensor]:
    return {f"{c}.{k}": v.detach().clone() for c in ("unet", "text_encoder") for k, v in getattr(pipe, c).state_dict().items()}


@torch.no_grad()
def outputs(pipe) -> torch.Tensor:
    """The UNet's noise prediction for fixed latents, timestep and prompt (through the text encoder)."""
    g = torch.Generator().manual_seed(0)
    size = pipe.unet.config.sample_size
    ids = pipe.tokenizer(["a red circle"], padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         return_tensors="pt").input_ids  # fmt: skip
    x = torch.randn(1, pipe.unet.config.in_channels, size, size, generator=g)
    return pipe.unet(x, 500, pipe.text_encoder(ids)[0]).sample


def fused(folder, pipe=None):
    """``pipe`` (a fresh mini model by default) with the LoRA at ``folder`` loaded by plain diffusers (unless it is
    already), fused and unloaded: a plain pipeline again."""
    pipe = load_pipeline("mini") if pipe is None else pipe
    if not pipe.get_list_adapters():
        pipe.load_lora_weights(folder)
    assert pipe.get_active_adapters() == ["default_0"]
    pipe.fuse_lora()
    pipe.unload_lora_weights()
    return pipe


def test_full_rank_lora_loads_in_diffusers_and_reproduces_the_edit(mini_pipe, tmp_path):
    tensors = make_edit(mini_pipe, FULL_64).tensors | make_edit(mini_pipe, TEXT, seed=1, rank=64).tensors
    edit = Edit("test", {}, ("circle",), fingerprint(mini_pipe), 0, tensors)
    lora = export_lora(edit, mini_pipe, rank=64)
    assert isinstance(lora, LoraExport) and lora.rank == 64 and not lora.dropped
    assert max(lora.errors.values()) < 1e-6 and set(lora.errors) == set(edit.tensors)
    conv = "unet.down_blocks.0.resnets.0.conv1"
    assert lora.state_dict[f"{conv}.lora_A.weight"].shape == (64, 64, 3, 3)
    assert lora.state_dict[f"{conv}.lora_B.weight"].shape == (64, 64, 1, 1)
    lora.save(tmp_path / "lora")
    assert (tmp_path / "lora" / WEIGHTS_NAME).exists()
    with edit.applied(mini_pipe):
        want, want_out = state(mini_pipe), outputs(mini_pipe)
    fresh = load_pipeline("mini")
    fresh.load_lora_weights(tmp_path / "lora")  # plain diffusers, nothing else
    torch.testing.assert_close(outputs(fresh), want_out, rtol=0, atol=1e-5)
    got = state(fused(tmp_path / "lora", fresh))
    assert got.keys() == want.keys()
    assert max((got[k] - want[k]).abs().max().item() for k in want) < 1e-5
    assert max((got[k] - edit.tensors[k]).abs().max().item() for k in edit.tensors) < 1e-5


def test_error_falls_with_rank_as_eckart_young_says(mini_pipe):
    keys = [f"{BLOCK}.attn2.to_k.weight", "unet.mid_block.attentions.0.transformer_blocks.0.attn2.to_v.weight",
            "unet.down_blocks.0.resnets.0.conv1.weight"]  # fmt: skip
    edit = make_edit(mini_pipe, keys, seed=2)
    errors = {r: export_lora(edit, mini_pipe, rank=r) for r in (1, 4, 16, 64)}
    for key in keys:
        delta = edit.tensors[key].double() - value(mini_pipe, key).double()
        s = torch.linalg.svdvals(delta.flatten(1))
        curve = [errors[r].errors[key] for r in (1, 4, 16, 64)]
        assert all(a > b for a, b in zip(curve, curve[1:])), curve
        for r, lora in errors.items():
            eckart_young = float(s[r:].square().sum().sqrt() / delta.norm())
            assert lora.errors[key] == pytest.approx(eckart_young, rel=1e-5, abs=1e-7)
            # the reported error is the stored factors' own
            module = key.removesuffix(".weight")
            a, b = lora.state_dict[f"{module}.lora_A.weight"].double(), lora.state_dict[f"{module}.lora_B.weight"].double()
            assert a.shape[0] == b.shape[1] == r
            ba = (b.flatten(1) @ a.flatten(1)).reshape(delta.shape)
            assert lora.errors[key] == pytest.approx(float((delta - ba).norm() / delta.norm()), rel=1e-6, abs=1e-12)


def test_a_rank_larger_than_a_layer_allows_is_refused_in_one_line(mini_pipe, tmp_path, capsys):
    mid = "unet.mid_block.attentions.0.transformer_blocks.0.attn2.to_v.weight"
    edit = make_edit(mini_pipe, [f"{BLOCK}.attn2.to_k.weight", mid])
    with pytest.raises(ValueError, match=r"`rank=65` is larger .*attn2\.to_k\.weight \(64x128\).* allows is 64$") as e:
        export_lora(edit, mini_pipe, rank=65)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="`rank` must be at least 1"):
        export_lora(edit, mini_pipe, rank=0)
    edit.save(tmp_path / "edit")
    assert main(["export", str(tmp_path / "edit"), "--format", "lora", "--rank", "65", "--out", str(tmp_path / "l")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("unsee: error: --rank 65 is larger") and "allows is 64" in err and "\n" not in err
    assert not (tmp_path / "l").exists()


def test_a_changed_bias_or_norm_is_refused_unless_dropping_is_allowed(mini_pipe, tmp_path, capsys):
    bias, norm = f"{BLOCK}.attn2.to_out.0.bias", "unet.down_blocks.0.resnets.0.norm1.weight"
    same = f"{BLOCK}.attn2.to_v.weight"  # stored by the edit, but equal to the base: nothing to carry or to drop
    edit = make_edit(mini_pipe, [f"{BLOCK}.attn2.to_k.weight", bias, norm])
    edit = Edit("test", {}, ("circle",), edit.base_fingerprint, 0, edit.tensors | {same: value(mini_pipe, same)})
    with pytest.raises(ValueError, match=r"changes 2 tensors a LoRA cannot carry \(.*to_out\.0\.bias, .*norm1\.weight\).*"
                       r"`allow_dropped=True`") as e:  # fmt: skip
        export_lora(edit, mini_pipe, rank=4)
    assert "\n" not in str(e.value)
    lora = export_lora(edit, mini_pipe, rank=4, allow_dropped=True)
    assert lora.dropped == (bias, norm) and lora.unchanged == (same,)
    assert set(lora.state_dict) == {f"{BLOCK}.attn2.to_k.lora_A.weight", f"{BLOCK}.attn2.to_k.lora_B.weight"}
    edit.save(tmp_path / "edit")
    args = ["export", str(tmp_path / "edit"), "--format", "lora", "--rank", "4", "--out", str(tmp_path / "lora")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "--allow-dropped" in err and "norm1.weight" in err and "\n" not in err
    assert main([*args, "--allow-dropped"]) == 0
    assert "left out 2 changed tensors" in capsys.readouterr().out
    report = json.loads((tmp_path / "lora" / REPORT_NAME).read_text())
    assert report["dropped"] == [bias, norm] and report["unchanged"] == [same]
    # the bias and the norm stay the base model's; the weight is the edit's, to the rank-4 error
    got = state(fused(tmp_path / "lora"))
    assert torch.equal(got[bias], value(mini_pipe, bias)) and torch.equal(got[norm], value(mini_pipe, norm))
    key = f"{BLOCK}.attn2.to_k.weight"
    delta = edit.tensors[key] - value(mini_pipe, key)
    rel = float((got[key] - edit.tensors[key]).norm() / delta.norm())
    assert rel == pytest.approx(lora.errors[key], rel=1e-3)


def test_cli_writes_the_lora_folder_and_its_report(mini_pipe, tmp_path, capsys):
    edit = make_edit(mini_pipe, FULL_64[:3])
    edit.save(tmp_path / "edit")
    out = tmp_path / "lora"
    assert main(["export", str(tmp_path / "edit"), "--format", "lora", "--rank", "4", "--out", str(out)]) == 0
    printed = capsys.readouterr().out.strip()
    assert "\n" not in printed and printed.startswith("LoRA of rank 4 on 3 layers written to") and WEIGHTS_NAME in printed
    assert sorted(p.name for p in out.iterdir()) == sorted([WEIGHTS_NAME, REPORT_NAME])
    report = json.loads((out / REPORT_NAME).read_text())
    assert report["rank"] == 4 and report["lora_alpha"] == 4 and report["dropped"] == []
    assert report["base_fingerprint"] == fingerprint(mini_pipe) and report["edit_digest"] == edit.digest
    assert report["model"] == "mini" and report["method"] == "test" and report["concepts"] == ["circle"]
    assert set(report["errors"]) == set(FULL_64[:3]) and all(0 < e < 1 for e in report["errors"].values())
    assert report["max_error"] == max(report["errors"].values())
    pipe = load_pipeline("mini")
    pipe.load_lora_weights(out)
    assert pipe.get_active_adapters() == ["default_0"]
    with pytest.raises(SystemExit):  # a full merged folder is `unsee apply`'s job
        main(["export", str(tmp_path / "edit"), "--format", "full", "--rank", "4", "--out", str(tmp_path / "full")])


def test_a_real_erasure_of_a_random_weight_pipeline_exports_at_full_rank(tiny_pipe, tmp_path):
    """Beyond the mini: EAP on a random-weight SD-shaped pipeline built in code; its cross-attention edit changes the
    output projections' biases, which a LoRA leaves out (when allowed) and the rest is carried exactly."""
    base = copy.deepcopy(tiny_pipe)
    cfg = unsee.methods.make_config("eap", iterations=2, batch_size=2, ddim_steps=3)
    edit = unsee.methods.erase(tiny_pipe, ["circle"], cfg, torch.Generator().manual_seed(0))
    biases = sorted(k for k in edit.tensors if k.endswith(".bias"))
    assert biases, "eap's xattn edit was expected to change the to_out biases"
    with pytest.raises(ValueError, match="a LoRA cannot carry"):
        export_lora(edit, tiny_pipe, rank=32)
    lora = export_lora(edit, tiny_pipe, rank=32, allow_dropped=True)  # every layer of the tiny UNet allows 32
    assert list(lora.dropped) == biases and max(lora.errors.values()) < 1e-5
    lora.save(tmp_path / "lora")
    weights_only = Edit("test", {}, ("circle",), edit.base_fingerprint, 0,
                        {k: v for k, v in edit.tensors.items() if k not in biases})  # fmt: skip
    with weights_only.applied(tiny_pipe):
        want, want_out = state(tiny_pipe), outputs(tiny_pipe)
    fresh = base
    fresh.load_lora_weights(tmp_path / "lora")
    torch.testing.assert_close(outputs(fresh), want_out, rtol=0, atol=1e-5)
    got = state(fused(tmp_path / "lora", fresh))
    assert max((got[k] - want[k]).abs().max().item() for k in want) < 1e-5


@pytest.mark.slow
def test_an_sd14_shaped_pipeline_takes_the_lora(tmp_path):
    """SD-1.4's true shapes (random weights): every cross-attention projection and a 3x3 convolution of the first
    block, exported at rank 16 and loaded by plain diffusers."""
    pipe = sd14_shaped_pipeline(seed=0)
    block = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2"
    keys = [f"{block}.{p}.weight" for p in ("to_q", "to_k", "to_v", "to_out.0")] + ["unet.down_blocks.0.resnets.0.conv1.weight"]
    edit = make_edit(pipe, keys, rank=16)
    lora = export_lora(edit, pipe, rank=16)
    assert max(lora.errors.values()) < 1e-5
    lora.save(tmp_path / "lora")
    got = fused(tmp_path / "lora", pipe)
    assert max((value(got, k) - edit.tensors[k]).abs().max().item() for k in keys) < 1e-5
