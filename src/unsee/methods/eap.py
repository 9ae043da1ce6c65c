"""Adversarial preservation (EAP; Bui et al., NeurIPS 2024), equations (2) and (4).

min_theta' max_{pi in simplex(R)} E_{c_e} ||eps'(c_e) - eps(c_n)||^2 + lambda ||eps'(G(pi) . R) - eps(G(pi) . R)||^2

The erasure term is ESD's negatively guided target; the preserved concept c_a is a Gumbel-softmax
draw over a vocabulary R of concepts near c_e, and the logits of pi ascend the preservation loss.
The ascent rides on the UNet step's own backward pass (simultaneous gradient descent-ascent), and
c_e and c_a share one batched partial DDIM and one batched forward/backward, which is why EAP
costs well under 2x ESD on the mini model on CPU. At SD-1.4 scale on an H200 it costs 4.1x ESD
per update, as published (benchmarks/results/gpu_check.md): there the backward pass through the
frozen UNet to c_a dominates. ``adversary="predicted"`` skips the
search: c_a is drawn from the concepts an impact predictor ranks most affected (the talk's Idea 2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from diffusers import StableDiffusionPipeline

from unsee.concepts.vocab import adversary_candidates, build_vocabulary
from unsee.edits import Edit
from unsee.methods.base import MethodConfig, Objective, Run, Trainer, mse, register
from unsee.methods.esd import esd_target
from unsee.sampling import Learned, unet_eps

PREDICTOR_DIR = Path(__file__).resolve().parent.parent / "assets" / "impact_predictor"


@dataclass
class EAPConfig(MethodConfig):
    lambda_: float = 1.0
    k_nearest: int = 1000
    """Keep the K vocabulary words nearest (L2, full text embeddings) to any erased concept..."""
    n_centres: int = 100
    """...then the word nearest each of this many 1-D k-means centres of their distances: |R|."""
    temperature: float = 2.0
    hard: bool = True
    """Straight-through one-hot draws (EAP) or soft mixtures."""
    logit_lr: float = 1e-2
    search_steps: int = 1
    """Ascent steps on the logits per UNet update; 1 shares the UNet step's backward pass."""
    adversary_latents: Literal["own", "shared"] = "shared"
    """z_t for the preserved concept: the erased concept's (default: on the object protocol it kept
    PSR-1 at 83.9 vs 82.0% in 1.38x ESD's time vs 1.83x) or its own partial DDIM (published EAP)."""
    words: tuple[str, ...] = ()
    """The vocabulary R is drawn from (default: the tokenizer's whole words)."""
    exclude: tuple[str, ...] = ()
    """Words never preserved (the erased concepts' own words always are excluded)."""
    adversary: Literal["search", "predicted"] = "search"
    """How c_a is found: the Gumbel-softmax search over R (equation 4), or no search: the concepts an
    impact predictor (Idea 2) ranks most affected, drawn uniformly."""
    predictor: str = "mini"
    """Impact predictor folder for ``adversary="predicted"``; "mini" is the one shipped for the mini model."""
    n_predicted: int = 8
    """How many top-predicted concepts are preserved."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.adversary not in ("search", "predicted"):
            raise ValueError(f"unknown adversary {self.adversary!r}; use search or predicted")


def gumbel_softmax(logits: torch.Tensor, n: int, tau: float, hard: bool, g: torch.Generator) -> torch.Tensor:
    """``n`` Gumbel-softmax draws ``(n, |R|)`` from ``generator`` (torch's own uses the global RNG)."""
    u = torch.rand((n, logits.shape[-1]), generator=g).clamp_(1e-10, 1 - 1e-10).to(logits.device)
    y = ((logits - torch.log(-torch.log(u))) / tau).softmax(-1)
    if not hard:
        return y
    one_hot = torch.zeros_like(y).scatter_(-1, y.argmax(-1, keepdim=True), 1.0)
    return one_hot - y.detach() + y


def predicted_R(pipe: StableDiffusionPipeline, vocab, concepts: Sequence[str], exclude: set[str], cfg: EAPConfig):
    """The ``n_predicted`` vocabulary concepts the impact predictor ranks most affected by erasing ``concepts``."""
    from unsee.impact.predictor import ImpactPredictor, features_for, predict_impact

    model = ImpactPredictor.load(PREDICTOR_DIR if cfg.predictor == "mini" else cfg.predictor)
    names = [w for w in vocab.words if w not in exclude]
    f = features_for(pipe, model, names + [c for c in concepts if c not in names])
    scores = predict_impact(model, f, list(concepts))[: len(names)]
    top = scores.topk(min(cfg.n_predicted, len(names))).indices
    return vocab.subset([names[i] for i in top])


def build_R(pipe: StableDiffusionPipeline, tr: Trainer, cfg: EAPConfig):
    vocab = build_vocabulary(pipe, list(cfg.words) or None, template=cfg.template)
    erased_words = {w for c in tr.concepts for w in c.split()}
    if cfg.adversary == "predicted":
        return vocab, predicted_R(pipe, vocab, tr.concepts, erased_words | set(cfg.exclude), cfg)
    R = adversary_candidates(vocab, tr.c_e, sorted(erased_words | set(cfg.exclude)), k_nearest=cfg.k_nearest,
                             n_centres=cfg.n_centres)  # fmt: skip
    if len(R) == 0:
        raise ValueError("the adversary vocabulary is empty; pass more `words` or fewer `exclude`")
    return vocab, R


def eap_objective(pipe: StableDiffusionPipeline, tr: Trainer, cfg: EAPConfig) -> Objective:
    """EAP's loss as ``(step, info)``: ``step(i)`` returns the loss terms of update ``i`` and installs the
    logits' ascent on ``tr``; ``info()`` describes the adversary once training ends. The robust method adds to it."""
    _, R = build_R(pipe, tr, cfg)
    R_emb = R.embeddings.detach()
    search = cfg.adversary == "search"  # predicted: fixed uniform logits over the predicted concepts
    logits = torch.zeros(len(R), device=R_emb.device, requires_grad=search)
    logit_opt = torch.optim.Adam([logits], lr=cfg.logit_lr)
    tr.extras.update(logits=logits, logit_opt=logit_opt)
    trace: list[dict] = []

    def preservation(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        w = gumbel_softmax(logits, n, cfg.temperature, cfg.hard, tr.g)
        c_a = torch.einsum("br,rld->bld", w.to(R_emb.dtype), R_emb)  # fp32 logits, the pipe's dtype
        return c_a, w

    def l2_own(c_a: torch.Tensor) -> torch.Tensor:  # the preservation loss at c_a's own z_t
        z, t = tr.draw_zt(c_a.detach())
        frozen = unet_eps(tr.unet, z, t, c_a)  # differentiable in c_a, not in theta
        return mse(tr.eps_trained(z, t, c_a), frozen)

    def step(i: int) -> dict[str, torch.Tensor]:
        for _ in range(cfg.search_steps - 1 if search else 0):  # extra ascent-only steps
            c_a, _ = preservation(cfg.batch_size)
            (grad,) = torch.autograd.grad(-l2_own(c_a), [logits])
            logit_opt.zero_grad(set_to_none=True)
            logits.grad = grad
            logit_opt.step()
        c_e = tr.c_e[tr.draw_concepts(cfg.batch_size)]
        c_a, _ = preservation(cfg.batch_size)
        if cfg.adversary_latents == "own":  # both partial DDIMs in one batched run (same step index)
            z, t = tr.draw_zt(torch.cat([c_e, c_a.detach()]))
            z_e, z_a = z.chunk(2)
        else:
            z_e, t = tr.draw_zt(c_e)
            z_a = z_e
        frozen_a = unet_eps(tr.unet, z_a, t, c_a)  # differentiable in c_a, not in theta
        out_e, out_a = tr.eps_trained(torch.cat([z_e, z_a]), t, torch.cat([c_e, c_a])).chunk(2)  # one batched pass
        l1, l2 = mse(out_e, esd_target(tr, z_e, t, c_e)), mse(out_a, frozen_a)
        if i % 10 == 0:
            p = logits.detach().softmax(-1)
            trace.append({"iteration": i, "top": [(R.words[j], round(float(p[j]), 3)) for j in p.topk(3).indices]})
        return {"loss": l1 + cfg.lambda_ * l2, "l_erase": l1.detach(), "l_preserve": l2.detach()}

    def ascend() -> None:  # after the shared backward: logits.grad = lambda dL2/dlogits; step uphill
        if logits.grad is not None:
            logits.grad.neg_()
            logit_opt.step()

    if search:
        tr.extras.setdefault("_zero_grad", []).append(lambda: logit_opt.zero_grad(set_to_none=True))
        tr.extras.setdefault("_after_backward", []).append(ascend)

    def info() -> dict[str, Any]:
        p = logits.detach().softmax(-1)
        order = p.argsort(descending=True)
        return {"R": list(R.words), "adversary": [(R.words[j], float(p[j])) for j in order[:10]], "adversary_trace": trace}

    return step, info


@register("eap", EAPConfig)
def erase_eap(pipe: StableDiffusionPipeline, concepts: Sequence[str], cfg: EAPConfig, generator: torch.Generator,
              *, run: Run, learned: Learned | None = None) -> Edit:  # fmt: skip
    tr = Trainer(pipe, concepts, cfg, generator, run, learned)
    step, info = eap_objective(pipe, tr, cfg)
    tr.train(step, "eap")
    return tr.edit(info())
