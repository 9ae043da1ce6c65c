"""Prompt sets as CSV files (the I2P and COCO-caption layouts), sampled with a per-image cache and scored by metrics.

I2P (``unsafe-prompts4703.csv`` of ESD and its followers): ``prompt, categories, hard, ..., sd_seed,
sd_guidance_scale, sd_image_width, sd_image_height, sd_model, evaluation_seed, evaluation_guidance, case_number``.
COCO-30k captions: ``case_number, image_id, id, prompt`` (or ``caption``), ``evaluation_seed``. A row draws with
its own seed, guidance and steps where its columns give them, else the model's defaults (seed: ``seed`` + row
number). The width/height columns are the I2P images' (512 px for SD 1.4); images are drawn at the model's size.

A row's images depend only on the model weights (with any applied edit), its prompt, seed, guidance, steps, ``n``
and the model's image size: that is the cache key (:func:`unsee.metrics.judged.cached_prompt_images`), so an
interrupted evaluation resumes and appending rows to the CSV samples only the new ones.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline
from tqdm.auto import tqdm

from unsee.distributed import processes
from unsee.metrics import judged
from unsee.metrics.base import Metric
from unsee.models import sampling_defaults

PROMPT_COLUMNS = ("prompt", "caption", "text")
SEED_COLUMNS = ("evaluation_seed", "sd_seed", "seed")
GUIDANCE_COLUMNS = ("evaluation_guidance", "sd_guidance_scale", "guidance_scale", "guidance")
STEPS_COLUMNS = ("evaluation_steps", "num_inference_steps", "ddim_steps", "steps")
NONE = "none"
"""A column flag's value that ignores the column (e.g. draw every I2P row at the model's guidance)."""


@dataclass(frozen=True)
class PromptRow:
    """One CSV row to draw: its prompt and, where the CSV gives them, its seed, guidance and steps."""

    index: int
    prompt: str
    seed: int
    guidance_scale: float | None = None
    steps: int | None = None
    case: str = ""


def _column(header: Sequence[str], given: str | None, known: Sequence[str], param: str, path: Path) -> str | None:
    if given is not None:
        if given.lower() == NONE:
            return None
        if given not in header:
            raise ValueError(f"{path} has no column {given!r} (`{param}`); columns found: {', '.join(header)}")
        return given
    return next((c for c in known if c in header), None)


def _number(value: str | None, kind: type, column: str, row: int, path: Path) -> float | int | None:
    """A numeric cell (an empty one is None: the model's default); anything else is a one-line error."""
    if value is None or not value.strip():
        return None
    try:
        x = float(value)
    except ValueError:
        x = float("nan")
    if x != x or (kind is int and x != int(x)):
        want = "an integer" if kind is int else "a number"
        raise ValueError(f"{path} row {row + 1}: column {column!r} holds {value!r}, not {want}")
    return int(x) if kind is int else x


def read_prompt_csv(
    path: str | Path,
    *,
    prompt_column: str | None = None,
    seed_column: str | None = None,
    guidance_column: str | None = None,
    steps_column: str | None = None,
    seed: int = 0,
    limit: int | None = None,
) -> list[PromptRow]:
    """The rows of an I2P- or COCO-layout CSV. Columns are found by their usual names unless named; ``"none"``
    ignores one. A row without a seed gets ``seed`` + its row number. Problems are one-line errors."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ValueError(f"no CSV file at {path}; pass a prompt CSV file (I2P or COCO-caption layout)")
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h for h in (reader.fieldnames or []) if h is not None]
        table = list(reader)
    pcol = _column(header, prompt_column, PROMPT_COLUMNS, "prompt_column", path)
    if pcol is None:
        raise ValueError(f"{path} has no prompt column (looked for {', '.join(PROMPT_COLUMNS)}); name it with "
                         f"`prompt_column`; columns found: {', '.join(header) or 'none'}")  # fmt: skip
    scol = _column(header, seed_column, SEED_COLUMNS, "seed_column", path)
    gcol = _column(header, guidance_column, GUIDANCE_COLUMNS, "guidance_column", path)
    tcol = _column(header, steps_column, STEPS_COLUMNS, "steps_column", path)
    rows = []
    for i, r in enumerate(table[:limit] if limit else table):
        prompt = (r.get(pcol) or "").strip()
        if not prompt:
            raise ValueError(f"{path} row {i + 1}: the prompt column {pcol!r} is empty")
        s = _number(r.get(scol), int, scol, i, path) if scol else None
        rows.append(PromptRow(index=i, prompt=prompt, seed=seed + i if s is None else int(s),
                              guidance_scale=_number(r.get(gcol), float, gcol, i, path) if gcol else None,
                              steps=_number(r.get(tcol), int, tcol, i, path) if tcol else None,
                              case=str(r.get("case_number") or i)))  # fmt: skip
    if not rows:
        raise ValueError(f"{path} holds no rows under its header")
    return rows


def settings(pipe: StableDiffusionPipeline, row: PromptRow) -> tuple[int, float]:
    """The steps and guidance a row draws with: its own, else the model's defaults."""
    d = sampling_defaults(pipe)
    return (d.steps if row.steps is None else row.steps, d.guidance_scale if row.guidance_scale is None else row.guidance_scale)


def sample_rows(
    pipe: StableDiffusionPipeline,
    rows: Sequence[PromptRow],
    cache_dir: str | Path,
    *,
    n: int = 1,
    batch_size: int = 8,
    progress: bool = False,
    model_key: str | None = None,
) -> list[torch.Tensor]:
    """Each row's ``n`` images ``(n, 3, H, W)`` in [0, 1], drawn in batches of rows with equal steps and guidance
    (through :func:`unsee.metrics.judged.cached_prompt_images`, one batch at a time, so every finished batch is kept)."""
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be at least 1 (got {batch_size})")
    model_key = model_key or judged.weights_key(pipe)
    f = pipe.vae_scale_factor
    side = pipe.unet.config.sample_size * f
    folder = Path(cache_dir) / f"{side}x{side}"
    groups: dict[tuple[int, float], list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault(settings(pipe, r), []).append(i)
    out: dict[int, torch.Tensor] = {}
    # A call draws as many batches as there are processes (one each under `accelerate launch`), and is then kept.
    per = max(1, batch_size // n) * processes()
    with tqdm(total=len(rows), desc="sampling", unit="prompt", disable=not progress) as bar:
        for (steps, g), idx in groups.items():
            for s in range(0, len(idx), per):
                chunk = idx[s : s + per]
                ims = judged.cached_prompt_images(pipe, [rows[i].prompt for i in chunk], folder,
                                                  seeds=[rows[i].seed for i in chunk], n=n, steps=steps,
                                                  guidance_scale=g, batch_size=batch_size, model_key=model_key)  # fmt: skip
                out.update(zip(chunk, ims))
                bar.update(len(chunk))
    return [out[i] for i in range(len(rows))]


def score_rows(
    rows: Sequence[PromptRow],
    images: Sequence[torch.Tensor],
    metrics: Mapping[str, Metric],
    base: Sequence[torch.Tensor] | None = None,
) -> tuple[dict[str, float], list[dict[str, float | str]]]:
    """Every metric on every row's images: the set-level summary and one dict per row (the per-prompt CSV)."""
    prompts = [r.prompt for r in rows]
    per_prompt: list[dict[str, float | str]] = [
        {"index": r.index, "case_number": r.case, "prompt": r.prompt, "seed": r.seed} for r in rows
    ]
    summary: dict[str, float] = {}
    for name, metric in metrics.items():
        if metric.needs_base and base is None:
            raise ValueError(f"metric {name} compares with the base model's images: pass `base`")
        scores = metric(prompts, images, base if metric.needs_base else None)
        summary |= scores.summary
        for d, s in zip(per_prompt, scores.per_prompt):
            d |= s
    return summary, per_prompt


def write_per_prompt(path: str | Path, per_prompt: Sequence[Mapping[str, float | str]]) -> None:
    """One CSV row per prompt, with a column per metric value."""
    columns = list(dict.fromkeys(k for d in per_prompt for k in d))
    with Path(path).open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        for d in per_prompt:
            w.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in d.items()})
