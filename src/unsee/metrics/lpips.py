"""LPIPS (Zhang et al. 2018) of each image against the base model's image from the same seed, through torchmetrics.

Every maintained LPIPS (the ``lpips`` package, torchmetrics', torch-fidelity's) builds its backbone (AlexNet, VGG16,
SqueezeNet) from torchvision. torchvision has no build for this torch (2.13.0+cpu: ``import torchvision`` fails with
"operator torchvision::nms does not exist"), so where it cannot be imported the metric refuses with one line saying
so, rather than run a hand-written copy. Where it imports, torchmetrics' LPIPS runs with the backbone's torchvision
checkpoint read from the torch hub folder the user names (``lpips_weights``): nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from unsee.metrics.base import MetricConfig, Scores, local_path, register

CHECKPOINTS = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth", "squeeze": "squeezenet1_1-b8a52dc0.pth"}
"""torchvision's backbone checkpoints, as the torch hub caches them under ``<hub dir>/checkpoints/``."""


@dataclass
class LpipsConfig(MetricConfig):
    lpips_weights: str | None = None
    """A torch hub folder whose ``checkpoints/`` holds the backbone's torchvision checkpoint (:data:`CHECKPOINTS`)."""
    net: str = "alex"
    batch_size: int = 32


def torchvision_problem() -> str | None:
    """Why torchvision cannot be used here, or None when it imports."""
    try:
        import torchvision  # noqa: F401
    except Exception as e:  # ImportError, or the RuntimeError of a build made for another torch
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return None


class Lpips:
    """Mean LPIPS per prompt between its images and the base model's images from the same seeds."""

    needs_base = True

    def __init__(self, config: LpipsConfig):
        problem = torchvision_problem()
        if problem is not None:
            raise ValueError(f"the lpips metric needs torchvision's backbones (lpips, torchmetrics and torch-fidelity "
                             f"all build them from torchvision), and torchvision does not import beside torch "
                             f"{torch.__version__} ({problem}); install a torchvision built for it, or drop lpips")  # fmt: skip
        if config.net not in CHECKPOINTS:
            raise ValueError(f"unknown LPIPS `net` {config.net!r}; use one of {', '.join(CHECKPOINTS)}")
        hub = local_path(config.lpips_weights, "lpips_weights", "torch hub folder with the LPIPS backbone", folder=True)
        local_path(str(hub / "checkpoints" / CHECKPOINTS[config.net]), "lpips_weights",
                   f"{config.net} backbone checkpoint", folder=False)  # fmt: skip
        from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

        old = torch.hub.get_dir()
        torch.hub.set_dir(str(hub))  # torchvision finds the checkpoint there and does not download it
        try:
            self.lpips = LearnedPerceptualImagePatchSimilarity(net_type=config.net, reduction="mean", normalize=True)
        finally:
            torch.hub.set_dir(old)
        self.config = config

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str], images: Sequence[torch.Tensor],
                 base: Sequence[torch.Tensor] | None = None) -> Scores:  # fmt: skip
        if base is None or len(base) != len(images):
            raise ValueError("lpips compares with the base model's images from the same seeds: pass `base`, one per prompt")
        rows = []
        for ims, ref in zip(images, base):
            d = [float(self.lpips(a[None].clamp(0, 1), b[None].clamp(0, 1))) for a, b in zip(ims, ref)]
            rows.append({"lpips": sum(d) / len(d)})
        return Scores(rows, {"LPIPS": sum(r["lpips"] for r in rows) / len(rows)})


@register("lpips", LpipsConfig)
def lpips(config: LpipsConfig) -> Lpips:
    """LPIPS against the base model's image from the same seed (needs torchvision; see the module's docstring)."""
    return Lpips(config)
