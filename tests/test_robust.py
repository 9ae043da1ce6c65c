"""The robust erasure (equation 11): its inputs, its attacker, and what it records.

The contract suite (tests/test_methods_contract.py) covers it like every method (determinism,
resume, save/load, parameter sets); the guarantee that it resists the inversion attack is in
tests/test_guarantees.py.
"""

from __future__ import annotations

import pytest
import torch

from unsee.methods import erase, make_config

FAST = dict(iterations=3, batch_size=2, ddim_steps=3, n_centres=5)


def _images(pipe, n: int = 3, size: int | None = None, seed: int = 0) -> torch.Tensor:
    size = size or pipe.vae_scale_factor * pipe.unet.config.sample_size
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_needs_images_of_each_concept(tiny_pipe):
    cfg = make_config("robust", **FAST)
    with pytest.raises(ValueError, match="learns from images of each erased concept.*pass `images`"):
        erase(tiny_pipe, ["circle"], cfg)
    with pytest.raises(ValueError, match="1 batch\\(es\\) for 2 concepts; pass one batch per concept"):
        erase(tiny_pipe, ["circle", "square"], cfg, images=_images(tiny_pipe))
    with pytest.raises(ValueError, match="must be a non-empty \\(N, 3, H, W\\) tensor"):
        erase(tiny_pipe, ["circle"], cfg, images=_images(tiny_pipe)[:, :1])
    with pytest.raises(ValueError, match="outside \\[0, 1\\]"):
        erase(tiny_pipe, ["circle"], cfg, images=_images(tiny_pipe) * 255)


def test_images_of_the_wrong_size_are_one_line_error(tiny_pipe):
    size = tiny_pipe.vae_scale_factor * tiny_pipe.unet.config.sample_size
    with pytest.raises(ValueError, match="resize them to the model's size") as e:
        erase(tiny_pipe, ["circle"], make_config("robust", **FAST), images=_images(tiny_pipe, size=size * 2))
    assert "\n" not in str(e.value) and f"{size}x{size}" in str(e.value)


def test_methods_without_images_refuse_them(tiny_pipe):
    with pytest.raises(ValueError, match="esd method does not learn from images; drop `images`"):
        erase(tiny_pipe, ["circle"], make_config("esd", iterations=1), images=_images(tiny_pipe))


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="unknown space 'words'"):
        make_config("robust", space="words")
    with pytest.raises(ValueError, match="unknown base 'uce'"):
        make_config("robust", base="uce")
    with pytest.raises(ValueError, match="inner_steps must be at least 1"):
        make_config("robust", inner_steps=0)
    with pytest.raises(ValueError, match="company is a share and must lie in \\[0, 1\\], got 1.5"):
        make_config("robust", company=1.5)
    with pytest.raises(ValueError, match="company_repeats must be at least 1"):
        make_config("robust", company_repeats=0)
    with pytest.raises(ValueError, match="company_words must be words or 'model'"):
        make_config("robust", company_words="tokenizer")
    with pytest.raises(ValueError, match="company_words must be words or 'model'"):
        make_config("robust", company_words=("red", " "))


@pytest.mark.parametrize("space", ["free", "vocab", "both"])
def test_the_attacker_moves_in_its_space_and_is_recorded(tiny_pipe, space):
    table = tiny_pipe.text_encoder.get_input_embeddings().weight.detach().float()
    edit = erase(tiny_pipe, ["circle", "square"], make_config("robust", space=space, **FAST),
                 torch.Generator().manual_seed(0), images=[_images(tiny_pipe, seed=1), _images(tiny_pipe, seed=2)])  # fmt: skip
    emb = torch.tensor(edit.info["adversary_embedding"])
    assert emb.shape == (2, 1, table.shape[1])
    # Both parametrisations start at the vocabulary's mean; the attacker's steps moved each concept's token.
    start = table.mean(0)
    assert all(float((emb[k, 0] - start).abs().max()) > 1e-4 for k in range(2))
    if space == "vocab":  # a mixture of the vocabulary stays inside its convex hull
        assert bool((emb >= table.min(0).values - 1e-5).all() and (emb <= table.max(0).values + 1e-5).all())
    assert edit.info["adversary_tokens"] == ["<adv0>", "<adv1>"]
    assert len(edit.info["adversary_nearest"][0][0]) == 5
    logged = edit.info["log"][-1]
    assert {"l_adversarial", "inversion_loss", "l_erase", "l_preserve"} <= set(logged)


def test_esd_base_drops_eap_preservation(tiny_pipe):
    edit = erase(tiny_pipe, ["circle"], make_config("robust", base="esd", **FAST), images=_images(tiny_pipe))
    assert "l_preserve" not in edit.info["log"][-1] and "R" not in edit.info


def test_inner_attacker_leaves_the_model_to_the_outer_step(tiny_pipe):
    # lambda_adv = 0: the attacker runs, but nothing it finds reaches the model's update, so the edit
    # equals one where the adversarial term is present but zero-weighted in another space (same draws)
    ims = _images(tiny_pipe)
    a = erase(tiny_pipe, ["circle"], make_config("robust", lambda_adv=0.0, space="free", **FAST), images=ims)
    b = erase(tiny_pipe, ["circle"], make_config("robust", lambda_adv=0.0, space="vocab", **FAST), images=ims)
    c = erase(tiny_pipe, ["circle"], make_config("robust", lambda_adv=1.0, space="free", **FAST), images=ims)
    for k in a.tensors:
        torch.testing.assert_close(a.tensors[k], b.tensors[k], rtol=0, atol=0)
    assert any(not torch.equal(a.tensors[k], c.tensors[k]) for k in a.tensors)


def test_restarts_send_the_attacker_back_and_resume_exactly(tiny_pipe, tmp_path):
    from unsee.methods import Run

    ims = _images(tiny_pipe)
    cfg = make_config("robust", **(FAST | dict(iterations=4, restart_every=2)))
    straight = erase(tiny_pipe, ["circle"], cfg, torch.Generator().manual_seed(0), images=ims)
    never = erase(tiny_pipe, ["circle"], make_config("robust", **(FAST | dict(iterations=4))),
                  torch.Generator().manual_seed(0), images=ims)  # fmt: skip
    assert any(not torch.equal(straight.tensors[k], never.tensors[k]) for k in straight.tensors)
    # The restart falls between the checkpoint at 2 and the resumed update 2: the resumed run must still make it.
    erase(tiny_pipe, ["circle"], make_config("robust", **(FAST | dict(iterations=2, restart_every=2))),
          torch.Generator().manual_seed(0), run=Run(tmp_path, 2, progress=False), images=ims)  # fmt: skip
    resumed = erase(tiny_pipe, ["circle"], cfg, torch.Generator().manual_seed(0),
                    run=Run(tmp_path, 2, resume=True, progress=False), images=ims)  # fmt: skip
    for k in straight.tensors:
        torch.testing.assert_close(resumed.tensors[k], straight.tensors[k], rtol=0, atol=0)
    with pytest.raises(ValueError, match="restart_every must be 0"):
        make_config("robust", restart_every=-1)


@pytest.mark.parametrize("per_concept", [False, True])
def test_each_concepts_attacker_gets_its_own_draws_per_inner_step(tiny_pipe, per_concept):
    # One update, one inner step, one draw: shared, the draw is one concept's and the other attacker (zero gradient,
    # fresh Adam) stays at its start; per concept, each attacker learns from a draw of its own.
    cfg = make_config("robust", **(FAST | dict(iterations=1, inner_steps=1, batch_size=1)), inner_per_concept=per_concept)
    edit = erase(tiny_pipe, ["circle", "square"], cfg, torch.Generator().manual_seed(0),
                 images=[_images(tiny_pipe, seed=1), _images(tiny_pipe, seed=2)])  # fmt: skip
    start = tiny_pipe.text_encoder.get_input_embeddings().weight.detach().float().mean(0)
    moved = [float((torch.tensor(v[0]) - start).abs().max()) > 1e-6 for v in edit.info["adversary_embedding"]]
    assert sorted(moved) == ([True, True] if per_concept else [False, True]), moved


def test_inner_batch_size_sets_the_attackers_draws(tiny_pipe):
    # Per concept, inner_batch_size=1 draws one image of each concept per inner step, against batch_size=2 of each:
    # the attacker then learns from other draws, and the outer term's draws (batch_size) are the same count.
    images = [_images(tiny_pipe, seed=1), _images(tiny_pipe, seed=2)]

    def run(**kw):
        cfg = make_config("robust", **(FAST | dict(iterations=1, inner_steps=1)), inner_per_concept=True, **kw)
        return erase(tiny_pipe, ["circle", "square"], cfg, torch.Generator().manual_seed(0), images=images)

    default, same, one = run(), run(inner_batch_size=2), run(inner_batch_size=1)
    assert default.info["adversary_embedding"] == same.info["adversary_embedding"]  # None means batch_size
    assert default.info["adversary_embedding"] != one.info["adversary_embedding"]
    assert one.info["adversarial_draws"] == default.info["adversarial_draws"]
    with pytest.raises(ValueError, match="inner_batch_size must be at least 1"):
        make_config("robust", inner_batch_size=0)


@pytest.mark.parametrize("per_concept", [False, True])
def test_the_adversarial_term_erases_every_concepts_token_when_asked(tmp_path, tiny_pipe, per_concept):
    # Two updates of one draw each: shared, the outer term erases 2 tokens' images in all; per concept, 2 of each.
    # The count survives a resume (it is the method's state).
    cfg = make_config("robust", **(FAST | dict(iterations=2, inner_steps=1, batch_size=1)), adv_per_concept=per_concept)
    images = [_images(tiny_pipe, seed=1), _images(tiny_pipe, seed=2)]
    edit = erase(tiny_pipe, ["circle", "square"], cfg, torch.Generator().manual_seed(0), images=images)
    assert (edit.info["adversarial_draws"] == [2, 2]) if per_concept else (sum(edit.info["adversarial_draws"]) == 2)
    from unsee.methods import Run

    half = make_config("robust", **(FAST | dict(iterations=1, inner_steps=1, batch_size=1)), adv_per_concept=per_concept)
    erase(tiny_pipe, ["circle", "square"], half, torch.Generator().manual_seed(0), images=images,
          run=Run(tmp_path, 1, progress=False))  # fmt: skip
    resumed = erase(tiny_pipe, ["circle", "square"], cfg, torch.Generator().manual_seed(0), images=images,
                    run=Run(tmp_path, 1, resume=True, progress=False))  # fmt: skip
    assert resumed.info["adversarial_draws"] == edit.info["adversarial_draws"]


def test_company_puts_other_erased_names_before_the_token_and_the_own_word(tiny_pipe):
    # company=1: every prompt of the outer term follows 1-2 repeats of the other concept's name; company_own=1: the
    # concept's own word stands for the token there. The company changes what the model is trained on.
    images = [_images(tiny_pipe, seed=1), _images(tiny_pipe, seed=2)]
    concepts = ["circle", "square"]

    def run(**kw):
        cfg = make_config("robust", **(FAST | dict(iterations=1, inner_steps=1)), company_repeats=2, **kw)
        return erase(tiny_pipe, concepts, cfg, torch.Generator().manual_seed(0), images=images)

    alone, token, own = run(), run(company=1.0), run(company=1.0, company_own=1.0)
    assert all("<adv" in p and not p.startswith(("circle", "square")) for p in alone.info["robust_trace"][0]["prompts"])
    for p in token.info["robust_trace"][0]["prompts"]:
        words = p.split()
        assert words[0] in concepts and "<adv" in p and words.count(words[0]) in (1, 2), p
        assert p.endswith(f"<adv{1 - concepts.index(words[0])}>"), p  # the other concept's name, never its own
    for p in own.info["robust_trace"][0]["prompts"]:
        head, last = p.split()[0], p.split()[-1]
        assert "<adv" not in p and head in concepts and last == concepts[1 - concepts.index(head)], p
    for other in (token, own):
        assert any(not torch.equal(alone.tensors[k], other.tensors[k]) for k in alone.tensors)


def test_company_needs_two_concepts_or_words(tiny_pipe):
    with pytest.raises(ValueError, match="erase two or more concepts, set company_words, or set company=0") as e:
        erase(tiny_pipe, ["circle"], make_config("robust", company=0.5, **FAST), images=_images(tiny_pipe))
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="holds only the erased concept's own name; add other words"):
        cfg = make_config("robust", company=0.5, company_words=("circle",), **FAST)
        erase(tiny_pipe, ["circle"], cfg, images=_images(tiny_pipe))


def test_company_words_are_drawn_one_by_one_from_the_other_names_and_the_words(tiny_pipe):
    # company_words: each word before the prompt is drawn on its own from the other erased name and the words, never
    # the concept's own name; one concept is enough; "model" takes the tokenizer's whole words.
    from unsee.concepts.vocab import model_words

    images = [_images(tiny_pipe, seed=1), _images(tiny_pipe, seed=2)]
    words = ("red", "blue", "circle")

    def prompts(concepts, company_words, repeats=4):
        cfg = make_config("robust", **(FAST | dict(iterations=1, inner_steps=1, batch_size=16)), company=1.0,
                          company_repeats=repeats, company_words=company_words, templates=("{}",))  # fmt: skip
        edit = erase(tiny_pipe, concepts, cfg, torch.Generator().manual_seed(0), images=images[: len(concepts)])
        return edit.info["robust_trace"][0]["prompts"]

    seen = set()
    for p in prompts(["circle", "square"], words):
        *head, token = p.split()
        k = int(token[len("<adv") : -1])
        assert 1 <= len(head) <= 4 and set(head) <= {"red", "blue", "circle", "square"} - {["circle", "square"][k]}, p
        seen |= set(head)
    assert seen == {"red", "blue", "circle", "square"}  # every word of each pool is drawn, mixed in one prompt or not
    alone = prompts(["square"], "model", repeats=1)
    assert all(len(p.split()) == 2 for p in alone)
    assert {p.split()[0] for p in alone} <= set(model_words(tiny_pipe)) - {"square"}
