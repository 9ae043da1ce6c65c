"""Alpha concepts: which concepts take over an image when composed with another (the talk's Idea 5).

For every ordered pair ``(a, b)`` of concepts that one judge group tells apart, prompts that compose
them (``"a red {a} and a blue {b}"``) are drawn from fixed seeds, both ways round, and the judge reads
which of the two appears: a concept *appears* in an image when the judge gives it at least ``present``
of its group's probability (a two-object image splits the mass, a one-object image does not).

- ``D[a, b]`` (the dominance matrix) is the share of images where ``a`` appears and ``b`` does not,
  minus the share where ``b`` appears and ``a`` does not, averaged over the two orders of the prompt
  (the same seeds for both), so ``D`` is antisymmetric and word order does not decide it.
- ``alpha[a]`` is ``a``'s mean dominance over the others: +1 when it always wins, -1 when it always
  loses.

:func:`predictors` computes quantities of the base model alone that may rank the concepts without
generating the pairs: the guidance norm ``||eps(c) - eps(empty)||``, the cross-attention mass a
concept's tokens take in composed prompts, and text-embedding norms. :func:`spearman_table` says how
well each ranks the measured alpha scores.

The core knows no world: prompts come from ``templates``, and a :class:`unsee.judges.Judge` reads the
images. Images go through :func:`unsee.metrics.judged.cached_prompt_images` when ``cache_dir`` is
given, so an interrupted run resumes prompt by prompt.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from diffusers import StableDiffusionPipeline
from scipy.stats import spearmanr
from tqdm.auto import tqdm

from unsee.concepts.prompts import with_article
from unsee.judges import Judge, group_of
from unsee.metrics.judged import cached_prompt_images, prompt_images, weights_key
from unsee.models import fingerprint
from unsee.sampling import encode_prompts, unet_eps


def _slots(template: str) -> list[str]:
    import re

    return re.findall(r"\{[A-Za-z]*\}", template)


PREDICTORS: tuple[str, ...] = ("guidance_norm", "attention_share", "token_embedding_norm", "text_feature_norm")


@dataclass(frozen=True)
class AlphaConfig:
    """How dominance is measured.

    ``templates`` compose two concepts with ``{a}`` and ``{b}`` (``{A}``, ``{B}``: with the article, "an
    orange"); each is drawn both ways round. ``n``
    images per prompt; the prompt of pair ``p`` (unordered, in order of ``concepts``) and template ``t``
    is seeded ``seed + p * len(templates) + t`` in both orders. ``single`` names one concept alone (the
    predictors). ``steps``/``guidance_scale`` default to the model's own.
    """

    templates: tuple[str, ...] = ("a photo of {A} and {B}",)
    n: int = 2
    seed: int = 0
    present: float = 0.3
    single: str = "a photo of {}"
    draws: int = 4
    steps: int | None = None
    guidance_scale: float | None = None

    def __post_init__(self) -> None:
        if not self.templates:
            raise ValueError("`templates` is empty; give at least one prompt with {a} and {b}")
        for t in self.templates:
            if not ({"{a}", "{A}"} & set(_slots(t)) and {"{b}", "{B}"} & set(_slots(t))):
                raise ValueError(f"template {t!r} must hold both {{a}} and {{b}} (or {{A}} and {{B}}, with articles)")
        if "{}" not in self.single:
            raise ValueError(f"`single` ({self.single!r}) must hold {{}} for the concept")
        if not 0 < self.present <= 1:
            raise ValueError(f"`present` must be in (0, 1] (got {self.present}): the judge's probability at which a "
                             "concept counts as drawn")  # fmt: skip
        if self.n < 1 or self.draws < 1:
            raise ValueError("`n` and `draws` must be at least 1")


@dataclass(frozen=True)
class Dominance:
    """The measured dominance of concepts of one judge group (see the module)."""

    concepts: tuple[str, ...]
    group: str
    matrix: np.ndarray = field(repr=False)  # D[a, b], antisymmetric
    appears: np.ndarray = field(repr=False)  # P(row appears | the pair (row, col) prompted), both orders pooled
    both: np.ndarray = field(repr=False)  # P(both appear | the pair prompted)
    config: AlphaConfig
    model_fingerprint: str
    seconds: float
    examples: dict[tuple[str, str], torch.Tensor] = field(default_factory=dict, repr=False)  # (a, b) -> a first, uint8

    @property
    def alpha(self) -> dict[str, float]:
        """Each concept's mean dominance over the others."""
        k = len(self.concepts)
        return {c: float(self.matrix[i].sum() / (k - 1)) for i, c in enumerate(self.concepts)}

    def strongest(self, top: int = 6) -> list[tuple[str, str, float]]:
        """The ``top`` pairs by |D|, winner first."""
        pairs = [(self.concepts[i], self.concepts[j], float(self.matrix[i, j]))
                 for i, j in itertools.permutations(range(len(self.concepts)), 2) if self.matrix[i, j] > 0]  # fmt: skip
        return sorted(pairs, key=lambda x: -x[2])[:top]

    def to_dict(self) -> dict:
        return {
            "concepts": list(self.concepts),
            "group": self.group,
            "alpha": self.alpha,
            "dominance": self.matrix.round(6).tolist(),
            "appears": self.appears.round(6).tolist(),
            "both_appear": float(self.both[~np.eye(len(self.concepts), dtype=bool)].mean()),
            "strongest": self.strongest(),
            "config": asdict(self.config),
            "model_fingerprint": self.model_fingerprint,
            "seconds": self.seconds,
        }

    def heatmap(self, path: str | Path, *, title: str | None = None) -> Path:
        """The dominance matrix, rows sorted by alpha (the strongest concept on top)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        order = sorted(range(len(self.concepts)), key=lambda i: -self.alpha[self.concepts[i]])
        m = self.matrix[np.ix_(order, order)]
        names = [self.concepts[i] for i in order]
        side = 0.55 * len(names)
        fig, ax = plt.subplots(figsize=(3.5 + side, 2.0 + side), constrained_layout=True)
        im = ax.imshow(m, cmap="RdBu_r", vmin=-1, vmax=1)
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.set_yticks(range(len(names)), [f"{n} ({self.alpha[n]:+.2f})" for n in names])
        ax.set_xlabel("b")
        ax.set_ylabel("a (alpha score)")
        for i in range(len(names)):
            for j in range(len(names)):
                if i != j:
                    ax.text(j, i, f"{m[i, j]:+.1f}", ha="center", va="center", fontsize=7,
                            color="white" if abs(m[i, j]) > 0.6 else "black")  # fmt: skip
        fig.colorbar(im, ax=ax, shrink=0.8, label="D[a, b]")
        ax.set_title(title or f"dominance ({self.group})", pad=10)
        path = Path(path)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path

    def grid(self, path: str | Path, *, top: int = 6, cell: int = 96) -> Path:
        """The strongest pairs: per row, the prompt with the winner first and with the loser first."""
        from unsee.images import image_grid

        rows, labels, names = [], [], []
        for a, b, d in self.strongest(top):
            for x, y in ((a, b), (b, a)):
                ims = self.examples.get((x, y))
                if ims is None:
                    continue
                rows.append(ims.float() / 255)
                labels += [fill(self.config.templates[0], x, y)] + [""] * (len(ims) - 1)
            names.append(f"{a} beats {b} ({d:+.2f})")
        if not rows:
            raise ValueError("no example images were kept; measure with `keep_examples=True`")
        per = rows[0].shape[0] * 2
        grid = image_grid(torch.cat(rows), labels, cols=per, cell=cell, row_labels=names)
        path = Path(path)
        grid.save(path)
        return path


def pair_prompts(concepts: Sequence[str], config: AlphaConfig) -> list[tuple[str, str, int, str, int]]:
    """``(a, b, template index, prompt, seed)`` for every ordered pair and template; both orders share a seed."""
    out = []
    for p, (i, j) in enumerate(itertools.combinations(range(len(concepts)), 2)):
        for t, tpl in enumerate(config.templates):
            s = config.seed + p * len(config.templates) + t
            a, b = concepts[i], concepts[j]
            out += [(a, b, t, fill(tpl, a, b), s), (b, a, t, fill(tpl, b, a), s)]
    return out


def check_concepts(judge: Judge, concepts: Sequence[str], labels: dict[str, str] | None = None) -> str:
    """The one judge group every concept belongs to, or a one-line error."""
    labels = labels or {}
    if len(concepts) < 2:
        raise ValueError(f"dominance needs at least 2 concepts (got {len(concepts)}); pass more to `concepts`")
    if len(set(concepts)) != len(concepts):
        raise ValueError(f"`concepts` names a concept twice: {list(concepts)}")
    groups = {c: group_of(judge, labels.get(c, c)) for c in concepts}
    if len(set(groups.values())) > 1:
        raise ValueError(f"`concepts` spans the judge groups {sorted(set(groups.values()))}; dominance compares "
                         "concepts of one group (the judge tells which of the two appears): measure groups apart")  # fmt: skip
    return next(iter(groups.values()))


@torch.no_grad()
def dominance(
    pipe: StableDiffusionPipeline,
    judge: Judge,
    concepts: Sequence[str],
    config: AlphaConfig | None = None,
    *,
    labels: dict[str, str] | None = None,
    cache_dir: str | Path | None = None,
    keep_examples: bool = True,
    progress: bool = False,
) -> Dominance:
    """Measure the dominance matrix and alpha scores of ``concepts`` (see the module).

    ``labels`` maps a concept's word to the judge's name for it. ``cache_dir`` keeps every prompt's images,
    so a stopped run resumes where it was.
    """
    config = config or AlphaConfig()
    t0 = time.perf_counter()
    labels = dict(labels or {})
    group = check_concepts(judge, concepts, labels)
    names = judge.groups[group]
    index = {c: names.index(labels.get(c, c)) for c in concepts}
    jobs = pair_prompts(concepts, config)
    k = len(concepts)
    pos = {c: i for i, c in enumerate(concepts)}
    # counts[a, b, order]: a only / b only / both / images, per prompted ordered pair
    only_a = np.zeros((k, k))
    only_b = np.zeros((k, k))
    both = np.zeros((k, k))
    total = np.zeros((k, k))
    examples: dict[tuple[str, str], torch.Tensor] = {}
    chunk = 32  # prompts per sampling call: bounded memory, a progress bar that moves
    model_key = weights_key(pipe) if cache_dir is not None else None  # hashed once, not per chunk
    bar = tqdm(total=len(jobs), desc="dominance", disable=not progress)
    for s in range(0, len(jobs), chunk):
        part = jobs[s : s + chunk]
        prompts, seeds = [j[3] for j in part], [j[4] for j in part]
        kw = dict(n=config.n, steps=config.steps, guidance_scale=config.guidance_scale)
        if cache_dir is not None:
            images = cached_prompt_images(pipe, prompts, cache_dir, seeds=seeds, model_key=model_key, **kw)
        else:
            images = prompt_images(pipe, prompts, seeds=seeds, **kw)
        for (a, b, t, _, _), ims in zip(part, images):
            p = judge.probs(ims)[group]
            ia, ib = p[:, index[a]] >= config.present, p[:, index[b]] >= config.present
            i, j = pos[a], pos[b]
            only_a[i, j] += float((ia & ~ib).sum())
            only_b[i, j] += float((ib & ~ia).sum())
            both[i, j] += float((ia & ib).sum())
            total[i, j] += len(ims)
            if keep_examples and t == 0:
                examples[(a, b)] = (ims.clamp(0, 1) * 255).round().to(torch.uint8)
        bar.update(len(part))
    bar.close()
    # pool the two orders: pair (i, j) prompted a-first holds counts in [i, j], b-first in [j, i]
    wins = only_a + only_b.T  # a appears without b, over both orders
    n_pair = total + total.T
    with np.errstate(invalid="ignore", divide="ignore"):
        win_share = np.where(n_pair > 0, wins / n_pair, 0.0)
        matrix = win_share - win_share.T
        appears = np.where(n_pair > 0, (only_a + both + (only_b + both).T) / n_pair, 0.0)
        both_share = np.where(n_pair > 0, (both + both.T) / n_pair, 0.0)
    np.fill_diagonal(matrix, 0.0)
    return Dominance(tuple(concepts), group, matrix, appears, both_share, config, fingerprint(pipe),
                     time.perf_counter() - t0, examples)  # fmt: skip


# -- predictors from the base model alone ------------------------------------------------------------------


def fill(template: str, a: str, b: str) -> str:
    """``template`` with ``{a}``/``{b}`` the concepts and ``{A}``/``{B}`` the concepts with their article."""
    return template.format(a=a, b=b, A=with_article(a), B=with_article(b))


def _token_span(tokenizer, template: str, a: str, b: str, which: str) -> list[int]:
    """Positions (after BOS) of concept ``which``'s ("a" or "b") tokens in ``fill(template, a, b)``. Words split
    as CLIP's tokenizer splits them, on whitespace, so the text before the concept tokenises alone."""
    concept = a if which == "a" else b
    lower, upper = "{" + which + "}", "{" + which.upper() + "}"
    slot = lower if lower in template else upper
    prefix = fill(template.split(slot)[0], a, b)
    if slot == upper:  # the article is part of the slot, before the concept
        prefix += " " + with_article(concept)[: -len(concept)].strip()
    n_pre = len(tokenizer(prefix.strip(), add_special_tokens=False).input_ids) if prefix.strip() else 0
    n_c = len(tokenizer(concept, add_special_tokens=False).input_ids)
    return list(range(1 + n_pre, 1 + n_pre + n_c))


class _AttentionMass:
    """A cross-attention processor that also adds up, per text token, the attention probability it receives
    (summed over heads and image positions, then over layers and calls); the output is the stock one's."""

    def __init__(self, sink: dict[str, torch.Tensor]):
        self.sink = sink

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        if encoder_hidden_states is None:  # self-attention: not ours to record
            encoder_hidden_states = hidden_states
            record = False
        else:
            record = True
        b = hidden_states.shape[0]
        q = attn.head_to_batch_dim(attn.to_q(hidden_states))
        k = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
        v = attn.head_to_batch_dim(attn.to_v(encoder_hidden_states))
        probs = attn.get_attention_scores(q, k, attention_mask)  # (B*heads, Q, L)
        if record:
            mass = probs.reshape(b, -1, *probs.shape[1:]).sum((1, 2))  # (B, L)
            self.sink["mass"] = self.sink.get("mass", 0) + mass.float().cpu()
        out = attn.batch_to_head_dim(torch.bmm(probs, v))
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


@torch.no_grad()
def predictors(
    pipe: StableDiffusionPipeline,
    concepts: Sequence[str],
    config: AlphaConfig | None = None,
) -> dict[str, dict[str, float]]:
    """Per concept, quantities of the base model alone that may predict its alpha score (see the module):

    - ``guidance_norm``: ``||eps(z_t, single(c)) - eps(z_t, "")||`` over ``config.draws`` fixed draws;
    - ``attention_share``: the cross-attention mass on ``c``'s tokens over the mass on both concepts' tokens
      in the composed prompts (both orders, every template), at the same draws, mean over partners;
    - ``token_embedding_norm``: the norm of ``c``'s input token embeddings (mean over its tokens);
    - ``text_feature_norm``: the text encoder's output norm at ``c``'s tokens in ``single(c)``.
    """
    from unsee.impact.spectrum import make_draws

    config = config or AlphaConfig()
    if len(concepts) < 2:
        raise ValueError(f"predictors need at least 2 concepts (got {len(concepts)}); pass more to `concepts`")
    tok = pipe.tokenizer
    draws = make_draws(pipe, config.draws, seed=config.seed)
    dev, dt = pipe.unet.device, pipe.unet.dtype
    z, t = draws.z_t.to(dev, dt), draws.t.to(dev)
    d = len(t)

    def eps(cond: torch.Tensor) -> torch.Tensor:  # (d, C, H, W) for one prompt at every draw
        return unet_eps(pipe.unet, z, t, cond.expand(d, -1, -1)).float()

    e_empty = eps(encode_prompts(pipe, [""]))
    out: dict[str, dict[str, float]] = {p: {} for p in PREDICTORS}
    table = pipe.text_encoder.get_input_embeddings().weight
    for c in concepts:
        prompt = config.single.format(c)
        cond = encode_prompts(pipe, [prompt])
        out["guidance_norm"][c] = float((eps(cond) - e_empty).flatten(1).norm(dim=1).mean())
        ids = tok(c, add_special_tokens=False).input_ids
        out["token_embedding_norm"][c] = float(table[ids].float().norm(dim=-1).mean())
        span = _token_span(tok, config.single.replace("{}", "{a}"), c, c, "a")
        out["text_feature_norm"][c] = float(cond[0, span].float().norm(dim=-1).mean())
    # attention share: record cross-attention mass on the composed prompts
    sink: dict[str, torch.Tensor] = {}
    before = pipe.unet.attn_processors
    recorder = _AttentionMass(sink)
    pipe.unet.set_attn_processor({k: recorder if k.endswith("attn2.processor") else v for k, v in before.items()})
    shares: dict[str, list[float]] = {c: [] for c in concepts}
    try:
        for a, b, _, prompt, _ in pair_prompts(concepts, config):
            tpl = next(x for x in config.templates if fill(x, a, b) == prompt)
            span_a, span_b = _token_span(tok, tpl, a, b, "a"), _token_span(tok, tpl, a, b, "b")
            sink.clear()
            eps(encode_prompts(pipe, [prompt]))
            m = sink["mass"].sum(0)  # (L,)
            ma, mb = float(m[span_a].sum()), float(m[span_b].sum())
            shares[a].append(ma / (ma + mb))  # each order once: the slot's own pull cancels in the mean
            shares[b].append(mb / (ma + mb))
    finally:
        pipe.unet.set_attn_processor(before)
    out["attention_share"] = {c: float(np.mean(v)) for c, v in shares.items()}
    return out


def spearman_table(alpha: dict[str, float], preds: dict[str, dict[str, float]]) -> dict[str, float]:
    """Spearman correlation of each predictor with the measured alpha scores (over the concepts both name)."""
    out = {}
    for name, vals in preds.items():
        cs = [c for c in alpha if c in vals]
        if len(cs) < 3:
            continue
        r = spearmanr([alpha[c] for c in cs], [vals[c] for c in cs]).statistic
        out[name] = float(r) if np.isfinite(r) else float("nan")
    return out
