"""A learned impact predictor f_phi(c_i, c_j) (the talk's Idea 2): how much erasing c_i moves c_j,
predicted from the base model alone, without erasing.

Features of a pair come from quantities computed once per model and vocabulary: the two concepts'
text embeddings (pooled and full) and their base-model noise predictions at fixed (z_t, t) draws.
The target is the measured impact log(−score) from spectra of single-concept erasures, standardised
per erased concept, since what the predictor is for is ranking the concepts one erasure damages.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import load_file, save_file

from unsee.concepts.vocab import Vocabulary
from unsee.impact.spectrum import Draws, Spectrum, base_outputs, concept_prompt, make_draws
from unsee.models import fingerprint
from unsee.sampling import encode_prompts


@dataclass(frozen=True)
class ConceptFeatures:
    """Per-concept inputs of the predictor: pooled text embedding (N, D), full embedding (N, L·D),
    and base-model eps over the draws (N, draws·C·H·W)."""

    names: tuple[str, ...]
    pooled: torch.Tensor
    full: torch.Tensor
    eps: torch.Tensor

    def index(self, name: str) -> int:
        return self.names.index(name)


def pooled_embedding(emb: torch.Tensor) -> torch.Tensor:
    """The last position of the (causal) text encoder's output: it has attended to the whole prompt."""
    return emb[:, -1]


def concept_features(pipe: StableDiffusionPipeline, vocab: Vocabulary, draws: Draws,
                     cache_dir: str | Path | None = None) -> ConceptFeatures:  # fmt: skip
    eps = base_outputs(pipe, vocab, draws, cache_dir).flatten(1)
    emb = vocab.embeddings.float().cpu()
    return ConceptFeatures(tuple(vocab.words), pooled_embedding(emb), emb.flatten(1), eps.float())


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-8)


def pair_features(f: ConceptFeatures, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    """(P, F) features of pairs (erased i, other j): both pooled embeddings, their product and
    difference, and scalar similarities of text and of base-model eps."""
    a, b = _unit(f.pooled[i]), _unit(f.pooled[j])
    scal = torch.stack([
        (a * b).sum(-1),
        (_unit(f.full[i]) * _unit(f.full[j])).sum(-1),
        (f.full[i] - f.full[j]).norm(dim=-1) / f.full.norm(dim=-1).mean(),
        (_unit(f.eps[i]) * _unit(f.eps[j])).sum(-1),
        (f.eps[i] - f.eps[j]).pow(2).mean(-1).clamp_min(1e-12).log(),
    ], -1)  # fmt: skip
    return torch.cat([a, b, a * b, (a - b).abs(), scal], -1)


@dataclass(frozen=True)
class PredictorConfig:
    hidden: int = 64
    steps: int = 2000
    lr: float = 3e-3
    weight_decay: float = 1e-3
    template: str = "a {}"
    draws: int = 8
    draws_seed: int = 0


class ImpactPredictor(torch.nn.Module):
    """f_phi: pair features -> standardised log impact (higher = erasing c_i moves c_j more)."""

    def __init__(self, n_features: int, cfg: PredictorConfig, base_fingerprint: str = "", mean=None, std=None):
        super().__init__()
        self.cfg, self.base_fingerprint = cfg, base_fingerprint
        self.net = torch.nn.Sequential(torch.nn.Linear(n_features, cfg.hidden), torch.nn.GELU(),
                                       torch.nn.Linear(cfg.hidden, 1))  # fmt: skip
        self.register_buffer("mean", torch.zeros(n_features) if mean is None else mean)
        self.register_buffer("std", torch.ones(n_features) if std is None else std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std).squeeze(-1)

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, folder / "predictor.safetensors")
        meta = {"config": asdict(self.cfg), "n_features": int(self.mean.numel()), "base_fingerprint": self.base_fingerprint}
        (folder / "predictor.json").write_text(json.dumps(meta, indent=2))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> ImpactPredictor:
        folder = Path(folder)
        if not (folder / "predictor.json").exists():
            raise FileNotFoundError(f"no impact predictor in {folder}; train one with benchmarks/impact.py or "
                                    "unsee.impact.predictor.train_predictor")  # fmt: skip
        meta = json.loads((folder / "predictor.json").read_text())
        m = cls(meta["n_features"], PredictorConfig(**meta["config"]), meta["base_fingerprint"])
        m.load_state_dict(load_file(folder / "predictor.safetensors"))
        return m.eval()


def impact_targets(spectra: Mapping[str, Spectrum], names: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pairs (i, j) with j != i over ``names`` and their standardised log impact, per erased concept."""
    ii, jj, ys = [], [], []
    for c, s in spectra.items():
        i = names.index(c)
        others = [j for j in range(len(names)) if j != i]
        y = (-s.scores[[s.words.index(names[j]) for j in others]]).clamp_min(1e-12).log()
        ys.append((y - y.mean()) / y.std().clamp_min(1e-8))
        ii += [i] * len(others)
        jj += others
    return torch.tensor(ii), torch.tensor(jj), torch.cat(ys)


def train_predictor(f: ConceptFeatures, spectra: Mapping[str, Spectrum], cfg: PredictorConfig | None = None, *,
                    generator: torch.Generator | None = None, base_fingerprint: str = "") -> ImpactPredictor:  # fmt: skip
    """Fit f_phi on the measured spectra of single-concept erasures (keys: the erased concept names)."""
    cfg = cfg or PredictorConfig()
    missing = [c for c in spectra if c not in f.names]
    if missing:
        raise ValueError(f"erased concepts {missing} are not in the feature vocabulary; add them to the vocabulary")
    i, j, y = impact_targets(spectra, list(f.names))
    x = pair_features(f, i, j)
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    model = ImpactPredictor(x.shape[1], cfg, base_fingerprint, x.mean(0), x.std(0).clamp_min(1e-6))
    with torch.no_grad():  # init from the generator, not the global RNG
        for p in model.net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (p.shape[-1] ** -0.5 if p.dim() > 1 else 0.0))
    opt = torch.optim.AdamW(model.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    for _ in range(cfg.steps):
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@torch.no_grad()
def predict_impact(model: ImpactPredictor, f: ConceptFeatures, erased: Sequence[str]) -> torch.Tensor:
    """Predicted impact on every concept of ``f`` (N,), the mean over the erased concepts; the erased
    concepts themselves get -inf."""
    idx = [f.index(c) for c in erased]
    n = len(f.names)
    preds = torch.stack([model(pair_features(f, torch.full((n,), i), torch.arange(n))) for i in idx]).mean(0)
    preds[idx] = float("-inf")
    return preds


def features_for(pipe: StableDiffusionPipeline, model: ImpactPredictor, names: Sequence[str],
                 cache_dir: str | Path | None = None) -> ConceptFeatures:  # fmt: skip
    """Features of ``names`` on ``pipe`` with the predictor's template and draws; refuses another base model."""
    if model.base_fingerprint and model.base_fingerprint != fingerprint(pipe):
        raise ValueError("this impact predictor was trained on another base model; train one for this model "
                         "(benchmarks/impact.py) or use --set adversary=search")  # fmt: skip
    emb = encode_prompts(pipe, [concept_prompt(n, model.cfg.template) for n in names])
    vocab = Vocabulary(tuple(names), emb, model.cfg.template)
    draws = make_draws(pipe, model.cfg.draws, seed=model.cfg.draws_seed)
    return concept_features(pipe, vocab, draws, cache_dir)
