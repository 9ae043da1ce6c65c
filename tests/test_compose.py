"""Composing separately made edits: their deltas summed, exactly, whatever the order (issue 26)."""

from __future__ import annotations

import itertools
import json
import warnings

import pytest
import torch

from unsee.cli import main
from unsee.edits import Edit, FingerprintMismatch, SharedTensorsWarning
from unsee.judges import ClassifierJudge
from unsee.models import fingerprint

Q = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_q.weight"
K = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"
V = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_v.weight"


def value(pipe, key: str) -> torch.Tensor:
    comp, _, name = key.partition(".")
    return dict(getattr(pipe, comp).named_parameters())[name].detach().clone()


def make_edit(pipe, keys, seed: int, concept: str, fp: str | None = None) -> Edit:
    """An edit that moves each of ``keys`` by a seeded random delta (what a method's edit looks like to compose)."""
    g = torch.Generator().manual_seed(seed)
    tensors = {k: value(pipe, k) + 0.01 * torch.randn(value(pipe, k).shape, generator=g) for k in keys}
    return Edit("test", {"seed": seed}, (concept,), fp or fingerprint(pipe), seed, tensors)


def state(pipe) -> dict[str, torch.Tensor]:
    return {f"{c}.{k}": v.detach().clone() for c in ("unet", "text_encoder") for k, v in getattr(pipe, c).state_dict().items()}


def test_composing_one_edit_is_that_edit(tiny_pipe):
    import unsee.methods

    edit = unsee.methods.erase(tiny_pipe, ["circle"], unsee.methods.make_config("eap", iterations=2, batch_size=2,
                               ddim_steps=3), torch.Generator().manual_seed(0))  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one edit shares no tensor: no warning
        one = Edit.compose([edit], tiny_pipe)
    assert one.digest == edit.digest and one.tensors.keys() == edit.tensors.keys()
    assert all(torch.equal(one.tensors[k], edit.tensors[k]) for k in edit.tensors)
    with edit.applied(tiny_pipe):
        applied = state(tiny_pipe)
    with one.applied(tiny_pipe):
        assert all(torch.equal(v, applied[k]) for k, v in state(tiny_pipe).items())
    assert one.config["parts"] == [{"method": "eap", "concepts": ["circle"], "seed": 0, "digest": edit.digest}]


def test_shared_tensors_get_the_sum_of_the_deltas_and_a_warning(tiny_pipe):
    a, b = make_edit(tiny_pipe, [Q, K], 1, "circle"), make_edit(tiny_pipe, [K, V], 2, "square")
    with pytest.warns(SharedTensorsWarning, match=r"1 tensors are changed by more than one.*attn2\.to_k\.weight"):
        both = Edit.compose([a, b], tiny_pipe)
    assert torch.equal(both.tensors[Q], a.tensors[Q]) and torch.equal(both.tensors[V], b.tensors[V])
    base = value(tiny_pipe, K)
    torch.testing.assert_close(both.tensors[K], base + (a.tensors[K] - base) + (b.tensors[K] - base), rtol=0, atol=1e-7)
    assert both.info["shared"] == {K: sorted([a.digest, b.digest])}
    assert set(both.concepts) == {"circle", "square"} and both.base_fingerprint == a.base_fingerprint
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # disjoint edits: no warning
        Edit.compose([make_edit(tiny_pipe, [Q], 1, "circle"), make_edit(tiny_pipe, [V], 2, "square")], tiny_pipe)


def test_composition_does_not_depend_on_order(tiny_pipe):
    edits = [make_edit(tiny_pipe, keys, i, f"c{i}") for i, keys in enumerate([[Q, K], [K, V], [Q, K, V], [K]])]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SharedTensorsWarning)
        results = [Edit.compose(list(p), tiny_pipe) for p in itertools.permutations(edits)]
    first = results[0]
    for r in results[1:]:
        assert r.digest == first.digest and r.concepts == first.concepts and r.config == first.config
        assert all(torch.equal(r.tensors[k], first.tensors[k]) for k in first.tensors)


def test_restore_after_a_composed_apply_is_exact(tiny_pipe, tmp_path):
    before = state(tiny_pipe)
    with pytest.warns(SharedTensorsWarning):
        both = Edit.compose([make_edit(tiny_pipe, [Q, K], 1, "circle"), make_edit(tiny_pipe, [K, V], 2, "square")], tiny_pipe)
    undo = both.apply(tiny_pipe)
    assert not torch.equal(value(tiny_pipe, K), before[K])
    undo.restore()
    assert all(torch.equal(v, before[k]) for k, v in state(tiny_pipe).items())
    loaded = Edit.load(both.save(tmp_path / "composed"))  # saved and loaded like any edit
    assert loaded.digest == both.digest and loaded.method == "compose" and loaded.config == json.loads(json.dumps(both.config))


def test_composition_refuses_bad_input_in_one_line(tiny_pipe):
    with pytest.raises(ValueError, match="nothing to compose: `edits` is empty") as e:
        Edit.compose([], tiny_pipe)
    assert "\n" not in str(e.value)
    a, other = make_edit(tiny_pipe, [Q], 1, "circle"), make_edit(tiny_pipe, [K], 2, "square", fp="0123456789abcdef")
    with pytest.raises(FingerprintMismatch, match="made for different base models") as e:
        Edit.compose([a, other], tiny_pipe)
    assert "\n" not in str(e.value)
    with pytest.raises(FingerprintMismatch, match="made for different base models"):
        Edit.compose([a, other], tiny_pipe, force=True)  # force skips checking `base`, never mixes models
    with pytest.raises(FingerprintMismatch, match="this edit was made for base model"):
        Edit.compose([other], tiny_pipe)  # `base` is not the model the edits were made for
    assert Edit.compose([other], tiny_pipe, force=True).digest == other.digest


def test_interference_report_on_a_tiny_model(tiny_pipe, tmp_path):
    from unsee.impact.interference import interference_report

    def classify(images: torch.Tensor) -> torch.Tensor:  # a deterministic "judge": mean colour channels
        return images.mean((2, 3)) * 10

    judge = ClassifierJudge(classify, ("red", "green", "blue"), name="colour")
    a, b = make_edit(tiny_pipe, [Q, K], 1, "red"), make_edit(tiny_pipe, [K, V], 2, "green")
    prompts = {"a red circle": ("red",), "a green circle": ("green",), "a blue circle": ("blue",)}
    before = state(tiny_pipe)
    with pytest.warns(SharedTensorsWarning):
        r = interference_report(tiny_pipe, [a, b], judge, prompts, n=1, steps=2, guidance_scale=1.0, keep_images=True)
    assert all(torch.equal(v, before[k]) for k, v in state(tiny_pipe).items())  # the pipe is left as it was
    assert set(r.esr) == {"red", "green"} and r.psr["prompts"] == ["a blue circle"]
    assert r.esr["red"]["edit"] == a.digest and all(0 <= r.esr["red"][m] <= 1 for m in ("alone", "composed"))
    assert set(r.psr["alone"]) == {a.digest, b.digest}
    # the base model draws only the preserved prompts unless asked: its ESR is not measured, and says so
    assert list(r.reads["base"]) == ["a blue circle"] and r.esr["red"]["base"] is None and r.psr["base"] is not None
    md = r.markdown(["grid.png"])
    assert "| red |" in md and "ESR-1 base" not in md and "--base-esr" in md
    assert r.grid(tmp_path / "grid.png").exists()
    with pytest.warns(SharedTensorsWarning):
        full = interference_report(tiny_pipe, [a, b], judge, prompts, n=1, steps=2, guidance_scale=1.0, base_esr=True)
    assert set(full.reads["base"]) == set(prompts) and 0 <= full.esr["red"]["base"] <= 1
    # the rest of the report is the same numbers: the base model's extra images change nothing else
    assert {c: {k: v for k, v in e.items() if k != "base"} for c, e in full.esr.items()} == {
        c: {k: v for k, v in e.items() if k != "base"} for c, e in r.esr.items()
    }
    assert full.psr == r.psr and "--base-esr" not in full.markdown() and "| ESR-1 base |" in full.markdown()
    warnings.simplefilter("ignore", SharedTensorsWarning)
    with pytest.raises(ValueError, match="no prompt asks for the erased concept 'green'"):
        interference_report(tiny_pipe, [a, b], judge, {"a red circle": ("red",), "a blue one": ("blue",)}, n=1, steps=1)
    with pytest.raises(ValueError, match="nothing measures preservation"):
        interference_report(tiny_pipe, [a, b], judge, {"a red circle": ("red",), "a green one": ("green",)}, n=1, steps=1)


def test_spectrum_of_a_composition_against_the_sum_of_its_parts(tiny_pipe):
    from unsee.impact.interference import spectra
    from unsee.impact.spectrum import concept_vocabulary, make_draws, spectrum

    a, b = make_edit(tiny_pipe, [Q], 1, "red"), make_edit(tiny_pipe, [V], 2, "green")
    vocab = concept_vocabulary(tiny_pipe, ["red", "green", "circle"], neutral=())
    draws = make_draws(tiny_pipe, 2, steps=2)
    both = Edit.compose([a, b], tiny_pipe)
    s = spectra(tiny_pipe, [a, b], both, vocab, draws)
    for i, w in enumerate(vocab.words):
        single = [float(spectrum(tiny_pipe, e, vocab, draws).scores[i]) for e in (a, b)]
        assert s["scores"][w]["sum"] == pytest.approx(sum(single), rel=1e-6)
        assert s["scores"][w]["composed"] == pytest.approx(float(spectrum(tiny_pipe, both, vocab, draws).scores[i]), rel=1e-6)
    assert -1 <= s["pearson"] <= 1 and len(s["most_interfering"]) == 3


def test_apply_and_compose_report_refuse_bad_input_in_one_line(tmp_path, capsys, tiny_pipe, mini_pipe):
    ours = make_edit(mini_pipe, [Q], 1, "circle").save(tmp_path / "ours")
    other = make_edit(tiny_pipe, [Q], 2, "square").save(tmp_path / "other")
    for cmd in (["apply", str(ours), str(other), "--out", str(tmp_path / "m")],
                ["compose-report", str(ours), str(other), "--out", str(tmp_path / "r")]):  # fmt: skip
        assert main(cmd) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("unsee: error: the edits were made for different base models") and "\n" not in err
    assert main(["compose-report", str(ours), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert "pass two edit folders or more" in err and "\n" not in err
    mine = make_edit(mini_pipe, [V], 3, "star").save(tmp_path / "mine")
    assert main(["compose-report", str(ours), str(mine), "--out", str(tmp_path / "r"), "--batch-size", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--batch-size must be at least 1" in err and "\n" not in err
    with pytest.raises(SystemExit):  # argparse: at least one edit folder
        main(["apply", "--out", str(tmp_path / "m")])


def test_apply_composes_several_edits(tmp_path, capsys, mini_pipe):
    a = make_edit(mini_pipe, [Q, K], 1, "circle").save(tmp_path / "a")
    b = make_edit(mini_pipe, [K, V], 2, "square").save(tmp_path / "b")
    assert main(["apply", str(a), str(b), "--out", str(tmp_path / "merged"), "--save-edit", str(tmp_path / "ab")]) == 0
    err = capsys.readouterr().err
    assert "unsee: warning: 1 tensors are changed by more than one of the composed edits" in err
    with pytest.warns(SharedTensorsWarning):
        expected = Edit.compose([Edit.load(b), Edit.load(a)], mini_pipe)
    assert Edit.load(tmp_path / "ab").digest == expected.digest
    assert (tmp_path / "merged" / "model_index.json").exists()
    a, b = make_edit(mini_pipe, [Q], 1, "circle").save(tmp_path / "a"), make_edit(mini_pipe, [V], 2, "red").save(tmp_path / "b")
    out = tmp_path / "report"
    assert main(["compose-report", str(a), str(b), "--out", str(out), "--n", "1", "--prompts", "1", "--preserved", "1",
                 "--draws", "0", "--base-esr"]) == 0  # fmt: skip
    report = json.loads((out / "compose.json").read_text())
    assert report["model_fingerprint"] == fingerprint(mini_pipe) and set(report["esr"]) == {"circle", "red"}
    assert report["settings"]["base_esr"] and all(e["base"] is not None for e in report["esr"].values())
    assert (out / "grid.png").exists() and "![grid](grid.png)" in (out / "compose.md").read_text()


def test_cached_base_images_are_the_fresh_ones_bit_for_bit(tiny_pipe, tmp_path):
    from unsee.metrics.judged import cached_prompt_images, prompt_images

    kw = dict(n=2, steps=2, guidance_scale=2.0)
    fresh = prompt_images(tiny_pipe, ["a red circle", "a blue star"], seeds=[3, 4], **kw)
    first = cached_prompt_images(tiny_pipe, ["a red circle", "a blue star"], tmp_path, seeds=[3, 4], **kw)
    assert len(list((tmp_path / "images").iterdir())) == 2
    # read back in another order, beside a new prompt: the kept images come back, the new one is drawn
    again = cached_prompt_images(tiny_pipe, ["a green cross", "a blue star", "a red circle"], tmp_path, seeds=[5, 4, 3], **kw)
    assert len(list((tmp_path / "images").iterdir())) == 3
    for x, y in zip(fresh, first):
        assert torch.equal(x, y)
    assert torch.equal(again[1], fresh[1]) and torch.equal(again[2], fresh[0])
    # another seed or another model misses the cache
    other = cached_prompt_images(tiny_pipe, ["a red circle"], tmp_path, seeds=[9], **kw)
    assert not torch.equal(other[0], fresh[0])
    edit = make_edit(tiny_pipe, [K, V], 1, "red")
    with edit.applied(tiny_pipe):
        edited = cached_prompt_images(tiny_pipe, ["a red circle"], tmp_path, seeds=[3], **kw)
        assert torch.equal(edited[0], prompt_images(tiny_pipe, ["a red circle"], seeds=[3], **kw)[0])
    assert not torch.equal(edited[0], fresh[0])
    with pytest.raises(ValueError, match="`seeds` has 1 seeds for 2 prompts"):
        cached_prompt_images(tiny_pipe, ["a", "b"], tmp_path, seeds=[1], **kw)


def test_interference_report_with_a_cache_is_the_same_report(tiny_pipe, tmp_path):
    from unsee.impact.interference import interference_report

    judge = ClassifierJudge(lambda im: im.mean((2, 3)) * 10, ("red", "green", "blue"), name="colour")
    a, b = make_edit(tiny_pipe, [K], 1, "red"), make_edit(tiny_pipe, [V], 2, "green")
    prompts = {"a red circle": ("red",), "a green circle": ("green",), "a blue circle": ("blue",)}
    kw = dict(n=2, steps=2, guidance_scale=2.0, base_esr=True)
    plain = interference_report(tiny_pipe, [a, b], judge, prompts, **kw)
    cold = interference_report(tiny_pipe, [a, b], judge, prompts, cache_dir=tmp_path, **kw)
    warm = interference_report(tiny_pipe, [a, b], judge, prompts, cache_dir=tmp_path, **kw)
    assert plain.esr == cold.esr == warm.esr and plain.psr == cold.psr == warm.psr
    assert plain.reads["base"].keys() == warm.reads["base"].keys()
    assert all(plain.reads["base"][p].topk == warm.reads["base"][p].topk for p in prompts)


def test_two_workers_write_the_report_of_one(tiny_pipe, tmp_path):
    """Workers measure the models side by side on copies of the pipeline; with one CPU thread each, as with one worker,
    their images are the very same, and so is every number of the report (spectra included)."""
    from unsee.impact.interference import interference_report, spectra
    from unsee.impact.spectrum import concept_vocabulary, make_draws

    colours = ("red", "green", "blue", "white")
    judge = ClassifierJudge(lambda im: torch.cat([im.mean((2, 3)), im.mean((1, 2, 3))[:, None]], 1) * 10, colours,
                            name="colour")  # fmt: skip
    a, b, c = (make_edit(tiny_pipe, [k], i, w) for i, (k, w) in enumerate([(K, "red"), (V, "green"), (Q, "blue")], 1))
    prompts = {"a red circle": ("red",), "a green circle": ("green",), "a blue circle": ("blue",)}
    prompts |= {"a red square": ("red",), "a white circle": ("white",), "a white square": ("white",)}
    vocab = concept_vocabulary(tiny_pipe, ["red", "green", "circle"], neutral=())
    kw = dict(n=2, steps=2, guidance_scale=2.0, keep_images=True, vocab=vocab, draws=make_draws(tiny_pipe, 2, steps=2))
    before, threads = state(tiny_pipe), torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = interference_report(tiny_pipe, [a, b, c], judge, prompts, **kw)
        two = interference_report(tiny_pipe, [a, b, c], judge, prompts, workers=2, cache_dir=tmp_path, **kw)
        assert torch.get_num_threads() == 1  # given back as it was
    finally:
        torch.set_num_threads(threads)
    strip = lambda d: {k: v for k, v in d.items() if k != "seconds"}  # noqa: E731
    assert strip(one.to_dict()) == strip(two.to_dict())
    for model, reads in one.reads.items():
        assert all(torch.equal(r.images, two.reads[model][p].images) for p, r in reads.items())
    assert all(torch.equal(v, state(tiny_pipe)[k]) for k, v in before.items())
    # The spectra share the workers' queue with the reads; they are those of spectra(), which measures them alone.
    alone = spectra(tiny_pipe, [a, b, c], Edit.compose([a, b, c], tiny_pipe), vocab, kw["draws"])
    for w, v in alone["scores"].items():
        for m in ("composed", "sum"):
            # other batches and threads: the same sums, added in another order
            assert two.spectrum["scores"][w][m] == pytest.approx(v[m], rel=1e-3)
    with pytest.raises(ValueError, match="`workers` must be at least 1"):
        interference_report(tiny_pipe, [a, b], judge, prompts, workers=0)
    with pytest.raises(ValueError, match="`batch_size` must be at least 1"):
        interference_report(tiny_pipe, [a, b], judge, prompts, batch_size=0)
