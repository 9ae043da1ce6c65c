"""One contract every attack must pass: a new attack gets the whole suite by registering."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from unsee.attacks import AttackResult, AttackRun, Target, asr_best_of, attack, attacks, config_from_dict, make_config
from unsee.edits import FingerprintMismatch
from unsee.judges import ClassifierJudge
from unsee.methods import erase
from unsee.methods import make_config as method_config
from unsee.world.render import render, sample_scene

# Each attack's search shortened to a few steps; evaluation on 2 seeds of 2 prompts.
FAST = {"inversion": dict(inversion_steps=4, batch_size=2), "token-search": dict(search_steps=4, batch_size=2),
        "synonym": {}, "noise": dict(etas=(1.0, 1.85), variance_scales=(1.04,)), "completion": dict(switch_steps=(0, 1)),
        "inpaint": dict(mask_fractions=(0.5, 0.75)), "guided": dict(scales=(0.0, 50.0), etas=(0.0,))}  # fmt: skip
EVAL = dict(n=2, steps=2)
LONG = {"inversion": "inversion_steps", "token-search": "search_steps"}  # attacks that search, and their length


def _renders(n: int, seed: int = 0, **kw) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    ims = np.stack([render(sample_scene(rng, two_objects=False, **kw)) for _ in range(n)])
    return torch.tensor(ims).permute(0, 3, 1, 2).float() / 255


def _judge() -> ClassifierJudge:
    # A fixed toy classifier: its readings depend on the images, so different generations can differ.
    torch.manual_seed(0)
    lin = torch.nn.Linear(3, 2)
    return ClassifierJudge(lambda x: lin(x.mean((-1, -2))), ("other", "circle"), name="object")


@pytest.fixture
def erased(tiny_pipe):
    cfg = method_config("esd", iterations=2, batch_size=2, ddim_steps=3)
    return tiny_pipe, erase(tiny_pipe, ["circle"], cfg, torch.Generator().manual_seed(0))


def _target(**kw) -> Target:
    return Target("circle", _judge(), images=_renders(4, obj="circle"), prompts=("a {}", "a red {}"),
                  synonyms=("disk",), **kw)  # fmt: skip


def _attack(pipe, edit, name, seed=0, run=None, **kw):
    cfg = make_config(name, **(EVAL | FAST[name] | kw))
    return attack(pipe, edit, _target(), cfg, torch.Generator().manual_seed(seed), run=run)


@pytest.mark.parametrize("name", attacks())
def test_runs_and_reports_asr_on_the_same_seeds(erased, name):
    pipe, edit = erased
    r = _attack(pipe, edit, name)
    assert isinstance(r, AttackResult) and r.attack == name and r.concept == "circle"
    assert r.edit["digest"] == edit.digest and r.base_fingerprint == edit.base_fingerprint
    assert len(r.prompts) == len(r.adversarial_prompts) == 2
    for rows in (r.hits_base, r.hits_unattacked, r.hits_attacked):
        assert len(rows) == 2 and all(len(row) == EVAL["n"] for row in rows)
    assert 0 <= r.asr_unattacked <= r.asr <= 1 and r.asr >= r.attacked_rate - 1e-9
    both = np.mean([u or a for ru, ra in zip(r.hits_unattacked, r.hits_attacked) for u, a in zip(ru, ra)])
    assert r.asr == pytest.approx(both)
    if r.info.get("samplers"):  # a probe draws the plain prompts another way
        assert [list(vs) for vs in r.adversarial_prompts] == [[p] for p in r.prompts]
        assert set(r.info["sampler_hits"]) == set(r.info["samplers"]) and len(r.info["samplers"]) == 2
    else:
        assert all(p != q for p, vs in zip(r.prompts, r.adversarial_prompts) for q in vs), "the attack changes the prompt"


@pytest.mark.parametrize("name", attacks())
def test_same_seed_same_result(erased, name):
    pipe, edit = erased
    a, b = _attack(pipe, edit, name, seed=3), _attack(pipe, edit, name, seed=3)
    assert a.adversarial_prompts == b.adversarial_prompts and a.hits_attacked == b.hits_attacked
    if a.learned is not None:
        assert torch.equal(a.learned.embeddings, b.learned.embeddings)
        c = _attack(pipe, edit, name, seed=4)
        assert not torch.equal(a.learned.embeddings, c.learned.embeddings)


@pytest.mark.parametrize("name", attacks())
def test_result_round_trips(erased, name, tmp_path):
    pipe, edit = erased
    r = _attack(pipe, edit, name)
    again = AttackResult.load(r.save(tmp_path / "r"))
    assert again.to_dict() == r.to_dict()
    assert (again.learned is None) == (r.learned is None)
    if r.learned is not None:
        assert torch.equal(again.learned.embeddings, r.learned.embeddings) and again.learned.token == r.learned.token


@pytest.mark.parametrize("name", attacks())
def test_config_round_trips_through_json(name):
    cfg = make_config(name, **(EVAL | FAST[name]))
    again = config_from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and type(again) is type(cfg)


@pytest.mark.parametrize("name", sorted(LONG))
def test_restarts_share_the_evaluation_seeds_and_the_best_one_counts(erased, name):
    pipe, edit = erased
    cfg = make_config(name, **(EVAL | FAST[name]))
    runs = [attack(pipe, edit, _target(), cfg, torch.Generator().manual_seed(s), eval_seed=7) for s in (1, 2)]
    assert runs[0].hits_unattacked == runs[1].hits_unattacked and runs[0].hits_base == runs[1].hits_base
    assert [r.config["search_seed"] for r in runs] == [1, 2] and all(r.config["seed"] == 7 for r in runs)
    best = asr_best_of(runs)
    assert max(r.asr for r in runs) <= best <= sum(r.asr for r in runs)
    with pytest.raises(ValueError, match="pass `eval_seed`"):
        asr_best_of([runs[0], _attack(pipe, edit, name, seed=3)])


@pytest.mark.parametrize("name", sorted(LONG))
def test_interrupted_attack_resumes_to_the_same_result(erased, name, tmp_path):
    pipe, edit = erased
    straight = _attack(pipe, edit, name, **{LONG[name]: 4})
    _attack(pipe, edit, name, run=AttackRun(tmp_path, checkpoint_every=2, progress=False), **{LONG[name]: 2})
    resumed = _attack(pipe, edit, name, run=AttackRun(tmp_path, 2, resume=True, progress=False), **{LONG[name]: 4})
    assert resumed.adversarial_prompts == straight.adversarial_prompts
    if straight.learned is not None:
        torch.testing.assert_close(resumed.learned.embeddings, straight.learned.embeddings, rtol=0, atol=0)


@pytest.mark.parametrize("name", attacks())
def test_attack_on_an_edit_for_another_model_is_refused(erased, name):
    pipe, edit = erased
    with torch.no_grad():
        pipe.unet.conv_in.bias.add_(1.0)
    with pytest.raises(FingerprintMismatch, match="`force=True`|--force"):
        _attack(pipe, edit, name)


def test_bad_targets_are_clear_errors(erased):
    pipe, edit = erased
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="learns from images of the concept; pass `Target"):
        attack(pipe, edit, Target("circle", _judge()), make_config("inversion", **FAST["inversion"]), g)
    with pytest.raises(ValueError, match="no synonyms known for 'circle'"):
        attack(pipe, edit, Target("circle", _judge()), make_config("synonym"), g)
    with pytest.raises(ValueError, match="does not know concept 'square'"):
        attack(pipe, edit, Target("square", _judge()), make_config("synonym"), g)
    with pytest.raises(ValueError, match="unknown attack 'nope'; available: completion, guided, inpaint, inversion"):
        make_config("nope")
