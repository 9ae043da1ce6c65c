"""Labelled image grids: pictures a person would rather look at than read."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont


def to_pil(images: torch.Tensor | np.ndarray) -> list[Image.Image]:
    """``(B, 3, H, W)`` tensors or ``(B, H, W, 3)`` arrays in [0, 1] (or uint8) to PIL images."""
    if isinstance(images, torch.Tensor):
        images = images.detach().float().cpu().permute(0, 2, 3, 1).numpy()
    if images.dtype != np.uint8:
        images = (np.clip(images, 0, 1) * 255).round().astype(np.uint8)
    return [Image.fromarray(im) for im in images]


def _wrap(text: str, width: int, font: ImageFont.ImageFont, draw: ImageDraw.ImageDraw) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if draw.textlength(trial, font=font) <= width or not line:
            line = trial
        else:
            lines.append(line)
            line = word
    return lines + [line] if line else lines or [""]


def image_grid(
    images: torch.Tensor | np.ndarray | Sequence[Image.Image],
    labels: Sequence[str] | None = None,
    *,
    cols: int | None = None,
    cell: int = 128,
    title: str | None = None,
    row_labels: Sequence[str] | None = None,
) -> Image.Image:
    """Tile images into a grid, each upscaled to ``cell`` px (nearest) with its label beneath."""
    pil = list(images) if isinstance(images, (list, tuple)) else to_pil(images)
    n = len(pil)
    cols = cols or min(n, 8)
    rows = math.ceil(n / cols)
    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    wrapped = [_wrap(lab, cell - 4, font, probe) for lab in labels] if labels else [[] for _ in pil]
    line_h = 12
    label_h = line_h * max((len(w) for w in wrapped), default=0) + (4 if labels else 0)
    left = 0
    if row_labels:
        left = int(max(probe.textlength(r, font=font) for r in row_labels)) + 8
    top = 18 if title else 0
    grid = Image.new("RGB", (left + cols * cell, top + rows * (cell + label_h)), "white")
    draw = ImageDraw.Draw(grid)
    if title:
        draw.text((4, 3), title, fill="black", font=font)
    for i, im in enumerate(pil):
        r, c = divmod(i, cols)
        x, y = left + c * cell, top + r * (cell + label_h)
        grid.paste(im.convert("RGB").resize((cell, cell), Image.NEAREST), (x, y))
        for j, line in enumerate(wrapped[i]):
            draw.text((x + 2, y + cell + 2 + j * line_h), line, fill="black", font=font)
    for r, lab in enumerate(row_labels or []):
        draw.text((4, top + r * (cell + label_h) + cell // 2 - 6), lab, fill="black", font=font)
    return grid


def save_images(images: torch.Tensor, folder: str | Path, names: Sequence[str]) -> list[Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for im, name in zip(to_pil(images), names):
        p = folder / f"{name}.png"
        im.save(p)
        paths.append(p)
    return paths
