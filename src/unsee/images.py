"""Labelled image grids (pictures a person would rather look at than read), and image folders in and out."""

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
    """Tile images into a grid, each upscaled to ``cell`` px (nearest) with its label beneath; ``title`` above,
    wrapped to the grid's width."""
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
    title_lines = _wrap(title, left + cols * cell - 8, font, probe) if title else []  # a long title wraps, not cut
    top = 6 + line_h * len(title_lines) if title else 0
    grid = Image.new("RGB", (left + cols * cell, top + rows * (cell + label_h)), "white")
    draw = ImageDraw.Draw(grid)
    for j, line in enumerate(title_lines):
        draw.text((4, 3 + j * line_h), line, fill="black", font=font)
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


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def load_image_folder(folder: str | Path, size: int | tuple[int, int] | None = None, *, rgb_only: bool = False) -> torch.Tensor:
    """The images in ``folder`` as ``(N, 3, H, W)`` float32 in [0, 1], in sorted file-name order.

    Reads the files ending in one of :data:`IMAGE_SUFFIXES` (any case) directly in ``folder``;
    subfolders, hidden files and other files (``concept.json``) are left out. RGBA, greyscale and
    palette images become RGB (alpha is dropped). ``size`` is the size every image must have: an
    int for square images, or ``(height, width)``; ``None`` takes the first image's, since one
    tensor needs one size. Images are not resized: a wrong size is an error that says so. ``rgb_only``
    refuses other modes instead of converting them (a protection must not drop an alpha channel unasked).
    Every problem is a one-line :class:`ValueError` naming the fix.
    """
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise ValueError(f"no folder {folder}; pass a folder of images (e.g. `unsee world sample --concept frame --out DIR`)")
    if not folder.is_dir():
        raise ValueError(f"{folder} is a file, not a folder; pass the folder that holds the images")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                   and p.suffix.lower() in IMAGE_SUFFIXES)  # fmt: skip
    if not files:
        raise ValueError(f"no images in {folder} (looked for {', '.join(IMAGE_SUFFIXES)}); put the images there "
                         "or pass another folder")  # fmt: skip
    want = (size, size) if isinstance(size, int) else tuple(size) if size is not None else None
    arrays = []
    for path in files:
        try:
            with Image.open(path) as im:
                im.load()
                mode = im.mode
                rgb = im.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise ValueError(f"cannot read {path} as an image ({type(e).__name__}); remove it from {folder} or replace it") from e
        if rgb_only and mode != "RGB":
            raise ValueError(f"{path} is a {mode} image, not RGB; convert it to RGB first (PIL: Image.convert('RGB'))")
        hw = (rgb.height, rgb.width)
        if want is None:
            want = hw
        if hw != want:
            raise ValueError(f"{path} is {hw[0]}x{hw[1]} (height x width), not the expected {want[0]}x{want[1]}; "
                             f"resize the images to {want[0]}x{want[1]} first")  # fmt: skip
        arrays.append(np.asarray(rgb, dtype=np.uint8))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div(255.0)
