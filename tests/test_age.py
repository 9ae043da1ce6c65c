"""AGE (equation 6): each erased concept's own targets, never an erased word, and soft top-k draws."""

from __future__ import annotations

import pytest
import torch

from unsee.methods import erase, make_config
from unsee.methods.age import gumbel_topk
from unsee.sampling import encode_prompts

FAST = dict(iterations=2, batch_size=2, ddim_steps=3)


def test_targets_and_adversaries_exclude_every_erased_word(tiny_pipe):
    words = ("circle", "square", "star", "ring", "oval", "red", "blue", "disk")
    cfg = make_config("age", **FAST, words=words, n_targets=3, exclude=("disk",))
    edit = erase(tiny_pipe, ["circle", "square"], cfg)
    B, R = edit.info["B"], edit.info["R"]
    assert set(B) == {"circle", "square"}
    for c, b in B.items():
        assert len(b) == 3 and not {"circle", "square", "disk"} & set(b), f"{c}'s targets hold an erased word: {b}"
    assert R and not {"circle", "square", "disk"} & set(R)
    assert set(edit.info["targets"]) == {"circle", "square"}


def test_target_words_name_the_target_vocabulary(tiny_pipe):
    cfg = make_config("age", **FAST, target_words=("ring", "oval", "star"), n_targets=5)
    edit = erase(tiny_pipe, ["circle"], cfg)
    assert sorted(edit.info["B"]["circle"]) == ["oval", "ring", "star"]  # all of them: fewer than n_targets


def test_target_logits_descend_the_erasure_loss(tiny_pipe):
    # with the model frozen (lr 0, lambda 0) only the target mixture learns, from L1 alone; L1 is then
    # (1 + eta)^2 ||eps(c_e) - eps(c_t)||^2, so the mixture settles among the words whose outputs are nearest c_e's
    # (in this random pipe ring and oval are within 4% of each other; an ascent would pick star, the farthest)
    words = ("ring", "oval", "star", "square")
    cfg = make_config("age", iterations=30, batch_size=2, ddim_steps=2, lr=0.0, lambda_=0.0, target_lr=0.1,
                      target_words=words, n_targets=4, target_temperature=1.0, target_topk=4)  # fmt: skip
    edit = erase(tiny_pipe, ["circle"], cfg)
    top, p_top = edit.info["targets"]["circle"][0]
    assert p_top > 0.3, f"the target mixture stayed uniform: {edit.info['targets']['circle']}"
    g = torch.Generator().manual_seed(5)
    z = torch.randn(8, tiny_pipe.unet.config.in_channels, *(2 * [tiny_pipe.unet.config.sample_size]), generator=g)
    t = torch.randint(0, 1000, (8,), generator=g)
    with torch.no_grad():
        emb = encode_prompts(tiny_pipe, ["circle", *words])
        eps = [tiny_pipe.unet(z, t, encoder_hidden_states=e.expand(8, -1, -1)).sample for e in emb]
    gap = {w: float(((eps[0] - e) ** 2).mean()) for w, e in zip(words, eps[1:])}
    nearer_half = sorted(gap, key=gap.get)[: len(words) // 2]
    assert top in nearer_half, f"target {top}, output gaps {gap}"


def test_gumbel_topk_is_seeded_sparse_and_differentiable():
    logits = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0], requires_grad=True)
    a = gumbel_topk(logits, 6, 1.0, 2, torch.Generator().manual_seed(0))
    b = gumbel_topk(logits, 6, 1.0, 2, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    assert torch.allclose(a.detach().sum(-1), torch.ones(6)) and bool(((a > 0).sum(-1) <= 2).all())
    (a * torch.arange(5.0)).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    full = gumbel_topk(logits.detach(), 3, 1.0, 10, torch.Generator().manual_seed(1))
    assert bool((full > 0).all()), "k at least |R| keeps the whole softmax"


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="topk must be at least 1"):
        make_config("age", topk=0)
    with pytest.raises(ValueError, match="n_targets must be at least 1"):
        make_config("age", n_targets=0)
