"""Learned concepts (textual inversion): diffusers' format, prompts with learned tokens, erasure of them, errors."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline

from unsee.concepts.inversion import InversionConfig, invert
from unsee.concepts.learned import ConceptMismatch, LearnedConcept
from unsee.methods import erase, make_config
from unsee.models import fingerprint
from unsee.sampling import encode_prompts, encode_text, sample
from unsee.world.render import render, sample_scene

FAST = dict(iterations=1, batch_size=1, ddim_steps=2)


def _renders(n: int, seed: int = 0, **kw) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    ims = np.stack([render(sample_scene(rng, **kw)) for _ in range(n)])
    return torch.tensor(ims).permute(0, 3, 1, 2).float() / 255


def _learned(pipe, token: str, n: int = 1, seed: int = 0, base: str | None = None) -> LearnedConcept:
    width = pipe.text_encoder.get_input_embeddings().embedding_dim
    vecs = torch.randn((n, width), generator=torch.Generator().manual_seed(seed))
    fp = base or fingerprint(pipe)
    return LearnedConcept(token=token, embeddings=vecs, base_fingerprint=fp, model_fingerprint=fp)


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


@pytest.mark.parametrize("n_vectors", [1, 2])
def test_a_learned_concept_loads_in_diffusers_and_draws_the_same_images(tiny_pipe, tmp_path, n_vectors):
    cfg = InversionConfig(token="<frame>", n_vectors=n_vectors, steps=2, batch_size=2)
    concept = invert(tiny_pipe, _renders(4, frame=True), cfg, torch.Generator().manual_seed(0))
    concept.save(tmp_path / "frame")
    again = LearnedConcept.load(tmp_path / "frame")
    assert torch.equal(again.embeddings, concept.embeddings) and again.digest == concept.digest
    tiny_pipe.save_pretrained(tmp_path / "pipe")
    fresh = StableDiffusionPipeline.from_pretrained(tmp_path / "pipe")
    fresh.set_progress_bar_config(disable=True)
    fresh.load_textual_inversion(tmp_path / "frame", token="<frame>")  # expands "<frame>" to "<frame> <frame>_1" itself
    prompts = ["a red circle <frame>", "<frame> on a dotted background"]
    ref = fresh(prompts, num_inference_steps=2, guidance_scale=3.0, generator=torch.Generator().manual_seed(0),
                output_type="pt").images  # fmt: skip
    ours = sample(tiny_pipe, prompts, steps=2, guidance_scale=3.0, generator=torch.Generator().manual_seed(0),
                  learned=again.tokens)  # fmt: skip
    torch.testing.assert_close(ours, ref.float(), atol=1e-4, rtol=0)
    # and the learned token changes the images (it is not silently dropped)
    plain = sample(tiny_pipe, prompts, steps=2, guidance_scale=3.0, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(plain, ours, atol=1e-4)


def test_learned_tokens_encode_as_rows_of_an_enlarged_embedding_table(tiny_pipe):
    tok, te = tiny_pipe.tokenizer, tiny_pipe.text_encoder
    vecs = torch.randn((2, te.get_input_embeddings().embedding_dim), generator=torch.Generator().manual_seed(1))
    # the independent reference: two new tokens in a copy of the tokenizer, their vectors in a copy of the table
    ref_tok, ref_te = copy.deepcopy(tok), copy.deepcopy(te)
    ref_tok.add_tokens(["<x>", "<x>_1"])
    ref_te.resize_token_embeddings(len(ref_tok))
    with torch.no_grad():
        ids = ref_tok.convert_tokens_to_ids(["<x>", "<x>_1"])
        ref_te.get_input_embeddings().weight[ids] = vecs
    prompts = ["a <x> red circle and a <x>", "a blue square", "<x>"]
    expanded = [p.replace("<x>", "<x> <x>_1") for p in prompts]
    ref_ids = ref_tok(expanded, padding="max_length", max_length=tok.model_max_length, truncation=True,
                      return_tensors="pt").input_ids  # fmt: skip
    with torch.no_grad():
        ref = ref_te(ref_ids)[0]
        ours = encode_text(tok, te, prompts, {"<x>": vecs})
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    # gradients reach the learned vectors, every one of them
    p = torch.nn.Parameter(vecs.clone())
    encode_prompts(tiny_pipe, prompts, {"<x>": p}).pow(2).sum().backward()
    assert p.grad is not None and (p.grad.abs().sum(-1) > 0).all()


def test_inverting_a_word_the_model_knows_is_a_one_line_error(tiny_pipe):
    with pytest.raises(ValueError) as e:
        invert(tiny_pipe, _renders(2), InversionConfig(token="circle", steps=1))
    assert "already knows 'circle'" in _one_line(e) and "`token`" in str(e.value)


def test_a_concept_learned_on_another_model_is_refused_unless_forced(tiny_pipe):
    other = _learned(tiny_pipe, "<frame>", base="0" * 16)
    cfg = make_config("esd", **FAST)
    with pytest.raises(ConceptMismatch) as e:
        erase(tiny_pipe, [other], cfg)
    assert "learned on base model 0000000000000000" in _one_line(e) and "`force=True`" in str(e.value)
    edit = erase(tiny_pipe, [other], cfg, force=True)
    assert edit.concepts == ("<frame>",)


def test_loading_a_folder_without_a_concept_is_a_one_line_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError) as e:
        LearnedConcept.load(tmp_path / "empty")
    assert "no learned concept at" in _one_line(e) and "unsee invert --out" in str(e.value)


def test_a_learned_concept_is_erased_through_its_token(tiny_pipe):
    frame = _learned(tiny_pipe, "<frame>")
    edit = erase(tiny_pipe, [frame, "circle"], make_config("esd", **FAST), torch.Generator().manual_seed(0))
    assert edit.concepts == ("<frame>", "circle")
    assert edit.info["learned"]["<frame>"] == frame.embeddings.tolist()
    assert edit.num_changed > 0


def test_a_learned_neutral_target_needs_its_concept(tiny_pipe):
    frame, clean = _learned(tiny_pipe, "<frame>"), _learned(tiny_pipe, "<clean>", seed=1)
    cfg = make_config("neutral", c_n="<clean>", **FAST)
    edit = erase(tiny_pipe, [frame], cfg, torch.Generator().manual_seed(0), learned=[clean])
    assert edit.concepts == ("<frame>",) and set(edit.info["learned"]) == {"<frame>", "<clean>"}
    # without it, the tokenizer would split "<clean>" into characters and erase towards those: refused
    with pytest.raises(ValueError) as e:
        erase(tiny_pipe, [frame], cfg, torch.Generator().manual_seed(0))
    msg = _one_line(e)
    assert "c_n='<clean>' holds the token '<clean>'" in msg and "(given: <frame>)" in msg and "`learned`" in msg
    with pytest.raises(ValueError, match="c_p='a <clean>' holds"):
        erase(tiny_pipe, ["circle"], make_config("neutral", c_p="a <clean>", **FAST))


def test_world_attack_targets_put_the_concept_where_captions_do():
    from unsee.world.attacks import attack_target, concept_prompts

    oracle = attack_target("circle").judge
    cases = {"circle": ("circle", ("a red {}", "an orange {}"), ("disk",)),
             "disk": ("circle", ("a red {}", "an orange {}"), ("circle",)),
             "orange": ("orange", ("an {} circle", "an {} ring"), ()),
             "stripy": ("striped", ("a red circle on a {} background", "an orange ring on a {} background"), ("striped",)),
             "frame": ("frame", ("a red circle {}", "an orange ring {}"), ())}  # fmt: skip
    for word, (label, prompts, synonyms) in cases.items():
        t = attack_target(word, n_prompts=2, judge=oracle)
        assert (t.concept, t.judge_label, t.prompts, t.synonyms) == (word, label, prompts, synonyms), word
        assert any(label in names for names in oracle.groups.values())
    assert len(concept_prompts("circle", 20)) == 8  # one per colour of the world, no repeats
    with pytest.raises(ValueError, match="`n_prompts` must be at least 1"):
        concept_prompts("circle", 0)
