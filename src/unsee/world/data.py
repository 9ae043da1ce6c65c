"""Batches of world scenes: images, captions and labels, each batch fixed by (seed, stream, index)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from unsee.world.captions import caption
from unsee.world.render import BACKGROUNDS, COLOUR_NAMES, OBJECTS, Scene, render, sample_scene


@dataclass(frozen=True)
class Batch:
    images: torch.Tensor  # (B, 3, H, W) in [-1, 1]
    captions: list[str]
    scenes: list[Scene]


def scene_rng(seed: int, stream: int, index: int) -> np.random.Generator:
    """The generator for batch ``index`` of a named stream: resuming a run redraws the same data."""
    return np.random.default_rng([seed, stream, index])


def to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    arr = np.stack(images).astype(np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


def make_batch(rng: np.random.Generator, size: int, **scene_kwargs) -> Batch:
    scenes = [sample_scene(rng, **scene_kwargs) for _ in range(size)]
    return Batch(to_tensor([render(s) for s in scenes]), [caption(s, rng) for s in scenes], scenes)


def labels(scenes: list[Scene]) -> dict[str, torch.Tensor]:
    """Soft targets per oracle head: two-object scenes split the mass between both objects."""
    n = len(scenes)
    out = {
        "object": torch.zeros(n, len(OBJECTS)),
        "colour": torch.zeros(n, len(COLOUR_NAMES)),
        "background": torch.zeros(n, len(BACKGROUNDS)),
        "frame": torch.zeros(n, 2),
    }
    for i, s in enumerate(scenes):
        for t in s.things:
            out["object"][i, OBJECTS.index(t.obj)] += 1.0 / len(s.things)
            out["colour"][i, COLOUR_NAMES.index(t.colour)] += 1.0 / len(s.things)
        out["background"][i, BACKGROUNDS.index(s.background)] = 1.0
        out["frame"][i, int(s.frame)] = 1.0
    return out


def labelled_renders(seed: int, stream: int, n: int, chunk: int = 500) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``n`` renders in [0, 1] of stream ``stream`` and their labels per head, drawn in chunks (what the judges train on)."""
    ims, labs = [], []
    for i in range(0, n, chunk):
        b = make_batch(scene_rng(seed, stream, i // chunk), min(chunk, n - i))
        ims.append((b.images + 1) / 2)
        labs.append(labels(b.scenes))
    return torch.cat(ims), {h: torch.cat([lab[h] for lab in labs]) for h in labs[0]}
