"""ESD (Gandikota et al., ICCV 2023): steer eps(z, c_e) to negatively guided eps(z, "")."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from diffusers import StableDiffusionPipeline

from unsee.edits import Edit
from unsee.methods.base import MethodConfig, Objective, Run, Trainer, mse, register
from unsee.sampling import Learned


@dataclass
class ESDConfig(MethodConfig):
    """ESD-x by default (cross-attention only); ``params="noxattn"`` is ESD-u."""


def esd_target(tr: Trainer, z: torch.Tensor, t: torch.Tensor, c_e: torch.Tensor) -> torch.Tensor:
    """eps(z_t, "") - eta (eps(z_t, c_e) - eps(z_t, "")), both frozen outputs from one batched call."""
    e0, e_p = tr.eps_frozen(torch.cat([z, z]), t, torch.cat([tr.uncond.expand(len(z), -1, -1), c_e])).chunk(2)
    return e0 - tr.cfg.eta * (e_p - e0)


def esd_loss(tr: Trainer, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """L_ESD = ||eps'(z_t, c_e) - [eps(z_t, "") - eta (eps(z_t, c_e) - eps(z_t, ""))]||^2; also returns z_t, t."""
    c_e = tr.c_e[idx]
    z, t = tr.draw_zt(c_e)
    return mse(tr.eps_trained(z, t, c_e), esd_target(tr, z, t, c_e)), z, t


def esd_objective(pipe: StableDiffusionPipeline, tr: Trainer, cfg: MethodConfig) -> Objective:
    """ESD's loss as ``(step, info)`` (see :data:`unsee.methods.base.Objective`)."""

    def step(_: int) -> dict[str, torch.Tensor]:
        loss, *_ = esd_loss(tr, tr.draw_concepts(cfg.batch_size))
        return {"loss": loss}

    return step, dict


@register("esd", ESDConfig)
def erase_esd(pipe: StableDiffusionPipeline, concepts: Sequence[str], cfg: ESDConfig, generator: torch.Generator,
              *, run: Run, learned: Learned | None = None) -> Edit:  # fmt: skip
    tr = Trainer(pipe, concepts, cfg, generator, run, learned)
    step, info = esd_objective(pipe, tr, cfg)
    tr.train(step, "esd")
    return tr.edit(info())
