"""A learned impact predictor f_phi(c_i, c_j) (the talk's Idea 2): how much erasing c_i moves c_j,
predicted from the base model alone, without erasing.

Features of a pair come from quantities computed once per model and vocabulary: the two concepts'
text embeddings (pooled and full) and their base-model noise predictions at fixed (z_t, t) draws.
The target is the measured impact log(−score) from spectra of single-concept erasures, standardised
per erased concept, since what the predictor is for is ranking the concepts one erasure damages;
the features are standardised the same way, among the candidates of one erased concept.
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

FEATURES: tuple[str, ...] = ("text_pooled_cos", "text_full_cos", "text_full_neg_l2", "eps_cos", "eps_neg_log_l2",
                             "key_cos", "value_cos", "prior")  # fmt: skip
"""Pair features: text similarities (pooled at the end-of-text token; full sequence), base-model eps
similarity at the draws, similarity of the cross-attention keys and values each UNet layer computes
from the two prompts (what ESD-x and EAP edit), and the candidate's mean impact in the training erasures."""


@dataclass(frozen=True)
class ConceptFeatures:
    """Per-concept inputs of the predictor, one row per name."""

    names: tuple[str, ...]
    pooled: torch.Tensor  # (N, D) text encoder output at the end-of-text token
    full: torch.Tensor  # (N, L*D) the whole text encoder output
    eps: torch.Tensor  # (N, draws*C*H*W) base-model noise predictions at the draws
    keys: torch.Tensor  # (N, K) cross-attention keys of every UNet layer, each layer unit-normalised
    values: torch.Tensor  # (N, K) likewise the values

    def index(self, name: str) -> int:
        return self.names.index(name)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-8)


@torch.no_grad()
def concept_features(pipe: StableDiffusionPipeline, vocab: Vocabulary, draws: Draws,
                     cache_dir: str | Path | None = None) -> ConceptFeatures:  # fmt: skip
    """Features of every vocabulary concept (its names are concept names, see ``concept_prompt``)."""
    eps = base_outputs(pipe, vocab, draws, cache_dir).flatten(1).float()
    emb = vocab.embeddings.float()
    tok = pipe.tokenizer
    ends = [min(len(tok(concept_prompt(n, vocab.template))["input_ids"]), emb.shape[1]) - 1 for n in vocab.words]
    pooled = emb[torch.arange(len(ends)), torch.tensor(ends)]
    keys, values = [], []
    for name, m in pipe.unet.named_modules():
        if name.endswith("attn2"):
            e = emb.to(m.to_k.weight.device, m.to_k.weight.dtype)
            keys.append(_unit(m.to_k(e).flatten(1).float().cpu()))
            values.append(_unit(m.to_v(e).flatten(1).float().cpu()))
    if not keys:
        raise ValueError("the UNet has no cross-attention layers (attn2); the impact predictor needs them")
    return ConceptFeatures(tuple(vocab.words), pooled.cpu(), emb.flatten(1).cpu(), eps.cpu(),
                           _unit(torch.cat(keys, 1)), _unit(torch.cat(values, 1)))  # fmt: skip


def pair_features(f: ConceptFeatures, i: torch.Tensor, j: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
    """(P, len(FEATURES)) raw features of pairs (erased i, candidate j); ``prior`` (N,) per candidate."""
    cos = lambda x: (_unit(x[i]) * _unit(x[j])).sum(-1)  # noqa: E731
    return torch.stack([
        cos(f.pooled), cos(f.full),
        -(f.full[i] - f.full[j]).norm(dim=-1) / f.full.norm(dim=-1).mean(),
        cos(f.eps), -(f.eps[i] - f.eps[j]).pow(2).mean(-1).clamp_min(1e-12).log(),
        (f.keys[i] * f.keys[j]).sum(-1), (f.values[i] * f.values[j]).sum(-1),
        torch.zeros(len(j)) if prior is None else prior[j],
    ], -1)  # fmt: skip


def standardise_per_query(x: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
    """Each feature as a z-score among the candidates of the same erased concept: the predictor ranks
    candidates within one erasure, so only their relative values matter."""
    out = torch.zeros_like(x)
    for q in i.unique():
        m = i == q
        v = x[m]
        out[m] = ((v - v.mean(0)) / v.std(0).clamp_min(1e-8)) if m.sum() > 1 else 0.0
    return out


@dataclass(frozen=True)
class PredictorConfig:
    features: tuple[str, ...] = ("eps_cos", "key_cos", "value_cos", "prior")
    """Which of FEATURES the predictor uses (chosen by cross-validation on the mini world's erasures)."""
    hidden: int = 0
    """0: a linear model on the standardised features; otherwise a one-hidden-layer MLP."""
    steps: int = 1500
    lr: float = 3e-3
    weight_decay: float = 1e-2
    template: str = "a {}"
    draws: int = 8
    draws_seed: int = 0

    def __post_init__(self) -> None:
        bad = [x for x in self.features if x not in FEATURES]
        if bad:
            raise ValueError(f"unknown predictor features {bad}; choose from {', '.join(FEATURES)}")


class ImpactPredictor(torch.nn.Module):
    """f_phi(c_i, c_j): standardised pair features -> standardised log impact (higher = more affected)."""

    def __init__(self, cfg: PredictorConfig, names: Sequence[str] = (), prior: torch.Tensor | None = None,
                 base_fingerprint: str = ""):  # fmt: skip
        super().__init__()
        self.cfg, self.base_fingerprint, self.names = cfg, base_fingerprint, tuple(names)
        n = len(cfg.features)
        mlp = (torch.nn.Linear(n, cfg.hidden), torch.nn.GELU(), torch.nn.Linear(cfg.hidden, 1)) if cfg.hidden else ()
        self.net = torch.nn.Sequential(*mlp) if cfg.hidden else torch.nn.Linear(n, 1)
        self.register_buffer("prior", torch.zeros(len(self.names)) if prior is None else prior.float())
        self.cols = [FEATURES.index(x) for x in cfg.features]

    def prior_for(self, names: Sequence[str]) -> torch.Tensor:
        """The mean training impact of each name; 0 (the average) for names never seen in training."""
        return torch.tensor([float(self.prior[self.names.index(n)]) if n in self.names else 0.0 for n in names])

    def inputs(self, f: ConceptFeatures, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        x = pair_features(f, i, j, self.prior_for(f.names))
        return standardise_per_query(x, i)[:, self.cols]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)

    def score(self, f: ConceptFeatures, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        return self(self.inputs(f, i, j))

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, folder / "predictor.safetensors")
        meta = {"config": asdict(self.cfg), "names": list(self.names), "base_fingerprint": self.base_fingerprint}
        (folder / "predictor.json").write_text(json.dumps(meta, indent=2))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> ImpactPredictor:
        folder = Path(folder)
        if not (folder / "predictor.json").exists():
            raise FileNotFoundError(f"no impact predictor in {folder}; train one with benchmarks/impact.py --ship or "
                                    "unsee.impact.predictor.train_predictor")  # fmt: skip
        meta = json.loads((folder / "predictor.json").read_text())
        cfg = meta["config"] | {"features": tuple(meta["config"]["features"])}
        m = cls(PredictorConfig(**cfg), meta["names"], base_fingerprint=meta["base_fingerprint"])
        m.load_state_dict(load_file(folder / "predictor.safetensors"))
        return m.eval()


def impact_targets(spectra: Mapping[str, Spectrum], names: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pairs (i, j) with j != i over ``names`` and their log impact standardised per erased concept."""
    ii, jj, ys = [], [], []
    names = list(names)
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
    i, j, y = impact_targets(spectra, f.names)
    prior = torch.zeros(len(f.names)).index_add_(0, j, y)
    prior = prior / torch.zeros(len(f.names)).index_add_(0, j, torch.ones_like(y)).clamp_min(1)
    model = ImpactPredictor(cfg, f.names, prior, base_fingerprint)
    x = model.inputs(f, i, j)
    g = generator if generator is not None else torch.Generator().manual_seed(0)
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
    preds = []
    for i in idx:
        j = torch.tensor([k for k in range(n) if k != i])
        p = torch.full((n,), float("nan"))
        p[j] = model.score(f, torch.full((len(j),), i), j)
        preds.append(p)
    out = torch.stack(preds).nanmean(0)
    out[idx] = float("-inf")
    return out


def features_for(pipe: StableDiffusionPipeline, model: ImpactPredictor, names: Sequence[str],
                 cache_dir: str | Path | None = None) -> ConceptFeatures:  # fmt: skip
    """Features of ``names`` on ``pipe`` with the predictor's template and draws; refuses another base model."""
    if model.base_fingerprint and model.base_fingerprint != fingerprint(pipe):
        raise ValueError("this impact predictor was trained on another base model; train one for this model "
                         "(benchmarks/impact.py) or use `adversary=search`")  # fmt: skip
    emb = encode_prompts(pipe, [concept_prompt(n, model.cfg.template) for n in names])
    vocab = Vocabulary(tuple(names), emb, model.cfg.template)
    draws = make_draws(pipe, model.cfg.draws, seed=model.cfg.draws_seed)
    return concept_features(pipe, vocab, draws, cache_dir)
