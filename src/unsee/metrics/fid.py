"""FID (Heusel et al. 2017) of the generated images against a reference image folder, through torchmetrics.

torch-fidelity and clean-fid, the usual Inception providers, import torchvision, which has no build for this
torch (``import torchvision`` fails: "operator torchvision::nms does not exist"). So the Inception network is the
TorchScript file that clean-fid and StyleGAN2-ADA use, ``inception-2015-12-05.pt`` (the TF FID Inception, loaded
with ``torch.jit.load``: no torchvision), named by the user; torchmetrics' ``FrechetInceptionDistance`` takes it
as its feature extractor and computes the distance. Images are resized to 299 px with PIL's bicubic filter
first, clean-fid's "clean" resize, and passed as float in [0, 255], as clean-fid passes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from unsee.images import load_image_folder, to_pil
from unsee.metrics.base import MetricConfig, Scores, local_path, register


@dataclass
class FidConfig(MetricConfig):
    fid_inception: str | None = None
    """A TorchScript Inception file: ``model(x, return_features=True)`` on ``(B, 3, 299, 299)`` in [0, 255] gives
    ``(B, D)`` features (clean-fid's and StyleGAN's ``inception-2015-12-05.pt``)."""
    fid_reference: str | None = None
    """A folder of reference images (e.g. COCO-30k validation images), all of one size."""
    size: int = 299
    batch_size: int = 32


class InceptionFeatures(torch.nn.Module):
    """torchmetrics' feature extractor: uint8 ``(B, 3, H, W)`` -> ``(B, D)`` through a TorchScript Inception."""

    def __init__(self, net: torch.nn.Module, size: int):
        super().__init__()
        self.net, self.size = net, size
        with torch.no_grad():
            self.num_features = int(self._features(torch.zeros(1, 3, size, size)).shape[-1])

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        try:
            f = self.net(x, return_features=True)
        except (TypeError, RuntimeError):  # a TorchScript module whose forward takes the images only
            f = self.net(x)
        return f.reshape(len(x), -1).float()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        arrays = [np.asarray(im.resize((self.size, self.size), Image.BICUBIC)) for im in to_pil(images)]
        return self._features(torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float())


class Fid:
    """FID of all generated images (every image of every prompt) against the reference folder's images."""

    needs_base = False

    def __init__(self, config: FidConfig):
        from torchmetrics.image.fid import FrechetInceptionDistance

        path = local_path(config.fid_inception, "fid_inception", "TorchScript Inception file", folder=False)
        ref = local_path(config.fid_reference, "fid_reference", "reference image folder", folder=True)
        try:
            net = torch.jit.load(str(path), map_location="cpu").eval()
        except (RuntimeError, ValueError) as e:
            raise ValueError(f"{path} is not a TorchScript file ({str(e).splitlines()[0]}); pass clean-fid's "
                             "inception-2015-12-05.pt as `fid_inception`") from e  # fmt: skip
        self.reference = load_image_folder(ref)
        if len(self.reference) < 2:
            raise ValueError(f"{ref} holds {len(self.reference)} image; FID needs at least 2 in `fid_reference`")
        self.features = InceptionFeatures(net, config.size)
        self.fid = FrechetInceptionDistance(feature=self.features, normalize=False)
        self.config = config
        self._add(self.reference, real=True)
        self.fid.reset_real_features = False  # the reference statistics are kept across calls

    def _add(self, images: torch.Tensor, real: bool) -> None:
        for s in range(0, len(images), self.config.batch_size):
            x = (images[s : s + self.config.batch_size].clamp(0, 1) * 255).round().to(torch.uint8)
            self.fid.update(x, real=real)

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str], images: Sequence[torch.Tensor],
                 base: Sequence[torch.Tensor] | None = None) -> Scores:  # fmt: skip
        fake = torch.cat(list(images))
        if len(fake) < 2:
            raise ValueError("FID needs at least 2 generated images; evaluate more prompts or raise `n`")
        self.fid.reset()
        self._add(fake, real=False)
        return Scores([{} for _ in prompts], {"FID": float(self.fid.compute())})


@register("fid", FidConfig)
def fid(config: FidConfig) -> Fid:
    """FID against a reference folder, torchmetrics' distance on a local TorchScript Inception's features."""
    return Fid(config)
