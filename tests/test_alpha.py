"""Alpha concepts: the dominance matrix, alpha scores and their predictors (issue 27, part 1)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from unsee.impact.alpha import AlphaConfig, _AttentionMass, _token_span, check_concepts, dominance, fill, pair_prompts, predictors
from unsee.judges import ClassifierJudge


def colour_judge(names=("red", "green", "blue")) -> ClassifierJudge:
    """A deterministic judge: the mean of each colour channel, sharpened, as logits."""
    return ClassifierJudge(lambda im: im.mean((2, 3)) * 40, names, name="colour")


def test_pair_prompts_share_a_seed_across_orders():
    cfg = AlphaConfig(templates=("{a} and {b}", "{b} beside {a}"), seed=10)
    jobs = pair_prompts(["x", "y", "z"], cfg)
    assert len(jobs) == 3 * 2 * 2
    seeds = {(a, b, t): s for a, b, t, _, s in jobs}
    assert all(seeds[(a, b, t)] == seeds[(b, a, t)] for a, b, t in seeds)
    assert len(set(seeds.values())) == 6  # one per unordered pair and template
    assert ("x", "y", 1, "y beside x", seeds[("x", "y", 1)]) in jobs


def test_dominance_is_antisymmetric_and_counts_what_the_judge_reads(tiny_pipe, tmp_path):
    judge = colour_judge()
    cfg = AlphaConfig(templates=("a {a} and a {b}",), n=3, steps=2, guidance_scale=2.0, present=0.34)
    d = dominance(tiny_pipe, judge, ["red", "green", "blue"], cfg, cache_dir=tmp_path)
    m = d.matrix
    assert np.allclose(m, -m.T) and np.all(np.abs(m) <= 1) and np.all(np.diag(m) == 0)
    # the same counts by hand from the cached images: a appears when its probability is at least `present`
    from unsee.metrics.judged import cached_prompt_images

    wins = {}
    for a, b, _, prompt, seed in pair_prompts(["red", "green", "blue"], cfg):
        (ims,) = cached_prompt_images(tiny_pipe, [prompt], tmp_path, seeds=[seed], n=3, steps=2, guidance_scale=2.0)
        p = judge.probs(ims)["colour"]
        ia, ib = p[:, judge.groups["colour"].index(a)] >= 0.34, p[:, judge.groups["colour"].index(b)] >= 0.34
        wins[(a, b)] = wins.get((a, b), 0) + int((ia & ~ib).sum())
        wins[(b, a)] = wins.get((b, a), 0) + int((ib & ~ia).sum())
    names = ["red", "green", "blue"]
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if i != j:
                assert m[i, j] == pytest.approx((wins[(a, b)] - wins[(b, a)]) / 6)
    assert d.alpha["red"] == pytest.approx((m[0, 1] + m[0, 2]) / 2)
    again = dominance(tiny_pipe, judge, ["red", "green", "blue"], cfg, cache_dir=tmp_path)  # read back from the cache
    assert np.array_equal(again.matrix, m)
    out = d.to_dict()
    assert out["model_fingerprint"] and set(out["alpha"]) == set(names)
    assert d.heatmap(tmp_path / "heat.png").exists()
    if d.strongest():
        assert d.grid(tmp_path / "grid.png").exists()


def test_a_judge_that_always_sees_one_concept_makes_it_alpha(tiny_pipe):
    # whatever the image, the judge reads "red" with probability 0.9: red wins every pair, the others tie
    judge = ClassifierJudge(lambda im: torch.tensor([[5.0, 0.0, 0.0, 0.0]]).expand(len(im), -1), ("red", "green", "blue", "grey"))
    cfg = AlphaConfig(templates=("{a} {b}",), n=2, steps=1)
    d = dominance(tiny_pipe, judge, ["red", "green", "blue"], cfg, keep_examples=False)
    assert d.alpha["red"] == pytest.approx(1.0)
    assert d.matrix[1, 2] == 0 and d.alpha["green"] == pytest.approx(-0.5)


def test_bad_input_is_one_line():
    with pytest.raises(ValueError, match="must hold both"):
        AlphaConfig(templates=("{a} alone",))
    with pytest.raises(ValueError, match="`present` must be in"):
        AlphaConfig(present=0)
    mean = lambda im: im.mean((2, 3))  # noqa: E731
    judge = ClassifierJudge(mean, ("red", "green", "blue"), extra={"shape": (mean, ("circle", "star", "cross"))})
    with pytest.raises(ValueError, match="spans the judge groups"):
        check_concepts(judge, ["red", "circle"])
    with pytest.raises(ValueError, match="at least 2 concepts"):
        check_concepts(judge, ["red"])
    with pytest.raises(ValueError, match="does not know concept 'purple'"):
        check_concepts(judge, ["red", "purple"])


@pytest.mark.parametrize("tpl", ["a red {a} and a blue {b}", "{b} then {a}", "{A} circle and {B} star", "{B} beside {A}"])
def test_token_spans_find_the_concept_in_either_slot(tiny_pipe, tpl):
    tok = tiny_pipe.tokenizer
    for a, b in (("circle", "orange"), ("orange", "arrow")):
        ids = tok(fill(tpl, a, b)).input_ids
        for which, c in (("a", a), ("b", b)):
            span = _token_span(tok, tpl, a, b, which)
            assert [ids[i] for i in span] == tok(c, add_special_tokens=False).input_ids, (tpl, which)
    assert fill("{A} and {B}", "orange", "red") == "an orange and a red"


def test_the_attention_recorder_leaves_the_output_as_it_was(tiny_pipe):
    unet = tiny_pipe.unet
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, unet.config.in_channels, 8, 8, generator=g)
    cond = torch.randn(2, 77, unet.config.cross_attention_dim, generator=g)
    with torch.no_grad():
        ref = unet(z, torch.tensor([10, 500]), encoder_hidden_states=cond).sample
        before = unet.attn_processors
        sink = {}
        rec = _AttentionMass(sink)
        unet.set_attn_processor({k: rec if k.endswith("attn2.processor") else v for k, v in before.items()})
        got = unet(z, torch.tensor([10, 500]), encoder_hidden_states=cond).sample
        unet.set_attn_processor(before)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)
    # each query's probabilities sum to one: the mass per image is heads x image positions x cross-attention layers
    assert sink["mass"].shape == (2, 77) and torch.all(sink["mass"] > 0)
    assert torch.allclose(sink["mass"][0].sum(), sink["mass"][1].sum())


def test_predictors_name_every_concept_and_restore_the_processors(tiny_pipe):
    before = {k: type(v) for k, v in tiny_pipe.unet.attn_processors.items()}
    cfg = AlphaConfig(templates=("a {a} and a {b}",), draws=2, steps=2, single="a {}")
    p = predictors(tiny_pipe, ["red", "green", "blue"], cfg)
    assert {k: type(v) for k, v in tiny_pipe.unet.attn_processors.items()} == before
    for name, vals in p.items():
        assert set(vals) == {"red", "green", "blue"} and all(np.isfinite(v) for v in vals.values()), name
    assert all(0 < v < 1 for v in p["attention_share"].values())
    again = predictors(tiny_pipe, ["red", "green", "blue"], cfg)
    assert again == p  # seeded draws: the same numbers


def test_cli_alpha_writes_json_heatmaps_and_grids(tmp_path, capsys, mini_pipe):
    from unsee.cli import main

    out = tmp_path / "alpha"
    rc = main(["alpha", "--concepts", "circle", "square", "red", "blue", "--n", "1", "--out", str(out),
               "--cache", str(tmp_path / "cache")])  # fmt: skip
    assert rc == 0
    rep = json.loads((out / "alpha.json").read_text())
    assert set(rep["groups"]) == {"object", "colour"} and rep["model_fingerprint"]
    obj = rep["groups"]["object"]
    assert obj["concepts"] == ["circle", "square"] and obj["alpha"]["circle"] == pytest.approx(-obj["alpha"]["square"])
    assert set(obj["predictors"]) == {"guidance_norm", "attention_share", "token_embedding_norm", "text_feature_norm"}
    for g in ("object", "colour"):
        assert (out / f"alpha_{g}.png").exists()
    assert "alpha (mean dominance)" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--concepts", "circle"], "at least 2 object concepts"),
        (["--concepts", "circle", "square", "dotted"], "objects or colours, not the background"),
        (["--concepts", "circle", "blob"], "does not know concept 'blob'"),
        (["--concepts", "circle", "square", "--present", "0"], "--present must be in"),
        (["--model", "some/folder", "--concepts", "circle", "square"], "runs on --model mini"),
    ],
)
def test_cli_alpha_bad_input_is_one_line(tmp_path, capsys, argv, message):
    from unsee.cli import main

    assert main(["alpha", *argv, "--out", str(tmp_path / "o"), "--cache", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
