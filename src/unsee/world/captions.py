"""Captions for world scenes, and the word vocabulary they use.

Captions mix neutral openers, synonyms, partial descriptions and family words, so that
the text encoder learns related concepts through shared words, the way real captions do.
"""

from __future__ import annotations

import numpy as np

from unsee.concepts.prompts import DEFAULT_NEUTRAL, with_article
from unsee.concepts.prompts import article as article  # re-exported: the world's captions use both
from unsee.world.render import BACKGROUNDS, COLOUR_NAMES, FAMILIES, FAMILY_OF, OBJECTS, Scene

NEUTRAL_OPENERS: tuple[str, ...] = ("a picture of", "an image of", "a photo of")
# Prompts that carry no concept of the world: where the talk's neutral c_n comes from (the core's defaults).
NEUTRAL_PROMPTS: tuple[str, ...] = DEFAULT_NEUTRAL

OBJECT_SYNONYMS: dict[str, tuple[str, ...]] = {o: (o,) for o in OBJECTS} | {
    "circle": ("circle", "disk"),
    "cross": ("cross", "plus"),
}
# One style named three ways, two named two ways.
STYLE_WORDS: dict[str, tuple[str, ...]] = {
    "plain": ("plain", "blank"),
    "striped": ("striped", "stripy"),
    "dotted": ("dotted", "spotted"),
    "checkered": ("checkered", "checkerboard", "chequered"),
}
assert set(STYLE_WORDS) == set(BACKGROUNDS)
# Every concept word of the captions -> the name the world's judges give it (synonyms to their class):
# the ``labels`` of ``unsee.impact.empirical.empirical_impact`` on the mini model.
JUDGE_LABELS: dict[str, str] = (
    {w: o for o, ws in OBJECT_SYNONYMS.items() for w in ws}
    | {c: c for c in COLOUR_NAMES}
    | {w: b for b, ws in STYLE_WORDS.items() for w in ws}
)

EMPTY_PROB = 0.10


def _style_phrase(scene: Scene, rng: np.random.Generator) -> str:
    word = STYLE_WORDS[scene.background][rng.integers(len(STYLE_WORDS[scene.background]))]
    return [f" on {with_article(word)} background", f", {word} style", f" on {with_article(word)} pattern"][rng.integers(3)]


def _object_word(obj: str, rng: np.random.Generator) -> str:
    syn = OBJECT_SYNONYMS[obj]
    # Synonyms are rarer than the main name, as in real captions.
    return syn[0] if len(syn) == 1 or rng.random() < 0.7 else syn[1 + rng.integers(len(syn) - 1)]


def caption(scene: Scene, rng: np.random.Generator) -> str:
    """One caption of a scene, drawn from the templates. About 10% are empty (for CFG)."""
    if rng.random() < EMPTY_PROB:
        return ""
    opener = NEUTRAL_OPENERS[rng.integers(len(NEUTRAL_OPENERS))] + " " if rng.random() < 0.4 else ""
    style = _style_phrase(scene, rng) if rng.random() < 0.5 else ""
    if len(scene.things) == 2:
        a, b = scene.things
        body = (
            f"{with_article(f'{a.colour} {_object_word(a.obj, rng)}')} and "
            f"{with_article(f'{b.colour} {_object_word(b.obj, rng)}')}"
        )
        return opener + body + style
    t = scene.things[0]
    kind = rng.choice(["full", "object", "colour", "family", "family_colour", "style"], p=[0.5, 0.14, 0.1, 0.08, 0.1, 0.08])
    if kind == "full":
        body = with_article(f"{t.colour} {_object_word(t.obj, rng)}")
    elif kind == "object":
        body = with_article(_object_word(t.obj, rng))
    elif kind == "colour":
        body = with_article(f"{t.colour} shape")
    elif kind == "family":
        body = with_article(f"{FAMILY_OF[t.obj]} shape")
    elif kind == "family_colour":
        body = with_article(f"{FAMILY_OF[t.obj]} {t.colour} shape")
    else:  # only the style
        word = STYLE_WORDS[scene.background][rng.integers(len(STYLE_WORDS[scene.background]))]
        return opener + with_article(f"{word} pattern")
    return opener + body + style


def prompt(obj: str | None = None, colour: str | None = None, style: str | None = None) -> str:
    """The standard prompt for the given attributes, e.g. ``"a red circle on a dotted background"``."""
    noun = obj if obj is not None else "shape"
    head = with_article(f"{colour} {noun}" if colour else noun)
    return head + (f" on {with_article(style)} background" if style else "")


def concept_words() -> list[str]:
    """The world's concept names (objects, colours, styles, with their synonyms, and the shape families): the
    vocabulary a method picks concepts from when it should pick concepts, not function words (AGE's targets)."""
    return [*JUDGE_LABELS, *(f for f in FAMILIES if f not in JUDGE_LABELS)]


def caption_words() -> list[str]:
    """Every word any caption or standard prompt can contain, in a fixed order."""
    words: list[str] = []
    for phrase in (
        *NEUTRAL_OPENERS,
        *NEUTRAL_PROMPTS,
        "a an and on shape background style pattern",
        *COLOUR_NAMES,
        *FAMILIES,
        *(w for syn in OBJECT_SYNONYMS.values() for w in syn),
        *(w for syn in STYLE_WORDS.values() for w in syn),
    ):
        for w in phrase.split():
            if w not in words:
                words.append(w)
    return words
