"""Empirical impact, the impact predictor (Idea 2), EAP with predicted adversaries, and `unsee spectrum`."""

from __future__ import annotations

import json

import pytest
import torch
from scipy.stats import spearmanr

from unsee.cli import main
from unsee.concepts.vocab import model_words
from unsee.impact.empirical import empirical_impact, extremes_grid
from unsee.impact.predictor import (
    FEATURES,
    ImpactPredictor,
    PredictorConfig,
    concept_features,
    features_for,
    impact_targets,
    pair_features,
    predict_impact,
    train_predictor,
)
from unsee.impact.spectrum import Spectrum, concept_prompt, concept_vocabulary, make_draws, spectrum
from unsee.methods import erase, make_config
from unsee.models import fingerprint
from unsee.world.captions import JUDGE_LABELS
from unsee.world.oracle import load_oracle, oracle_label

ESD_TINY = dict(iterations=2, batch_size=1, ddim_steps=2, lr=1e-2)


def test_concept_names_and_oracle_labels():
    assert concept_prompt("oval") == "an oval" and concept_prompt("red") == "a red"
    assert concept_prompt("''") == "" and concept_prompt("'a photo'") == "a photo"
    assert concept_prompt("cat", "a photo of {}") == "a photo of cat"
    assert oracle_label("disk") == ("object", "circle") and oracle_label("plus") == ("object", "cross")
    assert oracle_label("teal") == ("colour", "teal") and oracle_label("chequered") == ("background", "checkered")
    assert oracle_label("picture") is None


def test_empirical_impact_is_zero_for_the_identity_and_positive_for_an_edit(tiny_pipe, tmp_path):
    oracle = load_oracle()
    concepts = ["circle", "red", "''"]
    same = empirical_impact(tiny_pipe, None, concepts, judge=oracle, labels=JUDGE_LABELS, n=2, steps=4)
    assert same.distance == {c: 0.0 for c in concepts}
    assert set(same.accuracy_drop) == {"circle", "red"} and all(v == 0 for v in same.accuracy_drop.values())
    edit = erase(tiny_pipe, ["circle"], make_config("esd", **ESD_TINY))
    moved = empirical_impact(tiny_pipe, edit, concepts, judge=oracle, labels=JUDGE_LABELS, n=2, steps=4, keep_images=True)
    assert moved.distance["circle"] > 0
    # the pipeline is restored after measuring: the base images come out the same again
    again = empirical_impact(tiny_pipe, None, concepts, n=2, steps=4, keep_images=True)
    assert torch.equal(again.images["circle"][0], moved.images["circle"][0])
    vocab = concept_vocabulary(tiny_pipe, ["circle", "red", "square", "blue"])
    spec = spectrum(tiny_pipe, edit, vocab, make_draws(tiny_pipe, 2, steps=2))
    grid = extremes_grid(spec, moved, tmp_path / "g.png")
    assert (tmp_path / "g.png").exists() and grid.size[0] > 0
    with pytest.raises(ValueError, match="keep_images"):
        extremes_grid(spec, same, tmp_path / "h.png")


def synthetic_spectra(f, erased, words):
    """Impact that depends on the base-model eps similarity of the pair, as a learnable ground truth."""
    e = torch.nn.functional.normalize(f.eps, dim=-1)
    out = {}
    for c in erased:
        i = f.index(c)
        imp = torch.exp(4 * (e @ e[i])) + 0.3 * (f.pooled @ f.pooled[i]).sigmoid()
        out[c] = Spectrum(tuple(words), -imp, (c,), "synthetic")
    return out


@pytest.fixture
def tiny_features(tiny_pipe):
    vocab = concept_vocabulary(tiny_pipe, [w for w in model_words(tiny_pipe) if w != "an"])
    return concept_features(tiny_pipe, vocab, make_draws(tiny_pipe, 3, steps=3)), list(vocab.words)


def test_predictor_learns_a_ranking_that_generalises_to_held_out_erasures(tiny_features):
    f, words = tiny_features
    objects = [w for w in words if oracle_label(w)]
    train, test = objects[::2], objects[1::2]
    spectra = synthetic_spectra(f, objects, words)
    cfg = PredictorConfig(steps=600)
    model = train_predictor(f, {c: spectra[c] for c in train}, cfg, generator=torch.Generator().manual_seed(0))
    rhos = []
    for c in test:
        i, j, y = impact_targets({c: spectra[c]}, words)
        with torch.no_grad():
            rhos.append(spearmanr(model.score(f, i, j).numpy(), y.numpy()).statistic)
    assert sum(rhos) / len(rhos) > 0.85 and min(rhos) > 0.5, rhos
    # same seed, same predictor
    again = train_predictor(f, {c: spectra[c] for c in train}, cfg, generator=torch.Generator().manual_seed(0))
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    p = predict_impact(model, f, [test[0]])
    k = f.index(test[0])
    assert p[k] == float("-inf") and torch.isfinite(torch.cat([p[:k], p[k + 1 :]])).all()


def test_predictor_save_load_and_refuses_another_base_model(tiny_pipe, tiny_features, tmp_path):
    f, words = tiny_features
    spectra = synthetic_spectra(f, words[:5], words)
    model = train_predictor(f, spectra, PredictorConfig(steps=20), base_fingerprint=fingerprint(tiny_pipe))
    model.save(tmp_path / "p")
    loaded = ImpactPredictor.load(tmp_path / "p")
    i, j = torch.zeros(len(words) - 1, dtype=torch.long), torch.arange(1, len(words))
    with torch.no_grad():
        torch.testing.assert_close(loaded.score(f, i, j), model.score(f, i, j), rtol=0, atol=0)
    assert loaded.cfg == model.cfg and loaded.names == model.names
    assert pair_features(f, i, j).shape == (len(j), len(FEATURES))
    with pytest.raises(ValueError, match="unknown predictor features"):
        PredictorConfig(features=("colour",))
    with pytest.raises(FileNotFoundError, match="no impact predictor"):
        ImpactPredictor.load(tmp_path / "nothing")
    with torch.no_grad():
        for p in tiny_pipe.unet.parameters():
            p.add_(0.01)
    with pytest.raises(ValueError, match="another base model"):
        features_for(tiny_pipe, loaded, ["circle", "red"])


def test_eap_with_predicted_adversaries_preserves_the_predicted_top(tiny_pipe, tiny_features, tmp_path):
    f, words = tiny_features
    spectra = synthetic_spectra(f, words[:10], words)
    model = train_predictor(f, spectra, PredictorConfig(steps=50), base_fingerprint=fingerprint(tiny_pipe))
    model.save(tmp_path / "p")
    cfg = make_config("eap", adversary="predicted", predictor=str(tmp_path / "p"), n_predicted=3, **ESD_TINY)
    edit = erase(tiny_pipe, ["circle"], cfg)
    cand = [w for w in model_words(tiny_pipe) if w != "circle"]
    ff = features_for(tiny_pipe, model, cand + ["circle"])
    expected = [cand[i] for i in predict_impact(model, ff, ["circle"])[: len(cand)].topk(3).indices]
    assert edit.info["R"] == expected
    assert all(abs(p - 1 / 3) < 1e-6 for _, p in edit.info["adversary"])  # no search: the draw stays uniform
    assert json.loads(json.dumps(edit.config))["adversary"] == "predicted"
    with pytest.raises(ValueError, match="unknown adversary"):
        make_config("eap", adversary="oracle")


def test_spectrum_cli_writes_json_plots_and_extremes(mini_pipe, tmp_path, capsys):
    erase(mini_pipe, ["circle"], make_config("esd", template="a {}", **ESD_TINY)).save(tmp_path / "edit")
    rc = main(["spectrum", "--edit", str(tmp_path / "edit"), "--draws", "2", "--extremes", "1", "--n", "1",
               "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache")])  # fmt: skip
    assert rc == 0
    d = json.loads((tmp_path / "out" / "spectrum.json").read_text())
    assert "''" in d["scores"] and "circle" in d["scores"] and len(d["scores"]) == 47
    assert (tmp_path / "out" / "spectrum.png").exists() and (tmp_path / "out" / "extremes.png").exists()
    emp = json.loads((tmp_path / "out" / "empirical.json").read_text())
    assert len(emp["concepts"]) == 2 and set(emp["distance"]) == set(emp["concepts"])
    assert "most affected" in capsys.readouterr().out


def test_erase_cli_with_the_shipped_predictor(tmp_path):
    out = tmp_path / "e"
    assert main(["erase", "--method", "eap", "--adversary", "predicted", "--concept", "circle", "--template", "a {}",
                 "--iterations", "2", "--out", str(out), "--no-preview"]) == 0  # fmt: skip
    info = json.loads((out / "edit.json").read_text())
    assert info["config"]["adversary"] == "predicted" and len(info["info"]["R"]) == 8
    assert "circle" not in info["info"]["R"]
    assert main(["erase", "--method", "esd", "--adversary", "predicted", "--concept", "circle", "--out", str(tmp_path / "x"),
                 "--no-preview"]) == 2  # fmt: skip
