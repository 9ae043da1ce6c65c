"""Concept vocabularies R: words of the model's own tokenizer, their text embeddings, and the
reduction EAP uses (the K words nearest c_e, then one word per similarity cluster)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline

from unsee.sampling import encode_prompts


def model_words(pipe: StableDiffusionPipeline, limit: int | None = None) -> list[str]:
    """Whole-word tokens of the model's tokenizer (alphabetic, at least 2 letters), in vocabulary order."""
    vocab = pipe.tokenizer.get_vocab()
    words = [t[: -len("</w>")] for t, _ in sorted(vocab.items(), key=lambda kv: kv[1]) if t.endswith("</w>")]
    words = [w for w in words if w.isalpha() and len(w) > 1]
    return words[:limit] if limit else words


@dataclass(frozen=True)
class Vocabulary:
    """Words and their full text-encoder outputs ``(N, L, D)`` under one prompt template."""

    words: tuple[str, ...]
    embeddings: torch.Tensor
    template: str = "{}"

    def __len__(self) -> int:
        return len(self.words)

    def subset(self, words: Sequence[str]) -> Vocabulary:
        idx = [self.words.index(w) for w in words]
        return Vocabulary(tuple(words), self.embeddings[idx], self.template)

    def nearest(self, emb: torch.Tensor, k: int = 5) -> list[tuple[str, float]]:
        """The k words whose embeddings are nearest (L2) to ``emb`` ``(L, D)``."""
        d = (self.embeddings - emb.to(self.embeddings)).flatten(1).norm(dim=-1)
        vals, idx = d.topk(min(k, len(self)), largest=False)
        return [(self.words[i], float(v)) for v, i in zip(vals, idx)]


@torch.no_grad()
def build_vocabulary(
    pipe: StableDiffusionPipeline,
    words: Sequence[str] | None = None,
    *,
    template: str = "{}",
    cache_dir: str | Path | None = None,
    batch_size: int = 256,
) -> Vocabulary:
    """Embed ``words`` (default: the tokenizer's words) with the pipeline's text encoder, cached on disk."""
    from unsee.models import fingerprint

    words = list(words) if words is not None else model_words(pipe)
    path = None
    if cache_dir is not None:
        key = hashlib.sha256(("\n".join(words) + template + fingerprint(pipe)).encode()).hexdigest()[:16]
        path = Path(cache_dir) / f"vocab-{key}.pt"
        if path.exists():
            d = torch.load(path, weights_only=True)
            return Vocabulary(tuple(words), d.to(pipe.text_encoder.device), template)
    embs = torch.cat([encode_prompts(pipe, [template.format(w) for w in words[i : i + batch_size]])
                      for i in range(0, len(words), batch_size)])  # fmt: skip
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(embs.cpu(), path)
    return Vocabulary(tuple(words), embs, template)


def _kmeans_1d(x: torch.Tensor, k: int, iters: int = 50) -> torch.Tensor:
    """Lloyd's algorithm on scalars, started from quantiles (deterministic)."""
    centres = torch.quantile(x, torch.linspace(0, 1, k, dtype=x.dtype))
    for _ in range(iters):
        assign = (x[:, None] - centres[None]).abs().argmin(1)
        new = torch.stack([x[assign == j].mean() if (assign == j).any() else centres[j] for j in range(k)])
        if torch.allclose(new, centres):
            break
        centres = new
    return centres


def adversary_candidates(
    vocab: Vocabulary, c_e: torch.Tensor, exclude: Sequence[str], *, k_nearest: int, n_centres: int
) -> Vocabulary:
    """EAP's R: the ``k_nearest`` words closest (L2) to any c_e, then the word nearest each of
    ``n_centres`` 1-D k-means centres of their distances, so R spans near to far concepts (and
    always holds the nearest)."""
    keep = [i for i, w in enumerate(vocab.words) if w not in set(exclude)]
    emb = vocab.embeddings[keep].flatten(1)
    d = torch.cdist(emb.float(), c_e.flatten(1).float().to(emb.device)).min(dim=1).values
    near = d.topk(min(k_nearest, len(keep)), largest=False).indices
    if n_centres >= len(near):
        chosen = near.tolist()
    else:
        centres = _kmeans_1d(d[near].cpu().double(), n_centres).sort().values
        chosen = []
        for c in centres:
            j = int(near[(d[near].cpu().double() - c).abs().argmin()])
            if j not in chosen:
                chosen.append(j)
        if int(near[0]) not in chosen:  # the most similar concept stands for the nearest cluster
            chosen[0] = int(near[0])
    return vocab.subset([vocab.words[keep[j]] for j in chosen])
