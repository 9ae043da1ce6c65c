"""Image sets of one world concept: scenes that show it (or, ``without``, scenes that do not).

A textual inversion learns a token from a set of images D_c of a concept; in the mini world such a
set is drawn, with its ground truth known. Every scene shows the concept and varies everything
else at random as the world does (:func:`unsee.world.render.sample_scene`): for "circle" every
scene is a single-object scene of a circle in any colour on any background, with or without the
frame; for "frame" every scene has the frame. ``without`` draws scenes from the world's own
distribution that do not contain the concept (e.g. the images a neutral concept is learned from).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from unsee.world.captions import OBJECT_SYNONYMS, STYLE_WORDS, with_article
from unsee.world.render import BACKGROUNDS, COLOUR_NAMES, HIDDEN_CONCEPT, IMAGE_SIZE, OBJECTS, Scene, render, sample_scene

# Word -> (kind, the world's name); kinds are the oracle's groups.
CONCEPT_WORDS: dict[str, tuple[str, str]] = (
    {w: ("object", o) for o, ws in OBJECT_SYNONYMS.items() for w in ws}
    | {c: ("colour", c) for c in COLOUR_NAMES}
    | {w: ("background", b) for b, ws in STYLE_WORDS.items() for w in ws}
    | {HIDDEN_CONCEPT: ("frame", HIDDEN_CONCEPT)}
)
assert {n for k, n in CONCEPT_WORDS.values() if k == "object"} == set(OBJECTS)
assert {n for k, n in CONCEPT_WORDS.values() if k == "background"} == set(BACKGROUNDS)


@dataclass(frozen=True)
class WorldConcept:
    """A concept of the world: the word asked for, its kind (object, colour, background, frame) and name."""

    word: str
    kind: str
    name: str

    def shown_in(self, scene: Scene) -> bool:
        """Whether the scene shows this concept, by its ground truth."""
        if self.kind == "object":
            return any(t.obj == self.name for t in scene.things)
        if self.kind == "colour":
            return any(t.colour == self.name for t in scene.things)
        if self.kind == "background":
            return scene.background == self.name
        return scene.frame


def world_concept(word: str) -> WorldConcept:
    """The world concept a word names (synonyms included), with a one-line error listing the known ones."""
    key = word.strip().lower()
    if key not in CONCEPT_WORDS:
        groups = {k: [w for w, (kind, _) in CONCEPT_WORDS.items() if kind == k] for k in ("object", "colour", "background")}
        raise ValueError(f"unknown world concept {word!r}; known: objects {', '.join(groups['object'])}; colours "
                         f"{', '.join(groups['colour'])}; styles {', '.join(groups['background'])}; and the hidden "
                         f"concept {HIDDEN_CONCEPT}")  # fmt: skip
    kind, name = CONCEPT_WORDS[key]
    return WorldConcept(key, kind, name)


def concept_scenes(concept: str | WorldConcept, n: int, rng: np.random.Generator, without: bool = False) -> list[Scene]:
    """``n`` scenes that show ``concept`` (objects and colours in single-object scenes), or, ``without``,
    scenes of the world's own distribution that do not show it; everything else is drawn from ``rng``."""
    c = concept if isinstance(concept, WorldConcept) else world_concept(concept)
    if n < 1:
        raise ValueError(f"`n` must be at least 1 (got {n}): the number of images")
    scenes: list[Scene] = []
    while len(scenes) < n:
        if without:  # the world's distribution, less the scenes that show the concept (>= 70% are kept)
            s = sample_scene(rng)
            if c.shown_in(s):
                continue
        elif c.kind == "object":
            s = sample_scene(rng, obj=c.name, two_objects=False)
        elif c.kind == "colour":
            s = sample_scene(rng, colour=c.name, two_objects=False)
        elif c.kind == "background":
            s = sample_scene(rng, background=c.name)
        else:
            s = sample_scene(rng, frame=True)
        scenes.append(s)
    return scenes


def concept_images(concept: str | WorldConcept, n: int, seed: int, *, without: bool = False):
    """``n`` renders of :func:`concept_scenes` (``np.random.default_rng(seed)``) as ``(n, 3, H, W)`` float32 in [0, 1]:
    D_c for the attacks and the robust erasure, without a folder in between."""
    import torch

    scenes = concept_scenes(concept, n, np.random.default_rng(seed), without=without)
    return torch.from_numpy(np.stack([render(s) for s in scenes])).permute(0, 3, 1, 2).float().div(255.0)


def scene_label(scene: Scene) -> dict:
    """A scene's ground truth as JSON: its objects and colours, background and frame."""
    return {"objects": [t.obj for t in scene.things], "colours": [t.colour for t in scene.things],
            "background": scene.background, "frame": scene.frame}  # fmt: skip


def write_concept_images(
    concept: str, out: str | Path, n: int = 64, seed: int = 0, *, without: bool = False, preview: int = 32
) -> Path:
    """Write ``n`` images of ``concept`` (:func:`concept_scenes` with ``np.random.default_rng(seed)``) to ``out``.

    ``out`` becomes a plain image folder, ``0000.png``, ... at the world's 32x32 (what
    :func:`unsee.images.load_image_folder` reads), with ``concept.json`` (concept, n, seed, and
    each image's ground truth) and ``preview/grid.png``, a labelled grid of the first ``preview``
    images, in a subfolder so that it is not one of the set's images. Refuses a folder that
    already holds images (a smaller set written over a larger one would keep the rest).
    """
    from unsee.images import IMAGE_SUFFIXES, image_grid

    c = world_concept(concept)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file; pass a folder as `out`")
    if out.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in out.iterdir()):
        raise ValueError(f"{out} already holds images; pass a new or empty folder as `out`")
    scenes = concept_scenes(c, n, np.random.default_rng(seed), without=without)
    out.mkdir(parents=True, exist_ok=True)
    width = max(4, len(str(n - 1)))
    files = []
    for i, s in enumerate(scenes):
        files.append(f"{i:0{width}d}.png")
        Image.fromarray(render(s)).save(out / files[-1])
    meta = {"concept": c.word, "kind": c.kind, "name": c.name, "without": without, "n": n, "seed": seed,
            "size": IMAGE_SIZE, "images": [{"file": f, **scene_label(s)} for f, s in zip(files, scenes)]}  # fmt: skip
    (out / "concept.json").write_text(json.dumps(meta, indent=2))
    if preview > 0:
        shown = scenes[:preview]
        labels = [" + ".join(f"{t.colour} {t.obj}" for t in s.things) + f" | {s.background}" + (" | frame" if s.frame else "")
                  for s in shown]  # fmt: skip
        (out / "preview").mkdir(exist_ok=True)
        title = f"{'without ' if without else ''}{c.word} ({c.kind}), seed {seed}: {len(shown)} of {n}"
        image_grid(np.stack([render(s) for s in shown]), labels, cols=8, title=title).save(out / "preview" / "grid.png")
    return out


def caption_without(scene: Scene, concept: str | WorldConcept) -> str:
    """What a scene shows but ``concept``, as words ("a red circle", "a red" for the circle itself): the captions
    textual inversion trains a token beside, so that the token learns the concept and nothing else."""
    c = concept if isinstance(concept, WorldConcept) else world_concept(concept)
    parts = []
    for t in scene.things:
        colour = "" if c.kind == "colour" and t.colour == c.name else t.colour
        obj = "" if c.kind == "object" and t.obj == c.name else t.obj
        words = " ".join(w for w in (colour, obj) if w)
        parts.append(with_article(words) if words else "")
    return " and ".join(p for p in parts if p)
