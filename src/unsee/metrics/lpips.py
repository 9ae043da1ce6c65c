"""LPIPS (Zhang et al. 2018) of each image against the base model's image from the same seed.

LPIPS = sum over the backbone's layers l of the spatial mean of ``w_l . (f_l(x) - f_l(y))^2``, ``f_l`` the layer's
activations normalised to unit length over channels, ``w_l`` the learned non-negative channel weights.

The learned weights ``w_l`` are torchmetrics' (they ship inside its wheel, ``lpips_models/{net}.pth``, the ones the
``lpips`` package publishes), and so are the scaling layer, the normalisation and the spatial mean. Every maintained
LPIPS builds the *backbone* from torchvision, which has no build for this torch (2.13.0+cpu: ``import torchvision``
fails with "operator torchvision::nms does not exist"), so the two backbones (AlexNet's and VGG16's ``features``, a
dozen plain layers) are declared here with torchvision's layer indices: torchvision's own checkpoint, read from the
file or torch hub folder the user names (``lpips_weights``), loads into them key for key. Nothing is downloaded.
Where torchvision imports, tests/test_real_metrics.py checks the result against torchmetrics' LPIPS.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from unsee.metrics.base import MetricConfig, Scores, local_path, register

CHECKPOINTS = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}
"""torchvision's backbone checkpoints, as the torch hub caches them under ``<hub dir>/checkpoints/``."""

# torchvision's `features` layouts: ("C", in, out, kernel, stride, padding), "R" ReLU, "M" max-pool (kernel, stride).
_LAYOUTS: dict[str, list] = {
    "alex": [("C", 3, 64, 11, 4, 2), "R", ("M", 3, 2), ("C", 64, 192, 5, 1, 2), "R", ("M", 3, 2),
             ("C", 192, 384, 3, 1, 1), "R", ("C", 384, 256, 3, 1, 1), "R", ("C", 256, 256, 3, 1, 1), "R", ("M", 3, 2)],
    "vgg": [l for block in ((3, 64, 64), (64, 128, 128), (128, 256, 256, 256), (256, 512, 512, 512), (512, 512, 512, 512))
            for l in [x for a, b in zip(block, block[1:]) for x in (("C", a, b, 3, 1, 1), "R")] + [("M", 2, 2)]],
}  # fmt: skip
_TAPS = {"alex": (1, 4, 7, 9, 11), "vgg": (3, 8, 15, 22, 29)}
"""The indices in ``features`` whose outputs LPIPS compares (AlexNet's relu1-5; VGG16's relu1_2 ... relu5_3)."""


class Backbone(nn.Module):
    """torchvision's ``alexnet().features`` or ``vgg16().features``, the same modules at the same indices, returning
    the activations at :data:`_TAPS`."""

    def __init__(self, net: str):
        super().__init__()
        layers: list[nn.Module] = []
        for spec in _LAYOUTS[net]:
            if spec == "R":
                layers.append(nn.ReLU(inplace=False))
            elif spec[0] == "M":
                layers.append(nn.MaxPool2d(spec[1], spec[2]))
            else:
                _, cin, cout, k, s, p = spec
                layers.append(nn.Conv2d(cin, cout, k, s, p))
        self.features = nn.Sequential(*layers)
        self.taps = _TAPS[net]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, layer in enumerate(self.features[: self.taps[-1] + 1]):
            x = layer(x)
            if i in self.taps:
                out.append(x)
        return out


def backbone_file(value: str | None, net: str) -> Path:
    """The torchvision checkpoint: ``value`` itself, or ``<value>/checkpoints/<name>`` for a torch hub folder."""
    path = local_path(value, "lpips_weights", f"{net} backbone checkpoint (torchvision's {CHECKPOINTS[net]})",
                      folder=Path(value or "").expanduser().is_dir())  # fmt: skip
    if path.is_dir():
        path = local_path(str(path / "checkpoints" / CHECKPOINTS[net]), "lpips_weights",
                          f"{net} backbone checkpoint in the torch hub folder", folder=False)  # fmt: skip
    return path


@dataclass
class LpipsConfig(MetricConfig):
    lpips_weights: str | None = None
    """torchvision's checkpoint of the backbone (:data:`CHECKPOINTS`), or a torch hub folder whose ``checkpoints/``
    holds it."""
    net: str = "alex"
    batch_size: int = 32


class Lpips:
    """Mean LPIPS per prompt between its images and the base model's images from the same seeds."""

    needs_base = True

    def __init__(self, config: LpipsConfig):
        from torchmetrics.functional.image import lpips as tm

        if config.net not in CHECKPOINTS:
            raise ValueError(f"unknown LPIPS `net` {config.net!r}; use one of {', '.join(CHECKPOINTS)}")
        if config.batch_size < 1:
            raise ValueError(f"`batch_size` must be at least 1 (got {config.batch_size})")
        path = backbone_file(config.lpips_weights, config.net)
        self.net = Backbone(config.net)
        state = torch.load(path, map_location="cpu", weights_only=True)
        feats = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
        want = set(self.net.features.state_dict())
        if set(feats) != want:
            raise ValueError(f"{path} is not torchvision's {config.net} checkpoint (its `features.*` tensors are "
                             f"{sorted(feats)[:4]}..., not {sorted(want)[:4]}...): pass the right file as "
                             "`lpips_weights`")  # fmt: skip
        try:
            self.net.features.load_state_dict(feats)
        except RuntimeError as e:
            raise ValueError(f"{path} does not fit torchvision's {config.net}: {str(e).splitlines()[1].strip()}; "
                             "pass the right file as `lpips_weights`") from e  # fmt: skip
        chans = [self.net.features[i - 1].out_channels for i in self.net.taps]
        self.lins = nn.ModuleList(tm.NetLinLayer(c, use_dropout=True) for c in chans)
        lin_file = Path(tm.__file__).parent / "lpips_models" / f"{config.net}.pth"
        lin = torch.load(lin_file, map_location="cpu", weights_only=True)
        self.lins.load_state_dict({k.removeprefix("lin"): v for k, v in lin.items() if k.startswith("lin")})
        self.scaling = tm.ScalingLayer()
        self._tm, self.config = tm, config
        for m in (self.net, self.lins):
            m.eval().requires_grad_(False)

    @torch.no_grad()
    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """LPIPS per pair of ``(N, 3, H, W)`` images in [0, 1]: ``(N,)``."""
        if a.shape != b.shape or a.ndim != 4 or a.shape[1] != 3:
            raise ValueError(f"lpips compares two (N, 3, H, W) batches of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
        out = []
        for i in range(0, len(a), self.config.batch_size):
            x = self.scaling(2 * a[i : i + self.config.batch_size].clamp(0, 1).float() - 1)
            y = self.scaling(2 * b[i : i + self.config.batch_size].clamp(0, 1).float() - 1)
            d = 0
            for lin, fx, fy in zip(self.lins, self.net(x), self.net(y)):
                diff = (self._tm._normalize_tensor(fx) - self._tm._normalize_tensor(fy)) ** 2
                d = d + self._tm._spatial_average(lin(diff), keep_dim=False)
            out.append(d.flatten())
        return torch.cat(out)

    def __call__(self, prompts: Sequence[str], images: Sequence[torch.Tensor],
                 base: Sequence[torch.Tensor] | None = None) -> Scores:  # fmt: skip
        if base is None or len(base) != len(images):
            raise ValueError("lpips compares with the base model's images from the same seeds: pass `base`, one per prompt")
        rows = [{"lpips": float(self.distance(ims, ref).mean())} for ims, ref in zip(images, base)]
        return Scores(rows, {"LPIPS": sum(r["lpips"] for r in rows) / len(rows)})


@register("lpips", LpipsConfig)
def lpips(config: LpipsConfig) -> Lpips:
    """LPIPS against the base model's image from the same seed (see the module's docstring)."""
    return Lpips(config)
