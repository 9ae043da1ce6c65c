"""Adaptive guided erasure (AGE; Bui et al., ICLR 2025), equation (6): a target of its own for each erased concept.

min_theta' E_{c_e} [ max_{c_a in R} min_{c_t in B(c_e)} ||eps'(c_e) - eps(c_t)||^2 + lambda ||eps'(c_a) - eps(c_a)||^2 ]

Erasing every concept towards one neutral c_n makes the erased concepts collapse into one output
(the talk's Idea 1). Here each erased concept c_e gets its own target c_t: a Gumbel mixture over
B(c_e), the vocabulary concepts nearest c_e, whose logits *descend* the erasure loss L1 (the
target the model reaches most easily); the target enters ESD's negatively guided form,
eps(c_t) - eta (eps(c_e) - eps(c_t)), and is preserved too, as AGE does. The adversaries c_a are
EAP's search over R (equation 4) with soft top-k draws: each draw mixes its k strongest
concepts, so several adversaries are preserved at once. The erased concepts' own words (and
``exclude``) are in neither B nor R; an erased concept is never another's target.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import StableDiffusionPipeline

from unsee.concepts.vocab import adversary_candidates, build_vocabulary
from unsee.edits import Edit
from unsee.methods.base import MethodConfig, Run, Trainer, mse, register
from unsee.methods.eap import gumbel_softmax
from unsee.sampling import Learned, unet_eps


@dataclass
class AGEConfig(MethodConfig):
    """The adversaries R as EAP builds them (soft top-k draws here), and each erased concept's targets B(c_e)."""

    lambda_: float = 1.0
    k_nearest: int = 1000
    """R: the K vocabulary words nearest (L2, full text embeddings) to any erased concept..."""
    n_centres: int = 100
    """...then the word nearest each of this many 1-D k-means centres of their distances (EAP's R)."""
    temperature: float = 2.0
    """Gumbel temperature of the adversary draws."""
    topk: int = 2
    """Concepts mixed in one adversary draw (AGE's soft top-k, 2 to 5): several adversaries at once."""
    logit_lr: float = 1e-2
    """Adam step of the adversary logits, which ascend L2."""
    words: tuple[str, ...] = ()
    """The vocabulary B and R are drawn from (default: the tokenizer's whole words)."""
    exclude: tuple[str, ...] = ()
    """Words never a target or an adversary (the erased concepts' own words never are)."""
    target_words: tuple[str, ...] = ()
    """The concepts B(c_e) is drawn from (default: ``words``). Name concepts here, as AGE's vocabularies do (ImageNet's
    classes, EN3K): in a whole-tokenizer vocabulary the nearest words to "a circle" can be "a on" and "a style"."""
    n_targets: int = 10
    """|B(c_e)|: the words nearest (L2, full text embeddings) to each erased concept."""
    target_temperature: float = 0.1
    """Gumbel temperature of the target mixture (AGE's 0.1 on Imagenette)."""
    target_topk: int = 2
    """Concepts mixed in one target draw."""
    target_lr: float = 1e-2
    """Adam step of the target logits, which descend L1."""
    preserve_target: bool = True
    """Also preserve c_t, as AGE does (its second term holds the target's own output)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for f in ("topk", "n_targets", "target_topk"):
            if getattr(self, f) < 1:
                raise ValueError(f"{f} must be at least 1, got {getattr(self, f)}")


def gumbel_topk(logits: torch.Tensor, n: int, tau: float, k: int, g: torch.Generator) -> torch.Tensor:
    """``n`` soft top-k Gumbel-softmax draws over the last axis of ``logits`` (``(|R|,)`` or ``(n, |R|)``): EAP's soft
    draw, zero outside its ``k`` largest entries, renormalised (AGE's ``hard=0``)."""
    y = gumbel_softmax(logits, n, tau, False, g)
    if k >= logits.shape[-1]:
        return y
    keep = y >= y.topk(k, dim=-1).values[..., -1:]
    y = y * keep
    return y / y.sum(-1, keepdim=True)


@register("age", AGEConfig)
def erase_age(pipe: StableDiffusionPipeline, concepts: Sequence[str], cfg: AGEConfig, generator: torch.Generator,
              *, run: Run, learned: Learned | None = None) -> Edit:  # fmt: skip
    tr = Trainer(pipe, concepts, cfg, generator, run, learned)
    vocab = build_vocabulary(pipe, list(cfg.words) or None, template=cfg.template)
    targets = vocab if not cfg.target_words else build_vocabulary(pipe, list(cfg.target_words), template=cfg.template)
    banned = sorted({w for c in tr.concepts for w in c.split()} | set(cfg.exclude))
    R = adversary_candidates(vocab, tr.c_e, banned, k_nearest=cfg.k_nearest, n_centres=cfg.n_centres)
    # B(c_e) per erased concept: its n_targets nearest words (no k-means: the target should be a neighbour)
    B = [adversary_candidates(targets, tr.c_e[j : j + 1], banned, k_nearest=cfg.n_targets, n_centres=cfg.n_targets)
         for j in range(len(tr.concepts))]  # fmt: skip
    if len(R) == 0 or any(len(b) == 0 for b in B):
        raise ValueError("the vocabulary left for targets or adversaries is empty; pass more `words` or fewer `exclude`")
    width = max(len(b) for b in B)
    B_emb = torch.zeros(len(B), width, *tr.c_e.shape[1:], device=tr.c_e.device)
    mask = torch.full((len(B), width), float("-inf"), device=tr.c_e.device)  # B sizes may differ: pad, never drawn
    for j, b in enumerate(B):
        B_emb[j, : len(b)], mask[j, : len(b)] = b.embeddings, 0.0
    R_emb = R.embeddings.detach()
    adv_logits = torch.zeros(len(R), device=R_emb.device, requires_grad=True)
    target_logits = torch.zeros(len(B), width, device=R_emb.device, requires_grad=True)
    adv_opt = torch.optim.Adam([adv_logits], lr=cfg.logit_lr)
    target_opt = torch.optim.Adam([target_logits], lr=cfg.target_lr)
    tr.extras.update(logits=adv_logits, logit_opt=adv_opt, target_logits=target_logits, target_opt=target_opt)

    def step(_: int) -> dict[str, torch.Tensor]:
        n = cfg.batch_size
        idx = tr.draw_concepts(n)
        c_e = tr.c_e[idx]
        w_t = gumbel_topk(target_logits[idx] + mask[idx], n, cfg.target_temperature, cfg.target_topk, tr.g)
        c_t = torch.einsum("bk,bkld->bld", w_t.to(B_emb.dtype), B_emb[idx])
        w_a = gumbel_topk(adv_logits, n, cfg.temperature, cfg.topk, tr.g)
        c_a = torch.einsum("br,rld->bld", w_a.to(R_emb.dtype), R_emb)
        # one batched partial DDIM for all three (AGE and published EAP give each concept its own z_t)
        z, t = tr.draw_zt(torch.cat([c_e, c_t.detach(), c_a.detach()]))
        z_e, z_t, z_a = z.chunk(3)
        # frozen outputs, differentiable in c_t (the target's descent) and c_a (the adversary's ascent), not theta
        e_t, e_a = unet_eps(tr.unet, torch.cat([z_e, z_a]), t, torch.cat([c_t, c_a])).chunk(2)
        e_e = tr.eps_frozen(z_e, t, c_e)
        target = e_t - cfg.eta * (e_e - e_t)
        with torch.no_grad():
            keep_t = tr.eps_frozen(z_t, t, c_t.detach())
        out_e, out_t, out_a = tr.eps_trained(torch.cat([z_e, z_t, z_a]), t,
                                             torch.cat([c_e, c_t.detach(), c_a])).chunk(3)  # fmt: skip
        l1 = mse(out_e, target)
        l2 = mse(out_a, e_a) + (mse(out_t, keep_t) if cfg.preserve_target else 0.0)
        return {"loss": l1 + cfg.lambda_ * l2, "l_erase": l1.detach(), "l_preserve": l2.detach()}

    def zero() -> None:
        adv_opt.zero_grad(set_to_none=True)
        target_opt.zero_grad(set_to_none=True)

    def after() -> None:
        if adv_logits.grad is not None:  # the adversary ascends lambda L2 ...
            adv_logits.grad.neg_()
            adv_opt.step()
        if target_logits.grad is not None:  # ... the target descends L1 (only L1 reaches it: c_t is detached elsewhere)
            target_opt.step()

    tr.extras.setdefault("_zero_grad", []).append(zero)
    tr.extras.setdefault("_after_backward", []).append(after)
    tr.train(step, "age")

    def info() -> dict[str, Any]:
        p_a = adv_logits.detach().softmax(-1)
        targets = {}
        for j, (c, b) in enumerate(zip(tr.concepts, B)):
            p = (target_logits.detach()[j] + mask[j]).softmax(-1)[: len(b)]
            targets[c] = [(b.words[i], float(p[i])) for i in p.argsort(descending=True)[:5]]
        return {"R": list(R.words), "adversary": [(R.words[i], float(p_a[i])) for i in p_a.argsort(descending=True)[:10]],
                "targets": targets, "B": {c: list(b.words) for c, b in zip(tr.concepts, B)}}  # fmt: skip

    return tr.edit(info())
