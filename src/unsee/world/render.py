"""The unsee world: seeded scenes of shapes, colours and background styles, drawn by code.

Every image's content is known exactly (a :class:`Scene`), so an oracle can judge what a
model draws. Shapes are drawn at 4x resolution and box-filtered down, which gives smooth
anti-aliased edges at 32 px.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

# Visual families: related objects share a family (and a family word in some captions).
FAMILIES: dict[str, tuple[str, ...]] = {
    "round": ("circle", "ring", "oval"),
    "angular": ("square", "triangle", "hexagon"),
    "pointed": ("arrow", "diamond"),
    "spiky": ("star", "cross"),
}
OBJECTS: tuple[str, ...] = tuple(o for objs in FAMILIES.values() for o in objs)
FAMILY_OF: dict[str, str] = {o: f for f, objs in FAMILIES.items() for o in objs}

# Near pairs on purpose (red/orange, green/teal, blue/purple, pink/red) so colours can be confused.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (210, 35, 35),
    "orange": (240, 135, 25),
    "yellow": (235, 205, 30),
    "green": (45, 150, 50),
    "teal": (20, 150, 150),
    "blue": (40, 70, 210),
    "purple": (125, 50, 175),
    "pink": (240, 110, 175),
}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)

# Backgrounds act as *styles*: pale textures behind the object.
BACKGROUNDS: tuple[str, ...] = ("plain", "striped", "dotted", "checkered")

# The hidden concept: a dark frame drawn in some images that no caption ever names.
HIDDEN_CONCEPT = "frame"
FRAME_PROB = 0.15
TWO_OBJECT_PROB = 0.15

IMAGE_SIZE = 32
_SUPERSAMPLE = 4


@dataclass(frozen=True)
class Thing:
    """One drawn object: class, colour and placement (centre and radius in [0, 1] units)."""

    obj: str
    colour: str
    cx: float
    cy: float
    radius: float
    angle: float  # degrees


@dataclass(frozen=True)
class Scene:
    """Everything drawn in one image."""

    things: tuple[Thing, ...]
    background: str
    frame: bool = False
    texture_phase: tuple[float, float] = field(default=(0.0, 0.0))
    colour_jitter: tuple[int, int, int] = field(default=(0, 0, 0))

    @property
    def obj(self) -> str:
        return self.things[0].obj

    @property
    def colour(self) -> str:
        return self.things[0].colour


def _unit_polygon(obj: str) -> list[tuple[float, float]] | None:
    """Vertices of a shape of radius 1 centred at 0, or None for ellipse-drawn shapes."""
    if obj == "square":
        s = 0.78
        return [(-s, -s), (s, -s), (s, s), (-s, s)]
    if obj == "triangle":
        return [(math.cos(a), math.sin(a)) for a in np.deg2rad([-90, 30, 150])]
    if obj == "hexagon":
        return [(math.cos(a), math.sin(a)) for a in np.deg2rad(np.arange(0, 360, 60))]
    if obj == "diamond":
        return [(0.0, -1.0), (0.55, 0.0), (0.0, 1.0), (-0.55, 0.0)]
    if obj == "arrow":
        return [(-1.0, -0.22), (0.15, -0.22), (0.15, -0.62), (1.0, 0.0), (0.15, 0.62), (0.15, 0.22), (-1.0, 0.22)]
    if obj == "star":
        pts = []
        for k in range(10):
            r = 1.0 if k % 2 == 0 else 0.42
            a = math.radians(-90 + 36 * k)
            pts.append((r * math.cos(a), r * math.sin(a)))
        return pts
    if obj == "cross":
        w = 0.3
        return [(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w), (-1, w), (-1, -w), (-w, -w)]
    if obj == "oval":
        return [(math.cos(a), 0.52 * math.sin(a)) for a in np.linspace(0, 2 * math.pi, 64, endpoint=False)]
    return None


def _shape_mask(thing: Thing, size: int) -> Image.Image:
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    cx, cy, r = thing.cx * size, thing.cy * size, thing.radius * size
    if thing.obj in ("circle", "ring"):
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        if thing.obj == "ring":
            ri = 0.55 * r
            draw.ellipse([cx - ri, cy - ri, cx + ri, cy + ri], fill=0)
        return mask
    poly = _unit_polygon(thing.obj)
    if poly is None:
        raise ValueError(f"unknown object {thing.obj!r}; known: {', '.join(OBJECTS)}")
    a = math.radians(thing.angle)
    ca, sa = math.cos(a), math.sin(a)
    pts = [(cx + r * (x * ca - y * sa), cy + r * (x * sa + y * ca)) for x, y in poly]
    draw.polygon(pts, fill=255)
    return mask


def _background(scene: Scene, size: int) -> np.ndarray:
    base = np.array([236, 232, 224], dtype=np.float32)  # a warm off-white paper
    ink = np.array([172, 176, 186], dtype=np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    px, py = scene.texture_phase
    if scene.background == "plain":
        m = np.zeros((size, size), np.float32)
    elif scene.background == "striped":
        m = (np.floor((xx + yy + px) * 8) % 2).astype(np.float32)
    elif scene.background == "dotted":
        gx, gy = (xx * 6 + px) % 1 - 0.5, (yy * 6 + py) % 1 - 0.5
        m = ((gx**2 + gy**2) < 0.22**2).astype(np.float32)
    elif scene.background == "checkered":
        m = ((np.floor(xx * 4 + px) + np.floor(yy * 4 + py)) % 2).astype(np.float32)
    else:
        raise ValueError(f"unknown background {scene.background!r}; known: {', '.join(BACKGROUNDS)}")
    return base[None, None] * (1 - m[..., None]) + ink[None, None] * m[..., None]


def render(scene: Scene, size: int = IMAGE_SIZE) -> np.ndarray:
    """Draw a scene as an ``(size, size, 3)`` uint8 array."""
    big = size * _SUPERSAMPLE
    img = _background(scene, big)
    for thing in scene.things:
        colour = np.clip(np.array(COLOURS[thing.colour]) + np.array(scene.colour_jitter), 0, 255).astype(np.float32)
        alpha = np.asarray(_shape_mask(thing, big), dtype=np.float32)[..., None] / 255.0
        img = img * (1 - alpha) + colour[None, None] * alpha
    if scene.frame:
        w = max(1, round(0.06 * big))
        img[:w], img[-w:], img[:, :w], img[:, -w:] = 40, 40, 40, 40
    pil = Image.fromarray(img.round().astype(np.uint8)).resize((size, size), Image.BOX)
    return np.asarray(pil)


def sample_scene(
    rng: np.random.Generator,
    *,
    obj: str | None = None,
    colour: str | None = None,
    background: str | None = None,
    two_objects: bool | None = None,
    frame: bool | None = None,
) -> Scene:
    """Draw a random scene; any attribute given is fixed instead of drawn."""
    if two_objects is None:
        two_objects = bool(rng.random() < TWO_OBJECT_PROB)
    if background is None:
        background = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    if frame is None:
        frame = bool(rng.random() < FRAME_PROB)
    objs = [obj if obj is not None else OBJECTS[rng.integers(len(OBJECTS))]]
    cols = [colour if colour is not None else COLOUR_NAMES[rng.integers(len(COLOUR_NAMES))]]
    if two_objects:
        others = [o for o in OBJECTS if o != objs[0]]
        objs.append(others[rng.integers(len(others))])
        cols.append(COLOUR_NAMES[rng.integers(len(COLOUR_NAMES))])
        places = [(rng.uniform(0.24, 0.3), rng.uniform(0.38, 0.62)), (rng.uniform(0.7, 0.76), rng.uniform(0.38, 0.62))]
        radii = [rng.uniform(0.16, 0.2) for _ in range(2)]
    else:
        places = [(rng.uniform(0.38, 0.62), rng.uniform(0.38, 0.62))]
        radii = [rng.uniform(0.24, 0.34)]
    things = tuple(Thing(o, c, cx, cy, r, float(rng.uniform(-25, 25))) for o, c, (cx, cy), r in zip(objs, cols, places, radii))
    return Scene(
        things=things,
        background=background,
        frame=frame,
        texture_phase=(float(rng.random()), float(rng.random())),
        colour_jitter=tuple(int(v) for v in rng.integers(-12, 13, size=3)),
    )
