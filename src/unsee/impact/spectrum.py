"""The sensitivity spectrum of an erasure over a concept vocabulary (the talk's "Sensitivity Spectrum").

For every concept c of a vocabulary, score(c) = -E_{(z_t, t)} ||eps_theta'(c, z_t) - eps_theta(c, z_t)||^2
(mean over latent elements) over fixed draws of (z_t, t): the higher the score, the less the erasure
changed what the model does with c. The base model's outputs are cached on disk once per
(model, vocabulary, draws) and reused for every edit; concepts are batched, and the work shards
across processes (``accelerate launch``) with the same numbers as one process.
"""

from __future__ import annotations

import ast
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline

from unsee.concepts.prompts import DEFAULT_NEUTRAL, with_article
from unsee.concepts.vocab import Vocabulary, build_vocabulary, model_words
from unsee.distributed import contiguous, gather
from unsee.edits import Edit
from unsee.models import fingerprint
from unsee.sampling import encode_prompts, initial_latents, sample_until, unet_eps


def concept_prompt(name: str, template: str = "a {}") -> str:
    """The prompt a concept name stands for: a quoted name (``"'a photo'"``) is that prompt as it is,
    a word goes through ``template`` (``"a {}"`` picks "a" or "an")."""
    if name.startswith("'"):
        return ast.literal_eval(name)
    return with_article(name) if template == "a {}" else template.format(name)


def concept_vocabulary(pipe: StableDiffusionPipeline, words: Sequence[str] | None = None, *, template: str = "a {}",
                       neutral: Sequence[str] = DEFAULT_NEUTRAL, cache_dir: str | Path | None = None) -> Vocabulary:  # fmt: skip
    """Concepts to score: ``words`` (default: the tokenizer's whole words but articles) through ``template``,
    plus the ``neutral`` prompts named quoted (``"''"``, ``"'a photo'"``) so plots can mark them."""
    words = list(words) if words is not None else [w for w in model_words(pipe) if w not in ("a", "an")]
    names = words + [repr(p) for p in neutral if repr(p) not in words]
    prompts = [concept_prompt(n, template) for n in names]
    v = build_vocabulary(pipe, prompts, template="{}", cache_dir=cache_dir)
    return Vocabulary(tuple(names), v.embeddings, template)


@dataclass(frozen=True)
class Draws:
    """Fixed (z_t, t) points: z_t from partial DDIM of the base model on "" at evenly spread steps."""

    z_t: torch.Tensor  # (D, C, H, W)
    t: torch.Tensor  # (D,)
    seed: int
    steps: int

    @property
    def key(self) -> str:
        return f"seed{self.seed}-n{len(self.t)}-steps{self.steps}"


@torch.no_grad()
def make_draws(pipe: StableDiffusionPipeline, n: int = 8, *, seed: int = 0, steps: int = 10,
               guidance_scale: float = 1.0) -> Draws:  # fmt: skip
    g = torch.Generator().manual_seed(seed)
    z_T = initial_latents(pipe, n, g)
    uncond = encode_prompts(pipe, [""])
    zs, ts = [], []
    for i in range(n):
        k = round(i * (steps - 1) / max(1, n - 1))
        part = sample_until(pipe, uncond, k, steps=steps, guidance_scale=guidance_scale, latents=z_T[i : i + 1])
        zs.append(part.z_t[0])
        ts.append(part.t)
    return Draws(torch.stack(zs), torch.stack([torch.as_tensor(t) for t in ts]), seed, steps)


@torch.no_grad()
def eps_table(pipe: StableDiffusionPipeline, cond: torch.Tensor, draws: Draws, batch_size: int = 256) -> torch.Tensor:
    """eps(c, z_t) for every concept embedding in ``cond`` (N, L, D) and draw: (N, D, C, H, W), batched."""
    n, d = cond.shape[0], len(draws.t)
    pairs = [(i, j) for i in range(n) for j in range(d)]
    out = torch.empty((n, d, *draws.z_t.shape[1:]), dtype=torch.float32)
    dev = pipe.unet.device
    for s in range(0, len(pairs), batch_size):
        chunk = pairs[s : s + batch_size]
        ci = torch.tensor([i for i, _ in chunk])
        dj = torch.tensor([j for _, j in chunk])
        e = unet_eps(pipe.unet, draws.z_t[dj].to(dev, pipe.unet.dtype), draws.t[dj].to(dev), cond[ci].to(dev))
        out[ci, dj] = e.float().cpu()
    return out


def _shard(n: int) -> tuple[range, object | None]:
    """This process's slice of n concepts, and the accelerate state when several processes run."""
    return contiguous(n)


def _gather(part: torch.Tensor, n: int, state) -> torch.Tensor:
    return part if state is None else torch.cat(gather(part, state))[:n]


def base_outputs(pipe: StableDiffusionPipeline, vocab: Vocabulary, draws: Draws, cache_dir: str | Path | None,
                 batch_size: int = 256) -> torch.Tensor:  # fmt: skip
    """The base model's eps table for the vocabulary, from the disk cache when present."""
    path = None
    if cache_dir is not None:
        key = hashlib.sha256(json.dumps([fingerprint(pipe), list(vocab.words), vocab.template, draws.key]).encode())
        path = Path(cache_dir) / f"base-eps-{key.hexdigest()[:16]}.pt"
        if path.exists():
            return torch.load(path, weights_only=True)
    rows, state = _shard(len(vocab))
    table = _gather(eps_table(pipe, vocab.embeddings[list(rows)], draws, batch_size), len(vocab), state)
    if path is not None and (state is None or state.is_main_process):
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(table, path.with_suffix(".tmp"))
        path.with_suffix(".tmp").replace(path)
    return table


@dataclass(frozen=True)
class Spectrum:
    """Similarity scores per concept (higher = less affected), with the edit they describe."""

    words: tuple[str, ...]
    scores: torch.Tensor
    concepts: tuple[str, ...] = ()
    method: str = ""
    info: dict = field(default_factory=dict)

    def order(self) -> list[tuple[str, float]]:
        """Concepts from most affected (lowest score) to least."""
        idx = self.scores.argsort()
        return [(self.words[i], float(self.scores[i])) for i in idx]

    def percentile(self, word: str) -> float:
        """Share of concepts more affected than ``word`` (0 = the most affected, 100 = the least)."""
        s = float(self.scores[self.words.index(word)])
        return 100.0 * float((self.scores < s).float().mean())

    def to_dict(self) -> dict:
        return {"concepts": list(self.concepts), "method": self.method, "info": self.info,
                "scores": dict(zip(self.words, self.scores.tolist()))}  # fmt: skip


@torch.no_grad()
def spectrum(
    pipe: StableDiffusionPipeline,
    edit: Edit | None,
    vocab: Vocabulary,
    draws: Draws,
    *,
    cache_dir: str | Path | None = None,
    batch_size: int = 256,
    force: bool = False,
    base: torch.Tensor | None = None,
) -> Spectrum:
    """Score every vocabulary concept under ``edit`` (``None``: the identity edit). ``base``: the base model's table
    (:func:`base_outputs`) when the caller holds it, as it does for several edits of one model."""
    base = base_outputs(pipe, vocab, draws, cache_dir, batch_size) if base is None else base
    rows, state = _shard(len(vocab))
    if edit is None:
        edited = eps_table(pipe, vocab.embeddings[list(rows)], draws, batch_size)
    else:
        with edit.applied(pipe, force=force):
            edited = eps_table(pipe, vocab.embeddings[list(rows)], draws, batch_size)
    part = -((edited - base[list(rows)]) ** 2).flatten(2).mean(-1).mean(-1)
    scores = _gather(part, len(vocab), state)
    return Spectrum(tuple(vocab.words), scores, tuple(edit.concepts) if edit else (), edit.method if edit else "identity",
                    {"draws": draws.key, "template": vocab.template})  # fmt: skip


@torch.no_grad()
def spectrum_plain_loop(pipe: StableDiffusionPipeline, edit: Edit, words: Sequence[str], draws: Draws,
                        template: str = "{}") -> Spectrum:  # fmt: skip
    """The same scores the naive way: per concept and draw, base and edited outputs, no cache, no batching."""
    edit.check(pipe)  # once: the reference loop should time the UNet, not the fingerprint
    scores = []
    for w in words:
        cond = encode_prompts(pipe, [template.format(w)])
        diffs = []
        for j in range(len(draws.t)):
            z, t = draws.z_t[j : j + 1], draws.t[j]
            e0 = unet_eps(pipe.unet, z, t, cond)
            undo = edit.apply(pipe, check=False)
            e1 = unet_eps(pipe.unet, z, t, cond)
            undo.restore()
            diffs.append(((e1 - e0) ** 2).mean())
        scores.append(-torch.stack(diffs).mean())
    return Spectrum(tuple(words), torch.stack(scores), tuple(edit.concepts), edit.method)


def plot_spectrum(spec: Spectrum, out: str | Path, *, label_extremes: int = 6,
                  neutral: Sequence[str] = DEFAULT_NEUTRAL) -> Path:  # fmt: skip
    """Sorted scores, extremes labelled, neutral prompts marked."""
    import matplotlib.pyplot as plt

    fig = spectrum_figure(spec, label_extremes=label_extremes, neutral=neutral)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return Path(out)


def spectrum_figure(spec: Spectrum, *, label_extremes: int = 6, neutral: Sequence[str] = DEFAULT_NEUTRAL):
    """The figure :func:`plot_spectrum` saves (tests check that its labels do not overlap)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = spec.order()
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.plot(range(len(order)), [s for _, s in order], color="#345", lw=1.5)
    # Labels sit in free rows and columns of the axes (below the flat part of the curve), joined to their
    # points by thin lines, so they keep clear of the title, the curve and each other.
    line = dict(arrowstyle="-", lw=0.5, alpha=0.6)
    n_ex = min(label_extremes, len(order) // 2)
    quoted = [repr(p) for p in neutral]
    marked = 0
    for i, (w, s) in enumerate(order):
        if w in neutral or w in quoted:
            ax.scatter([i], [s], color="tab:orange", zorder=3)
            row, col = divmod(marked, 4)
            ax.annotate(w if w.startswith("'") else repr(w), (i, s), xytext=(0.32 + 0.13 * col, 0.30 - 0.09 * row),
                        textcoords="axes fraction", color="tab:orange", ha="center",
                        arrowprops=line | {"color": "tab:orange"})  # fmt: skip
            marked += 1
        elif i < n_ex:  # the most affected: a column left of the centre, bottom up
            ax.annotate(w, (i, s), xytext=(0.12, 0.06 + 0.085 * i), textcoords="axes fraction", fontsize=8,
                        arrowprops=line | {"color": "#345"})  # fmt: skip
        elif i >= len(order) - n_ex:  # the least affected: a column at the right, top down
            k = len(order) - 1 - i
            ax.annotate(w, (i, s), xytext=(0.90, 0.62 - 0.085 * k), textcoords="axes fraction", fontsize=8,
                        arrowprops=line | {"color": "#345"})  # fmt: skip
    ax.set_xlabel("concepts, most affected → least affected")
    ax.set_ylabel("−‖ε′(c, z_t) − ε(c, z_t)‖²")
    ax.set_title(f"sensitivity spectrum: {spec.method} erasing {', '.join(spec.concepts) or 'nothing'}", pad=10)
    fig.tight_layout()
    return fig
