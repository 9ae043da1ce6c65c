"""UCE (Gandikota et al., WACV 2024): erase in closed form by editing the cross-attention projections.

Every cross-attention key and value projection W (``attn2.to_k``, ``attn2.to_v``) is replaced by the
minimiser of

    sum_{c_i in E} s_e ||W c_i - W_old c_n||^2 + sum_{c_j in P} s_p ||W c_j - W_old c_j||^2 + lamb ||W - W_old||_F^2,

that is (UCE's equation 7)

    W = (lamb W_old + s_e sum_i W_old c_n c_i^T + s_p sum_j W_old c_j c_j^T)
        (lamb I + s_e sum_i c_i c_i^T + s_p sum_j c_j c_j^T)^{-1},

where c_i is the text encoder's output at the erased concept's last token, c_n the guide's (``""``: the
start token, UCE's default) and c_j the preserved concepts'. No iterations, no random draws: the edit
takes one solve per projection.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from diffusers import StableDiffusionPipeline

from unsee.edits import Edit
from unsee.methods.base import EraseConfig, Run, check_concepts, register
from unsee.models import fingerprint
from unsee.sampling import Learned, encode_prompts, tokenize_learned


@dataclass
class UCEConfig(EraseConfig):
    """UCE's settings (its released script's defaults: erase and preserve scale 1, lamb 0.5, guide "")."""

    c_n: str = ""
    """The guide concept every erased concept is mapped to (UCE's ``guide_concepts``; "" for objects)."""
    preserve: tuple[str, ...] = ()
    """Concepts kept as they were (UCE's ``preserve_concepts``); none in its Imagenette run."""
    erase_scale: float = 1.0
    preserve_scale: float = 1.0
    lamb: float = 0.5
    """Weight of ||W - W_old||^2, which keeps every direction no erased or preserved concept spans."""
    expand: tuple[str, ...] = ()
    """More prompts per erased and preserved concept besides ``template``'s, e.g. ``("a red {}", "a photo of {}")``
    (UCE's ``expand_prompts``): the last token's output depends on the words before it, so an edit made on "a circle"
    alone barely reaches "a red circle"."""
    positions: Literal["last", "rest"] = "last"
    """Which text positions of a concept are edited: its ``last`` token (UCE's released code), or the last token and
    every position after it (``rest``: the end and padding tokens, which a causal text encoder also fills with the
    concept; UCE's first code)."""

    trains: ClassVar[bool] = False

    def changed_params(self, unet: torch.nn.Module) -> list[str]:
        return [n for n, _ in unet.named_parameters() if n.endswith(("attn2.to_k.weight", "attn2.to_v.weight"))]

    def __post_init__(self) -> None:
        if self.positions not in ("last", "rest"):
            raise ValueError(f"unknown positions {self.positions!r}; use last or rest")
        for f in ("erase_scale", "preserve_scale"):
            if getattr(self, f) < 0:
                raise ValueError(f"{f} must be at least 0, got {getattr(self, f)}")
        if any("{}" not in t for t in (self.template, *self.expand)):
            raise ValueError(f"`template` and every one of `expand` must hold '{{}}' for the concept, got "
                             f"{[self.template, *self.expand]}")  # fmt: skip
        if self.lamb <= 0:
            raise ValueError(f"lamb must be positive (it keeps the solve well posed), got {self.lamb}")


def concept_rows(pipe: StableDiffusionPipeline, prompts: Sequence[str], positions: str, learned: Learned,
                 length: int | None = None) -> list[torch.Tensor]:  # fmt: skip
    """Per prompt, its text-encoder outputs at the last content token (and, for ``rest``, every later position, at
    most ``length`` of them): ``(k, D)`` rows in fp32."""
    ids, _ = tokenize_learned(pipe.tokenizer, prompts, learned)
    with torch.no_grad():
        hidden = encode_prompts(pipe, prompts, learned).float()[:, : ids.shape[1]]  # SDXL: without the pooled token
    eos = pipe.tokenizer.eos_token_id
    out = []
    for row, h in zip(ids, hidden):
        last = int((row[1:] == eos).nonzero()[0]) if (row[1:] == eos).any() else len(row) - 1  # eos at last + 1
        stop = last + 1 if positions == "last" else len(row)
        if length is not None:
            stop = min(stop, last + length)
        out.append(h[last:stop])
    return out


@register("uce", UCEConfig)
def erase_uce(pipe: StableDiffusionPipeline, concepts: Sequence[str], cfg: UCEConfig, generator: torch.Generator,
              *, run: Run, learned: Learned | None = None) -> Edit:  # fmt: skip
    """Equation 7 of UCE for every cross-attention key and value projection; ``generator`` is not used."""
    if run.resume:
        raise ValueError("the uce method is closed-form and has nothing to resume; drop `resume`")
    templates = (cfg.template, *cfg.expand)
    prompts = [t.format(c) for c in concepts for t in templates]
    keep = [t.format(c) for c in cfg.preserve for t in templates]
    clash = sorted(set(concepts) & set(cfg.preserve))
    if clash:
        raise ValueError(f"`preserve` holds the erased concept {clash[0]!r}; a concept cannot be erased and preserved")
    if cfg.preserve:
        check_concepts(pipe, cfg.preserve, cfg)
    learned = dict(learned or {})
    t0 = time.perf_counter()
    erased = concept_rows(pipe, prompts, cfg.positions, learned)
    # the guide's rows pair with each erased concept's, position by position (for ``rest``: as many as both have)
    guides = [concept_rows(pipe, [cfg.template.format(cfg.c_n) if cfg.c_n else ""], cfg.positions, learned,
                           length=len(c))[0] for c in erased]  # fmt: skip
    erased = [c[: len(g)] for c, g in zip(erased, guides)]
    c_e, c_g = torch.cat(erased), torch.cat(guides)
    c_p = torch.cat(concept_rows(pipe, keep, cfg.positions, learned)) if keep else c_e.new_zeros(0, c_e.shape[1])
    names = set(cfg.changed_params(pipe.unet))
    tensors = {}
    for name, w in pipe.unet.named_parameters():
        if name not in names:
            continue
        w_old = w.detach().float()
        eye = torch.eye(w_old.shape[1], dtype=torch.float32, device=w_old.device)
        c_e_, c_g_, c_p_ = (x.to(w_old.device) for x in (c_e, c_g, c_p))
        v_star = c_g_ @ w_old.T  # W_old c_n: where each erased row is sent
        lhs = cfg.lamb * w_old + cfg.erase_scale * v_star.T @ c_e_ + cfg.preserve_scale * (c_p_ @ w_old.T).T @ c_p_
        rhs = cfg.lamb * eye + cfg.erase_scale * c_e_.T @ c_e_ + cfg.preserve_scale * c_p_.T @ c_p_
        # W rhs = lhs, solved rather than inverted (rhs is symmetric positive definite for lamb > 0)
        new = torch.linalg.solve(rhs, lhs.T).T
        if not torch.isfinite(new).all():
            raise FloatingPointError(f"the closed form of {name} is not finite; check the model's weights for NaNs "
                                     f"or raise `lamb` (now {cfg.lamb})")  # fmt: skip
        tensors[f"unet.{name}"] = new.cpu()
    seconds = time.perf_counter() - t0
    return Edit(method=cfg.name, config=json.loads(json.dumps(cfg.to_dict())), concepts=tuple(concepts),
                base_fingerprint=fingerprint(pipe), seed=None, tensors=tensors,
                info={"seconds": seconds, "rows": {"erased": len(c_e), "preserved": len(c_p)}})  # fmt: skip
