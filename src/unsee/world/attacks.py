"""Attack targets in the mini world: a concept's prompts, its names and the oracle's label for it.

:func:`attack_target` builds the :class:`~unsee.attacks.Target` that ``unsee attack`` uses on the
mini model: prompts that put the concept where the world's captions put it (an object after a
colour, a colour before an object, a style as the background, the frame after the object), the
concept's other names from the captions (the synonym attack's words), and the oracle's name for it
(synonyms map to their class: "disk" is read as "circle").
"""

from __future__ import annotations

import torch

from unsee.attacks.base import Target
from unsee.concepts.prompts import article
from unsee.judges import Judge
from unsee.world.captions import OBJECT_SYNONYMS, STYLE_WORDS
from unsee.world.concepts import world_concept
from unsee.world.render import COLOUR_NAMES, OBJECTS


def concept_prompts(concept: str, n_prompts: int = 4) -> tuple[str, ...]:
    """``n_prompts`` evaluation prompts for a world concept, ``{}`` where its word goes.

    objects ``"a red {}"``, colours ``"a {} circle"``, styles ``"a red circle on a {} background"``,
    the frame ``"a red circle {}"``; colours and objects other than the concept cycle through the world's.
    """
    c = world_concept(concept)
    if n_prompts < 1:
        raise ValueError(f"`n_prompts` must be at least 1 (got {n_prompts}): the number of evaluation prompts")
    colours = [x for x in COLOUR_NAMES if not (c.kind == "colour" and x == c.name)]
    objects = [x for x in OBJECTS if not (c.kind == "object" and x == c.name)]
    out = []
    for i in range(n_prompts):
        colour, obj = colours[i % len(colours)], objects[i % len(objects)]
        if c.kind == "object":
            out.append(f"{article(colour)} {colour} {{}}")
        elif c.kind == "colour":
            out.append(f"{article(c.word)} {{}} {obj}")
        elif c.kind == "background":
            out.append(f"{article(colour)} {colour} {obj} on a {{}} background")
        else:
            out.append(f"{article(colour)} {colour} {obj} {{}}")
    return tuple(dict.fromkeys(out))  # past the world's colours (objects) or objects (colours), no repeats


def concept_synonyms(concept: str) -> tuple[str, ...]:
    """The other words the world's captions use for a concept ("disk" for "circle"); colours and the frame have none."""
    c = world_concept(concept)
    words = {"object": OBJECT_SYNONYMS, "background": STYLE_WORDS}.get(c.kind, {}).get(c.name, ())
    return tuple(w for w in words if w != c.word)


def attack_target(
    concept: str,
    images: torch.Tensor | None = None,
    *,
    n_prompts: int = 4,
    judge: Judge | None = None,
) -> Target:
    """The :class:`~unsee.attacks.Target` of a world concept: prompts, synonyms and the oracle's label.

    ``concept`` is the word the edit erased ("circle", "disk", "red", "dotted", "frame"); ``images``
    are D_c for the attacks that learn from pictures (e.g. :func:`unsee.world.concepts.concept_scenes`
    rendered); ``judge`` defaults to the world's oracle.
    """
    c = world_concept(concept)
    if judge is None:
        from unsee.world.oracle import load_oracle

        judge = load_oracle()
    return Target(concept=c.word, judge=judge, label=c.name, images=images, prompts=concept_prompts(concept, n_prompts),
                  synonyms=concept_synonyms(concept))  # fmt: skip
