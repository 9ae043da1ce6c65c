"""The guarantees themselves, on the mini model and judged by the oracle: erasure removes the
concept and leaves an unrelated one; the vocabulary search and protocol arithmetic hold."""

from __future__ import annotations

import pytest
import torch

from unsee.concepts.vocab import _kmeans_1d, adversary_candidates, build_vocabulary
from unsee.methods import erase, make_config
from unsee.methods.eap import gumbel_softmax
from unsee.metrics.judged import judge_prompts
from unsee.world.oracle import load_oracle
from unsee.world.protocols import object_scores


@pytest.mark.parametrize("method", ["esd", "eap", "uce"])
def test_erasure_removes_the_concept_and_keeps_an_unrelated_one(mini_pipe, method):
    oracle = load_oracle()
    prompts = ["a red circle", "a blue circle", "a green star", "a pink star"]

    def rates():
        r = judge_prompts(mini_pipe, oracle, prompts, n=4, seed=11)
        return sum(x.rate("object", "circle") for x in r[:2]) / 2, sum(x.rate("object", "star") for x in r[2:]) / 2

    circle0, star0 = rates()
    assert circle0 >= 0.75 and star0 >= 0.75, "the base model draws both"
    # ESD at its own lr and iterations: at 10x its lr (40 iterations at 1e-3) it also erases the star
    # (star 0.5 here; the erased circles are drawn spiky and the stars round). EAP holds the star at
    # that harsh setting, which is its point, and the test keeps it there.
    cfg = {
        "eap": lambda: make_config(method, iterations=40, lr=1e-3, batch_size=2, template="a {}", n_centres=10),
        "esd": lambda: make_config(method, iterations=150, lr=1e-4, batch_size=2, template="a {}"),
        # UCE edits in closed form what the text encoder writes at the concept's last token (its released code);
        # on the mini that leaves 62% of "a red circle" circles, because the UNet also reads the end and padding
        # positions after it, which a causal encoder fills with the concept. Editing those too (UCE's first code)
        # drops circles to 12%; its preserve set (other shapes, the star is not among them) keeps the star whole.
        "uce": lambda: make_config(
            method,
            template="a {}",
            positions="rest",
            preserve=("ring", "oval", "square", "triangle", "hexagon", "arrow", "diamond", "cross"),
        ),
    }[method]()
    edit = erase(mini_pipe, ["circle"], cfg, torch.Generator().manual_seed(0))
    with edit.applied(mini_pipe):
        circle1, star1 = rates()
    assert circle1 <= 0.25, f"circle survived {method}: {circle1}"
    assert star1 >= 0.6, f"{method} damaged the unrelated star: {star1}"


def test_adversary_candidates_exclude_and_span(mini_pipe):
    vocab = build_vocabulary(mini_pipe, template="a {}")
    c_e = vocab.subset(["circle"]).embeddings
    R = adversary_candidates(vocab, c_e, ["circle", "disk"], k_nearest=1000, n_centres=8)
    assert 1 <= len(R) <= 8 and "circle" not in R.words and "disk" not in R.words
    d = (vocab.embeddings - c_e).flatten(1).norm(dim=-1)
    nearest_other = min((float(v), w) for v, w in zip(d, vocab.words) if w not in ("circle", "disk"))[1]
    assert nearest_other in R.words, "the most similar concept is always a candidate"
    all_R = adversary_candidates(vocab, c_e, ["circle"], k_nearest=1000, n_centres=1000)
    assert len(all_R) == len(vocab) - 1


def test_kmeans_1d_is_deterministic_and_separates_clusters():
    x = torch.tensor([0.0, 0.1, 0.2, 5.0, 5.1, 9.9, 10.0], dtype=torch.float64)
    c = _kmeans_1d(x, 3)
    assert torch.equal(c, _kmeans_1d(x, 3))
    assert torch.allclose(c, torch.tensor([0.1, 5.05, 9.95], dtype=torch.float64))


def test_gumbel_softmax_is_seeded_one_hot_and_differentiable():
    logits = torch.zeros(6, requires_grad=True)
    a = gumbel_softmax(logits, 5, 2.0, True, torch.Generator().manual_seed(0))
    b = gumbel_softmax(logits, 5, 2.0, True, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and torch.equal(a.detach().sum(-1), torch.ones(5))
    assert set(a.detach().unique().tolist()) <= {0.0, 1.0}
    (a * torch.arange(6.0)).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    soft = gumbel_softmax(logits.detach(), 1000, 1.0, False, torch.Generator().manual_seed(1))
    assert torch.allclose(soft.mean(0), torch.full((6,), 1 / 6), atol=0.03), "uniform logits draw uniformly"


def test_object_scores_arithmetic():
    rates = {o: {"top1": v, "top3": min(1.0, v + 0.2), "colour_top1": 1.0}
             for o, v in zip("abcd", [0.0, 0.5, 1.0, 0.8])}  # fmt: skip
    s = object_scores(rates, ["a", "b"])
    assert s["ESR-1"] == pytest.approx(0.75) and s["PSR-1"] == pytest.approx(0.9)
    assert "ESR-1-strict" not in s, "no strict ESR without what the erased prompts drew"
    # "a" draws b half the time (an escape into the erased set), "b" draws c (outside it) half the time
    drawn = {"a": {"a": 0.0, "b": 0.5, "c": 0.5}, "b": {"b": 0.5, "c": 0.5}}
    strict = object_scores({o: r | {"drawn": drawn.get(o, {})} for o, r in rates.items()}, ["a", "b"])
    assert strict["ESR-1"] == pytest.approx(0.75) and strict["ESR-1-strict"] == pytest.approx((0.5 + 0.5) / 2)
    assert s["ESR-3"] == pytest.approx(0.55) and s["PSR-3"] == pytest.approx(1.0)


def test_inversion_recovers_an_object_the_prompts_never_name(mini_pipe):
    """Equation (8) on the base model: a token learned from renders of stars draws stars from prompts
    that never say "star", where the same prompts without the token almost never do."""
    import numpy as np

    from unsee.concepts.inversion import InversionConfig, invert
    from unsee.world.concepts import caption_without, concept_scenes
    from unsee.world.render import render

    scenes = concept_scenes("star", 32, np.random.default_rng(1))
    images = torch.tensor(np.stack([render(s) for s in scenes])).permute(0, 3, 1, 2).float() / 255
    cfg = InversionConfig(token="<s>", steps=300, batch_size=8, lr=5e-3)
    learned = invert(mini_pipe, images, cfg, torch.Generator().manual_seed(0),
                     captions=[caption_without(s, "star") for s in scenes])  # fmt: skip
    oracle = load_oracle()
    colours = ["red", "blue", "green", "yellow"]
    with_token = judge_prompts(mini_pipe, oracle, [f"a {c} <s>" for c in colours], n=8, seed=3, learned=learned.tokens)
    without = judge_prompts(mini_pipe, oracle, [f"a {c}" for c in colours], n=8, seed=3)
    rate = sum(r.rate("object", "star") for r in with_token) / len(colours)
    base = sum(r.rate("object", "star") for r in without) / len(colours)
    assert rate >= 0.6 and rate >= base + 0.4, f"the learned token drew stars {rate:.2f} of the time, without it {base:.2f}"


def test_robust_erasure_halves_the_inversion_attack_on_circle(mini_pipe):
    """Equation (11): erasing "circle" against the attacker's own embedding leaves the inversion attack
    (equation 10) at most half the success it has on ESD, at the same budget (the 300 steps the attacks
    benchmark fixed), seeds and judge. At 100 steps it does not: ESD 94%, robust 50% (issue 25's notes)."""
    from unsee.attacks import attack
    from unsee.attacks import make_config as attack_config
    from unsee.world.attacks import attack_target
    from unsee.world.concepts import concept_images

    common = dict(iterations=200, lr=3e-4, batch_size=4, ddim_steps=10, template="a {}")
    esd = erase(mini_pipe, ["circle"], make_config("esd", **common), torch.Generator().manual_seed(0))
    robust = erase(mini_pipe, ["circle"], make_config("robust", n_centres=20, exclude=("disk",), **common),
                   torch.Generator().manual_seed(0), images=concept_images("circle", 32, seed=0))  # fmt: skip
    target = attack_target("circle", concept_images("circle", 32, seed=1), n_prompts=4)
    cfg = attack_config("inversion", n=4, inversion_steps=300, batch_size=8, lr=5e-3)
    asr = {name: attack(mini_pipe, e, target, cfg, torch.Generator().manual_seed(0)).asr
           for name, e in (("esd", esd), ("robust", robust))}  # fmt: skip
    assert asr["esd"] >= 0.5, f"the attack must work on ESD for the comparison to mean anything: {asr}"
    assert asr["robust"] <= asr["esd"] / 2, f"inversion ASR at 300 steps: {asr}"
