"""SDXL (issue 28, item 4) on a tiny random-weight pipeline built in code: unsee's one sampler equals
``StableDiffusionXLPipeline.__call__``, erasure and LoRA export work on it, and an edit refuses the other family.
The true-configuration checks (SD-1.4, SD-2.1, SDXL) are the slow tests of ``test_real_configs.py``."""

from __future__ import annotations

import pytest
import torch
from diffusers import StableDiffusionXLPipeline

import unsee.methods
from unsee.edits import Edit
from unsee.export.lora import export_lora, product
from unsee.models import architecture, fingerprint, load_pipeline, model_source
from unsee.sampling import encode_prompts, is_xl, sample, sample_until, unet_eps
from unsee.testing import tiny_sdxl_pipeline

PROMPTS = ["a red circle", "a blue star on a dotted background"]


@pytest.fixture
def xl_pipe() -> StableDiffusionXLPipeline:
    return tiny_sdxl_pipeline(seed=0)


def esd_edit(pipe, iterations: int = 2) -> Edit:
    cfg = unsee.methods.make_config("esd", params="xattn", iterations=iterations, batch_size=1, ddim_steps=2)
    return unsee.methods.erase(pipe, "circle", cfg, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("guidance", [1.0, 6.0])
def test_parity_with_the_sdxl_pipeline(xl_pipe, guidance):
    ours = sample(xl_pipe, PROMPTS, steps=3, guidance_scale=guidance, generator=torch.Generator().manual_seed(3))
    ref = xl_pipe(PROMPTS, num_inference_steps=3, guidance_scale=guidance, generator=torch.Generator().manual_seed(3),
                  output_type="pt").images  # fmt: skip
    assert ours.shape == ref.shape == (2, 3, 64, 64)
    assert (ours - ref).abs().max().item() <= 1e-5


def test_parity_at_another_size_and_with_a_negative_prompt(xl_pipe):
    # the size conditioning follows the latent's size; a non-empty negative prompt is encoded, not zeroed
    kw = dict(height=32, width=48, guidance_scale=5.0)
    ours = sample(xl_pipe, PROMPTS[:1], steps=2, negative_prompt="dotted", generator=torch.Generator().manual_seed(1), **kw)
    ref = xl_pipe(PROMPTS[:1], num_inference_steps=2, negative_prompt="dotted", generator=torch.Generator().manual_seed(1),
                  output_type="pt", **kw).images  # fmt: skip
    assert ours.shape == (1, 3, 32, 48)
    assert (ours - ref).abs().max().item() <= 1e-5


def test_the_packed_conditioning(xl_pipe):
    cond = encode_prompts(xl_pipe, ["", *PROMPTS])
    assert is_xl(xl_pipe) and cond.shape == (3, 78, 64)  # 77 tokens of 32 + 32, and the pooled token
    embeds, _, pooled, _ = xl_pipe.encode_prompt(PROMPTS, do_classifier_free_guidance=False)
    torch.testing.assert_close(cond[1:, :77], embeds, rtol=0, atol=0)
    torch.testing.assert_close(cond[1:, 77, :32], pooled, rtol=0, atol=0)
    assert not cond[1:, 77, 32:].any()
    assert not cond[0].any()  # force_zeros_for_empty_prompt: the unconditional input is zeros, as in the pipeline
    z = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        whole = unet_eps(xl_pipe.unet, z, torch.tensor(500), cond)
        rows = torch.cat([unet_eps(xl_pipe.unet, z[i : i + 1], torch.tensor(500), cond[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(whole, rows, atol=1e-5, rtol=0)


def test_learned_tokens_are_refused_on_sdxl(xl_pipe):
    with pytest.raises(ValueError, match="^learned tokens .* not supported on SDXL"):
        encode_prompts(xl_pipe, ["a <tok>"], {"<tok>": torch.zeros(1, 64)})


def test_esd_erases_on_sdxl_and_the_edit_knows_its_model(xl_pipe, tmp_path):
    base = fingerprint(xl_pipe)
    edit = esd_edit(xl_pipe)
    assert fingerprint(xl_pipe) == base  # the pipeline is left as it was
    assert edit.tensors and all(".attn2." in k for k in edit.tensors)
    assert edit.architecture == {"pipeline": "StableDiffusionXLPipeline", "cross_attention_dim": 64,
                                 "addition_embed_type": "text_time"}  # fmt: skip
    again = Edit.load(edit.save(tmp_path / "edit"))
    assert again.architecture == edit.architecture
    cond = encode_prompts(xl_pipe, ["circle"])
    part = sample_until(xl_pipe, cond, 1, steps=2, guidance_scale=3.0, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = unet_eps(xl_pipe.unet, part.z_t, part.t, cond)
        with again.applied(xl_pipe):
            after = unet_eps(xl_pipe.unet, part.z_t, part.t, cond)
    assert (after - before).abs().max() > 0


def test_an_sdxl_edit_refuses_an_sd1_pipeline_and_back(xl_pipe, tiny_pipe):
    xl_edit = esd_edit(xl_pipe, iterations=1)
    want = (r"^this edit was made on an SDXL model \(StableDiffusionXLPipeline, cross-attention 64\), not on an SD 1\.x "
            r"model \(StableDiffusionPipeline, cross-attention 32\); pass the pipeline of the model it was made on$")  # fmt: skip
    for force in (False, True):  # forcing skips the fingerprint, not the family
        with pytest.raises(ValueError, match=want):
            xl_edit.apply(tiny_pipe, force=force)
    sd_edit = esd_edit(tiny_pipe, iterations=1)
    with pytest.raises(ValueError, match=r"^this edit was made on an SD 1\.x model .* not on an SDXL model") as err:
        sd_edit.apply(xl_pipe)
    assert "\n" not in str(err.value)


def test_the_error_names_the_model_to_load(xl_pipe, tmp_path):
    xl_pipe.save_pretrained(tmp_path / "xl")
    pipe = load_pipeline(tmp_path / "xl")
    edit = esd_edit(pipe, iterations=1)
    assert edit.base_model == model_source(pipe) == str((tmp_path / "xl").resolve())
    with pytest.raises(ValueError, match=rf"; pass the pipeline of load_pipeline\('{tmp_path / 'xl'}'\)$"):
        edit.check(load_pipeline("mini"))


def test_an_sdxl_folder_loads_with_its_fingerprint(xl_pipe, tmp_path):
    xl_pipe.save_pretrained(tmp_path / "xl")
    pipe = load_pipeline(tmp_path / "xl")
    assert isinstance(pipe, StableDiffusionXLPipeline) and architecture(pipe) == architecture(xl_pipe)
    assert fingerprint(pipe) == fingerprint(xl_pipe)
    with torch.no_grad():  # the second text encoder is part of the fingerprint
        next(pipe.text_encoder_2.parameters()).add_(1e-2)
    assert fingerprint(pipe) != fingerprint(xl_pipe)


def test_an_sdxl_edit_exports_a_lora_the_sdxl_pipeline_loads(xl_pipe, tmp_path):
    edit = esd_edit(xl_pipe)
    with pytest.raises(ValueError, match="a LoRA cannot carry"):  # ESD-x moves the output projections' biases too
        export_lora(edit, xl_pipe, rank=4)
    lora = export_lora(edit, xl_pipe, rank=4, allow_dropped=True)
    assert lora.dropped and all(k.endswith(".bias") for k in lora.dropped)
    lora.save(tmp_path / "lora")
    params = dict(xl_pipe.unet.named_parameters())
    want = {}
    for key in lora.errors:
        name = key.removeprefix("unet.").removesuffix(".weight")
        a, b = lora.state_dict[f"unet.{name}.lora_A.weight"], lora.state_dict[f"unet.{name}.lora_B.weight"]
        want[name] = params[f"{name}.weight"].detach().double() + product(a, b)
    xl_pipe.load_lora_weights(tmp_path / "lora")
    assert xl_pipe.get_active_adapters() == ["default_0"]
    xl_pipe.fuse_lora()
    xl_pipe.unload_lora_weights()
    got = dict(xl_pipe.unet.named_parameters())
    assert max((got[f"{n}.weight"].double() - w).abs().max().item() for n, w in want.items()) < 1e-6


def test_uce_edits_sdxl_cross_attention_in_closed_form(xl_pipe):
    # UCE reads the hidden states that enter cross-attention: the packed conditioning without its pooled token
    edit = unsee.methods.erase(xl_pipe, "circle", unsee.methods.make_config("uce"))
    assert edit.tensors and all(k.endswith((".to_k.weight", ".to_v.weight")) for k in edit.tensors)
    own = dict(xl_pipe.unet.named_parameters())
    assert all(v.shape == own[k.removeprefix("unet.")].shape for k, v in edit.tensors.items())
    assert any(not torch.equal(v, own[k.removeprefix("unet.")]) for k, v in edit.tensors.items())
