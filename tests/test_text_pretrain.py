"""The text encoder's pretext task: its targets, what it teaches, and its place in the trainer."""

from __future__ import annotations

import json

import numpy as np
import torch

from conftest import tiny_config
from unsee.world.captions import caption
from unsee.world.mini import build_components, train_mini
from unsee.world.render import sample_scene
from unsee.world.text_pretrain import CONCEPTS, concept_table, named_so_far, pretrain_text_encoder


def _ids(tok, prompts):
    return tok(prompts, padding="max_length", max_length=tok.model_max_length, return_tensors="pt").input_ids


def test_targets_are_the_concepts_named_so_far():
    tok = build_components(tiny_config())["tokenizer"]
    ids = _ids(tok, ["a red disk on a spotted background", "a round shape"])
    named = named_so_far(ids, concept_table(tok))
    names = lambda row: {CONCEPTS[i] for i in row.nonzero().flatten().tolist()}  # noqa: E731
    assert names(named[0, 2]) == {"red"}  # <bos> a red
    assert names(named[0, 3]) == {"red", "circle", "round"}  # a synonym names its object and the object's family
    assert names(named[0, -1]) == {"red", "circle", "round", "dotted background"}  # padding has seen the whole caption
    assert names(named[1, -1]) == {"round"}  # a family word names no object


def test_pretraining_teaches_the_encoder_what_captions_name():
    comps = build_components(tiny_config())
    te, tok = comps["text_encoder"], comps["tokenizer"]
    before = {k: v.clone() for k, v in te.state_dict().items()}
    frozen = te.requires_grad_(False)  # the trainer may freeze it; pretraining still trains it, then restores the flag
    result = pretrain_text_encoder(frozen, tok, 400, seed=0, lr=3e-3, batch_size=64)
    assert not any(p.requires_grad for p in te.parameters())
    assert any(not torch.equal(before[k], v) for k, v in te.state_dict().items())
    assert np.mean(result.losses[-10:]) < 0.2 * np.mean(result.losses[:10])
    # held-out captions (another seed's stream): the head reads off exactly what each caption named
    rng = np.random.default_rng(12345)
    ids = _ids(tok, [caption(sample_scene(rng), rng) for _ in range(200)])
    got, want = result.named(te, ids), named_so_far(ids, concept_table(tok)).bool()
    assert (got == want).all(dim=(1, 2)).float().mean() > 0.95


def test_a_run_with_pretraining_resumes_to_the_same_weights(tmp_path):
    run = dict(vae_steps=2, checkpoint_every=1, export_every=100, warmup=1, text_pretrain_steps=2, freeze_text_encoder=True)
    train_mini(tiny_config(steps=2, **run), tmp_path / "straight", progress=False)
    train_mini(tiny_config(steps=1, **run), tmp_path / "split", progress=False)
    train_mini(tiny_config(steps=2, **run), tmp_path / "split", resume=True, progress=False)
    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=False)
    init = build_components(tiny_config())["text_encoder"].state_dict()
    # pretrained once, then frozen (a second pretraining on resume would move it again)
    for name, t in a["text_encoder"].items():
        assert torch.equal(b["text_encoder"][name], t) and torch.equal(a["ema_text"][name], t), name
    assert not torch.equal(a["text_encoder"]["encoder.layers.0.mlp.fc1.weight"], init["encoder.layers.0.mlp.fc1.weight"])
    for name, t in a["unet"].items():
        assert torch.equal(b["unet"][name], t), name
    # every stage's steps are timed once, across the interruption (the pretext task ran once)
    steps = {k: v["steps"] for k, v in b["state"]["stage_seconds"].items()}
    assert steps == {"vae": 2, "text_pretrain": 2, "unet": 2}
    log = json.loads((tmp_path / "split" / "train_log.json").read_text())
    assert set(log["seconds_per_step"]) == set(steps) and all(v > 0 for v in log["seconds_per_step"].values())
    assert log["machine"]["cpu"] and log["machine"]["torch_threads"] >= 1
