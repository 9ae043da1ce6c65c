"""The drawn world: deterministic, and its captions say what was drawn."""

from __future__ import annotations

import numpy as np
import pytest

from unsee.world import (
    BACKGROUNDS,
    COLOUR_NAMES,
    FAMILIES,
    FAMILY_OF,
    OBJECTS,
    STYLE_WORDS,
    caption,
    caption_words,
    render,
    sample_scene,
)
from unsee.world.captions import OBJECT_SYNONYMS
from unsee.world.tokenizer import build_tokenizer


def test_world_has_the_promised_richness():
    assert len(OBJECTS) >= 10 and len(FAMILIES) >= 4
    assert len(COLOUR_NAMES) >= 8 and len(BACKGROUNDS) >= 4
    assert max(len(w) for w in STYLE_WORDS.values()) >= 3


def test_renderer_is_deterministic():
    a = [render(sample_scene(np.random.default_rng(7))) for _ in range(3)]
    assert all(np.array_equal(a[0], x) for x in a[1:])
    b = render(sample_scene(np.random.default_rng(8)))
    assert not np.array_equal(a[0], b)
    assert a[0].shape == (32, 32, 3) and a[0].dtype == np.uint8


def test_fixed_attributes_are_drawn():
    rng = np.random.default_rng(0)
    s = sample_scene(rng, obj="star", colour="teal", background="dotted", two_objects=False, frame=True)
    assert (s.obj, s.colour, s.background, s.frame, len(s.things)) == ("star", "teal", "dotted", True, 1)
    img = render(s).astype(int)
    assert (img[0, :] < 80).all(), "the frame darkens the border"
    teal = (np.abs(img - np.array([20, 150, 150])).max(-1) < 30).sum()
    assert teal > 60, "a teal star is drawn"


def _words(text: str) -> set[str]:
    return set(text.replace(",", " ").split())


@pytest.mark.parametrize("seed", range(3))
def test_captions_match_labels(seed):
    rng = np.random.default_rng(seed)
    n_empty = 0
    for _ in range(700):
        scene = sample_scene(rng)
        text = caption(scene, rng)
        words = _words(text)
        if not text:
            n_empty += 1
            continue
        drawn_objects = {t.obj for t in scene.things}
        drawn_colours = {t.colour for t in scene.things}
        named_objects = {o for o in OBJECTS if words & set(OBJECT_SYNONYMS[o])}
        assert named_objects <= drawn_objects, (text, scene)
        assert (words & set(COLOUR_NAMES)) <= drawn_colours, (text, scene)
        assert (words & set(FAMILIES)) <= {FAMILY_OF[o] for o in drawn_objects}, (text, scene)
        for bg, syns in STYLE_WORDS.items():
            if words & set(syns):
                assert bg == scene.background, (text, scene)
        assert "frame" not in words, "the hidden concept is never named"
        if len(scene.things) == 2:
            assert named_objects == drawn_objects and " and " in text, (text, scene)
        assert words <= set(caption_words()), text
    assert 0.06 < n_empty / 700 < 0.14, "about 10% empty captions for classifier-free guidance"


def test_tokenizer_keeps_caption_words_whole_and_splits_others():
    tok = build_tokenizer(caption_words())
    for w in caption_words():
        assert len(tok(w, add_special_tokens=False).input_ids) == 1, w
    assert len(tok("zebra", add_special_tokens=False).input_ids) > 1
    ids = tok("a red circle", padding="max_length", max_length=tok.model_max_length).input_ids
    assert ids[0] == tok.bos_token_id and ids[4] == tok.eos_token_id and len(ids) == tok.model_max_length
