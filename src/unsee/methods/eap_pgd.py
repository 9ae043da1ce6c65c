"""Adversarial preservation with a continuous adversary, equation (3), solved by PGD.

c_a starts at c_e = tau("concept") and ascends the preservation loss in embedding space. The
talk reports it drifting to background-noise concepts; the trace of its nearest vocabulary
words shows where it goes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from diffusers import StableDiffusionPipeline

from unsee.concepts.vocab import build_vocabulary
from unsee.edits import Edit
from unsee.methods.base import MethodConfig, Run, Trainer, mse, register
from unsee.methods.esd import esd_target
from unsee.sampling import Learned, unet_eps


@dataclass
class EAPPGDConfig(MethodConfig):
    lambda_: float = 1.0
    pgd_lr: float = 1e-2
    """Sign-gradient step on c_a per UNet update."""
    radius: float = 0.0
    """L-inf ball around c_e that c_a is projected onto; 0 leaves it free."""
    words: tuple[str, ...] = ()
    """Vocabulary for the nearest-word trace (default: the tokenizer's whole words)."""


@register("eap-pgd", EAPPGDConfig)
def erase_eap_pgd(pipe: StableDiffusionPipeline, concepts: Sequence[str], cfg: EAPPGDConfig,
                  generator: torch.Generator, *, run: Run, learned: Learned | None = None) -> Edit:  # fmt: skip
    tr = Trainer(pipe, concepts, cfg, generator, run, learned)
    vocab = build_vocabulary(pipe, list(cfg.words) or None, template=cfg.template)
    c_a0 = tr.c_e.detach().clone()
    c_a = c_a0.clone().requires_grad_(True)  # one adversary per erased concept
    tr.extras["c_a"] = c_a
    trace: list[dict] = []

    def step(i: int) -> dict[str, torch.Tensor]:
        idx = tr.draw_concepts(cfg.batch_size)
        c_e, ca = tr.c_e[idx], c_a[idx]
        z, t = tr.draw_zt(c_e)
        frozen = unet_eps(tr.unet, z, t, ca)  # differentiable in c_a, not in theta
        out_e, out_a = tr.eps_trained(torch.cat([z, z]), t, torch.cat([c_e, ca])).chunk(2)  # one batched pass
        l1, l2 = mse(out_e, esd_target(tr, z, t, c_e)), mse(out_a, frozen)
        if i % 10 == 0:
            trace.append({"iteration": i, "nearest": [vocab.nearest(c_a[j].detach(), 3) for j in range(len(c_a))],
                          "drift": float((c_a.detach() - c_a0).abs().max())})  # fmt: skip
        return {"loss": l1 + cfg.lambda_ * l2, "l_erase": l1.detach(), "l_preserve": l2.detach()}

    def ascend() -> None:
        if c_a.grad is None:
            return
        with torch.no_grad():
            c_a.add_(cfg.pgd_lr * c_a.grad.sign())
            if cfg.radius > 0:
                c_a.copy_(c_a0 + (c_a - c_a0).clamp(-cfg.radius, cfg.radius))
        c_a.grad = None

    tr.extras["_zero_grad"] = [lambda: setattr(c_a, "grad", None)]
    tr.extras["_after_backward"] = [ascend]
    tr.train(step, "eap-pgd")
    return tr.edit({"pgd_trace": trace, "final_nearest": [vocab.nearest(c_a[j].detach(), 5) for j in range(len(c_a))]})
