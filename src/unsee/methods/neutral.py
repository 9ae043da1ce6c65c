"""The neutral baseline, equation (1): erase towards c_n and preserve c_n.

min_theta' E_{c_e} ||eps'(c_e) - eps(c_n)||^2 + lambda ||eps'(c_n) - eps(c_n)||^2
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from diffusers import StableDiffusionPipeline

from unsee.concepts.learned import unknown_tokens
from unsee.edits import Edit
from unsee.methods.base import MethodConfig, Run, Trainer, mse, register
from unsee.sampling import Learned


@dataclass
class NeutralConfig(MethodConfig):
    c_n: str = ""
    """The neutral target and preserved concept ("" or e.g. "a picture"; a learned token such as "<clean>"
    when its concept is passed to ``erase(..., learned=[...])``: c_n* of equation 9)."""
    lambda_: float = 1.0
    c_p: str | None = None
    """A preserved concept other than c_n (None: c_n itself, equation 1 as written); for asking which
    concept is best to preserve while the target stays neutral."""


@register("neutral", NeutralConfig)
def erase_neutral(pipe: StableDiffusionPipeline, concepts: Sequence[str], cfg: NeutralConfig,
                  generator: torch.Generator, *, run: Run, learned: Learned | None = None) -> Edit:  # fmt: skip
    for name in ("c_n", "c_p"):
        text = getattr(cfg, name)
        missing = [] if text is None else unknown_tokens(text, learned or {})
        if missing:
            given = ", ".join(learned or {}) or "none"
            raise ValueError(f"{name}={text!r} holds the token {missing[0]!r}, which no learned concept given has "
                             f"(given: {given}); pass the concept learned for it in `learned`")  # fmt: skip
    tr = Trainer(pipe, concepts, cfg, generator, run, learned)
    with torch.no_grad():
        c_n = tr.encode([cfg.c_n])
        c_p = None if cfg.c_p is None else tr.encode([cfg.c_p])

    def step(_: int) -> dict[str, torch.Tensor]:
        idx = tr.draw_concepts(cfg.batch_size)
        c_e, cn = tr.c_e[idx], c_n.expand(len(idx), -1, -1)
        z, t = tr.draw_zt(c_e)
        target = tr.eps_frozen(z, t, cn)
        cp = cn if c_p is None else c_p.expand(len(idx), -1, -1)
        keep = target if c_p is None else tr.eps_frozen(z, t, cp)
        out_e, out_p = tr.eps_trained(torch.cat([z, z]), t, torch.cat([c_e, cp])).chunk(2)  # one batched pass
        l1, l2 = mse(out_e, target), mse(out_p, keep)
        return {"loss": l1 + cfg.lambda_ * l2, "l_erase": l1.detach(), "l_preserve": l2.detach()}

    tr.train(step, "neutral")
    return tr.edit()
