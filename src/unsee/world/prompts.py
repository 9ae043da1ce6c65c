"""The standard prompt sets of the mini world, each prompt paired with what the oracle should see."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from unsee.world.captions import OBJECT_SYNONYMS, STYLE_WORDS, with_article
from unsee.world.render import BACKGROUNDS, COLOUR_NAMES, FAMILIES, OBJECTS


@dataclass(frozen=True)
class Expected:
    """A prompt and the oracle labels it asks for (None: not asked)."""

    prompt: str
    obj: str | None = None
    colour: str | None = None
    background: str | None = None
    family: str | None = None
    second: str | None = None  # the second object of a two-object prompt


def object_colour_set() -> list[Expected]:
    """``"a {colour} {object}"`` for every object and colour (80 prompts)."""
    return [Expected(with_article(f"{c} {o}"), obj=o, colour=c) for o in OBJECTS for c in COLOUR_NAMES]


def background_set() -> list[Expected]:
    """Every object on every background, colours cycled."""
    out = []
    for i, o in enumerate(OBJECTS):
        for j, b in enumerate(BACKGROUNDS):
            c = COLOUR_NAMES[(i + j) % len(COLOUR_NAMES)]
            out.append(Expected(f"{with_article(f'{c} {o}')} on {with_article(b)} background", obj=o, colour=c,
                                background=b))  # fmt: skip
    return out


def synonym_set() -> list[Expected]:
    """Objects and styles named by their other words."""
    out = []
    for o, syns in OBJECT_SYNONYMS.items():
        for w in syns[1:]:
            out += [Expected(with_article(f"{c} {w}"), obj=o, colour=c) for c in COLOUR_NAMES[::2]]
    for b, words in STYLE_WORDS.items():
        for w in words[1:]:
            out += [Expected(f"{with_article(f'{c} {o}')} on {with_article(w)} background", obj=o, colour=c,
                             background=b) for o, c in (("circle", "red"), ("star", "blue"), ("square", "green"))]  # fmt: skip
    return out


def family_set() -> list[Expected]:
    """``"a {family} {colour} shape"``: success when the object is in the family."""
    return [Expected(with_article(f"{f} {c} shape"), colour=c, family=f) for f in FAMILIES for c in COLOUR_NAMES[::2]]


def two_object_set() -> list[Expected]:
    """``"a {c1} {o1} and a {c2} {o2}"`` over pairs of objects."""
    out = []
    for i, a in enumerate(OBJECTS):
        for b in (OBJECTS[(i + 3) % len(OBJECTS)], OBJECTS[(i + 7) % len(OBJECTS)]):
            ca, cb = COLOUR_NAMES[i % 8], COLOUR_NAMES[(i + 4) % 8]
            out.append(Expected(f"{with_article(f'{ca} {a}')} and {with_article(f'{cb} {b}')}", obj=a, second=b))
    return out


def composition_prompts(erased: Sequence[str], *, n_prompts: int = 4, n_preserved: int = 8) -> dict[str, tuple[str, ...]]:
    """The prompts an interference report of erasures of ``erased`` asks with: prompt -> the oracle labels it asks for
    (the ``prompts`` of :func:`unsee.impact.interference.interference_report`).

    ``n_prompts`` per erased concept, which the world's concepts the composition keeps surround (objects
    ``"a {colour} {object}"``, colours ``"a {colour} {object}"``, styles ``"a {colour} {object} on a {style}
    background"``), and ``n_preserved`` prompts that ask for a kept object, colour and style together (every
    kept one at least once when ``n_preserved`` allows).
    """
    from unsee.world.concepts import world_concept

    names = [world_concept(c) for c in erased]
    gone = {c.name for c in names}
    if n_prompts < 1 or n_preserved < 1:
        raise ValueError(f"`n_prompts` and `n_preserved` must be at least 1 (got {n_prompts} and {n_preserved})")
    kinds = [c.kind for c in names if c.kind not in ("object", "colour", "background")]
    if kinds:
        raise ValueError(f"composition prompts ask for objects, colours and styles; not the {kinds[0]}")
    objects = [o for o in OBJECTS if o not in gone] or list(OBJECTS)
    colours = [c for c in COLOUR_NAMES if c not in gone] or list(COLOUR_NAMES)
    styles = [b for b in BACKGROUNDS if b not in gone] or list(BACKGROUNDS)
    out: dict[str, tuple[str, ...]] = {}
    for c in names:
        for i in range(n_prompts):
            o, col = objects[i % len(objects)], colours[(i + 1) % len(colours)]
            if c.kind == "object":
                out[with_article(f"{col} {c.name}")] = (c.name, col)
            elif c.kind == "colour":
                out[with_article(f"{c.name} {o}")] = (o, c.name)
            else:
                out[f"{with_article(f'{col} {o}')} on {with_article(c.name)} background"] = (o, col, c.name)
    for i in range(n_preserved):
        o, col, b = objects[i % len(objects)], colours[(i + 2) % len(colours)], styles[i % len(styles)]
        out[f"{with_article(f'{col} {o}')} on {with_article(b)} background"] = (o, col, b)
    return out
