"""Attack targets in the mini world: a concept's prompts, its names and the oracle's label for it.

:func:`attack_target` builds the :class:`~unsee.attacks.Target` that ``unsee attack`` uses on the
mini model: prompts that put the concept where the world's captions put it (an object after a
colour, a colour before an object, a style as the background, the frame after the object), the
concept's other names from the captions (the synonym attack's words), and the oracle's name for it
(synonyms map to their class: "disk" is read as "circle").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from unsee.attacks.base import AttackResult, Target
from unsee.concepts.prompts import article
from unsee.judges import Judge
from unsee.world.captions import OBJECT_SYNONYMS, STYLE_WORDS
from unsee.world.concepts import concept_images, world_concept
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


ATTACK_BUDGETS: dict[str, dict] = {
    "inversion": dict(inversion_steps=300, batch_size=8, lr=5e-3),
    "token-search": dict(search_steps=160, batch_size=8, lr=0.01, k_tokens=5),
}
"""The attack budgets fixed on the mini model (benchmarks/attacks.py, scaled from Concept Inversion's and
UnlearnDiffAtk's); attacks not named here run at their config's defaults."""


def attack_concepts(
    pipe,
    edit,
    concepts: Sequence[str],
    attacks: Sequence[str],
    *,
    judge: Judge | None = None,
    n: int = 8,
    n_prompts: int = 4,
    n_images: int = 32,
    seed: int = 0,
    budgets: Mapping[str, Mapping] | None = None,
    run_dir: str | Path | None = None,
    progress: bool = False,
) -> dict[str, dict[str, AttackResult]]:
    """Every attack on every erased world concept of ``edit``: ``{concept: {attack: AttackResult}}``.

    D_c is ``n_images`` renders (image seed 1, apart from any training set drawn with seed 0); each
    attack is judged on ``n_prompts`` prompts x ``n`` seeds, the same seeds for every attack. With
    ``run_dir`` each result is kept at ``run_dir/<concept>/<attack>`` and reused when it was made on
    the same edit, so an interrupted evaluation resumes. The synonym attack is skipped for concepts
    without another name.
    """
    from unsee.attacks import AttackRun, attack, config_class, make_config

    if judge is None:
        from unsee.world.oracle import load_oracle

        judge = load_oracle()
    out: dict[str, dict[str, AttackResult]] = {}
    for c in concepts:
        needs = any(config_class(a).uses_images for a in attacks)  # the probes draw no picture of the concept
        target = attack_target(c, concept_images(c, n_images, seed=1) if needs else None, n_prompts=n_prompts, judge=judge)
        out[c] = {}
        for a in attacks:
            if a == "synonym" and not target.synonyms:
                continue
            folder = None if run_dir is None else Path(run_dir) / c / a
            if folder is not None and (folder / "attack.json").exists():
                kept = AttackResult.load(folder)
                if kept.edit["digest"] == edit.digest:
                    out[c][a] = kept
                    continue
            cfg = make_config(a, n=n, **({**ATTACK_BUDGETS.get(a, {}), **(budgets or {}).get(a, {})}))
            run = AttackRun(None if folder is None else folder / "run", checkpoint_every=50, progress=progress,
                            resume=folder is not None and (folder / "run" / "checkpoint.pt").exists())  # fmt: skip
            reuse = next(iter(out[c].values()), None)
            reuse = reuse if reuse is not None and reuse.config.get("n") == n and reuse.config.get("seed") == seed else None
            r = attack(pipe, edit, target, cfg, torch.Generator().manual_seed(seed), run=run, reuse=reuse)
            if folder is not None:
                r.save(folder)
            out[c][a] = r
    return out
