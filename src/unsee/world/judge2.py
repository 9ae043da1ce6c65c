"""A second judge of the world, trained independently of the oracle: a check on the oracle's reads.

Same groups as the oracle (:data:`unsee.world.oracle.GROUPS`), but another architecture (a small
residual net with GroupNorm, SiLU, strided convolutions and mean+max pooling), other seeds
and data streams, and augmentations aimed at what a generator draws rather than at renders: a
VAE-like down/up resampling, Gaussian blur of random width, slight elastic warps and shifts,
colour gain/contrast jitter (small: the colour head has near pairs), noise and coarse quantisation.
Where the two judges disagree on a class's *generated* images, neither read is trusted
(:func:`unsee.metrics.judged.agreement`).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from unsee.world.data import labelled_renders, labels, make_batch, scene_rng
from unsee.world.oracle import GROUPS, HEADS

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "assets" / "judge2"
TRAIN_STREAM, HELDOUT_STREAM = 21, 22  # the oracle's are 11 and 12


@dataclass
class Judge2Config:
    seed: int = 7
    width: int = 16
    train_images: int = 24_000
    epochs: int = 5
    batch_size: int = 96
    lr: float = 3e-3


class _Res(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.n1 = nn.GroupNorm(8, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.n2 = nn.GroupNorm(8, cout)
        self.skip = nn.Identity() if cin == cout and stride == 1 else nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.n1(self.conv1(x)))
        return F.silu(self.skip(x) + self.n2(self.conv2(h)))


class Judge2(nn.Module):
    """Classifies ``(B, 3, H, W)`` images in [0, 1]; ``forward`` gives logits per group, ``probs`` a Judge's probabilities."""

    def __init__(self, width: int = 16):
        super().__init__()
        w = width
        self.stem = nn.Sequential(nn.Conv2d(3, w, 3, padding=1, bias=False), nn.GroupNorm(8, w), nn.SiLU())
        self.body = nn.Sequential(_Res(w, 2 * w, 2), _Res(2 * w, 4 * w, 2), _Res(4 * w, 4 * w, 1))
        self.heads = nn.ModuleDict({g: nn.Linear(8 * w, len(names)) for g, names in GROUPS.items()})

    @property
    def groups(self) -> dict[str, tuple[str, ...]]:
        return GROUPS

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if images.shape[-1] != 32:
            images = F.interpolate(images, size=(32, 32), mode="area")
        h = self.body(self.stem(images * 2 - 1))
        f = torch.cat([h.mean((2, 3)), h.amax((2, 3))], dim=1)
        return {g: head(f) for g, head in self.heads.items()}

    def probs(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        self.eval()
        return {g: v.softmax(-1) for g, v in self(images.to(next(self.parameters()).device)).items()}


def _gauss_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-image Gaussian blur (5x5 kernel), ``sigma`` of shape (B,); sigma ~ 0 leaves the image."""
    r = torch.arange(-2, 3, dtype=x.dtype)
    k = torch.exp(-(r[None] ** 2) / (2 * sigma.clamp(min=1e-3)[:, None] ** 2))
    k = k / k.sum(-1, keepdim=True)  # (B, 5)
    b, c, h, w = x.shape
    y = F.pad(x, (2, 2, 2, 2), mode="replicate").reshape(1, b * c, h + 4, w + 4)
    kh = k.repeat_interleave(c, 0)
    y = F.conv2d(y, kh[:, None, None, :], groups=b * c)
    y = F.conv2d(y, kh[:, None, :, None], groups=b * c)
    return y.reshape(b, c, h, w)


def _warp(x: torch.Tensor, g: torch.Generator, amount: float = 0.05) -> torch.Tensor:
    """A smooth random displacement (a 4x4 grid upsampled) plus a shift of up to a pixel."""
    b = x.shape[0]
    coarse = torch.randn(b, 2, 4, 4, generator=g) * amount * torch.rand(b, 1, 1, 1, generator=g)
    flow = F.interpolate(coarse, size=x.shape[-2:], mode="bicubic", align_corners=True).permute(0, 2, 3, 1)
    shift = (torch.rand(b, 1, 1, 2, generator=g) * 2 - 1) * (2 / x.shape[-1])
    theta = torch.eye(2, 3).expand(b, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False) + flow + shift
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Make renders look generated: each image gets every transform at a random strength."""
    b = x.shape[0]
    u = lambda: torch.rand(b, 1, 1, 1, generator=g)  # noqa: E731
    x = _warp(x, g)
    # The generator's VAE works at half resolution: resample through 16 px for some images.
    half = F.interpolate(F.avg_pool2d(x, 2), scale_factor=2, mode="bilinear", align_corners=False)
    m = (u() < 0.5).float() * u()
    x = x * (1 - m) + half * m
    x = _gauss_blur(x, torch.rand(b, generator=g) * 1.1)
    # Colour: per-channel gain and a contrast change about the image mean, kept small.
    gain = 1 + (torch.rand(b, 3, 1, 1, generator=g) * 2 - 1) * 0.06
    mean = x.mean((1, 2, 3), keepdim=True)
    contrast = 1 + (u() * 2 - 1) * 0.15
    x = (x * gain - mean) * contrast + mean + (u() * 2 - 1) * 0.04
    x = x + torch.randn(x.shape, generator=g) * u() * 0.05
    # JPEG-like coarse quantisation for some images.
    levels = torch.where(u() < 0.3, 12 + u() * 40, torch.full((b, 1, 1, 1), 255.0))
    x = torch.round(x.clamp(0, 1) * levels) / levels
    return x.clamp(0, 1)


@torch.no_grad()
def evaluate_judge2(model: Judge2, n: int = 4000, seed: int = 1, augmented: bool = False) -> dict[str, float]:
    """Top-1 accuracy per group on fresh single-object renders of its own held-out stream
    (``augmented``: after :func:`augment`, i.e. on images that look generated)."""
    b = make_batch(scene_rng(seed, HELDOUT_STREAM, 0), n, two_objects=False)
    lab = labels(b.scenes)
    x = (b.images + 1) / 2
    if augmented:
        x = augment(x, torch.Generator().manual_seed(seed))
    chunks = [model.probs(x[i : i + 500]) for i in range(0, n, 500)]
    out = {}
    for h in HEADS:
        p = torch.cat([c[h] for c in chunks])
        out[h] = float((p.argmax(-1) == lab[h].argmax(-1)).float().mean())
    return out


def train_judge2(cfg: Judge2Config, out: str | Path = DEFAULT_PATH, progress: bool = True) -> dict[str, float]:
    """Train the second judge and save it to ``out`` (safetensors + config); returns held-out top-1 per group."""
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    model = Judge2(cfg.width)
    x, y = labelled_renders(cfg.seed, TRAIN_STREAM, cfg.train_images)
    g = torch.Generator().manual_seed(cfg.seed + 1)
    steps = cfg.epochs * (len(x) // cfg.batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps, pct_start=0.15)
    bar = tqdm(total=steps, desc="judge2", disable=not progress)
    model.train()
    for _ in range(cfg.epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(len(x) // cfg.batch_size):
            idx = perm[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            logits = model(augment(x[idx], g))
            loss = sum(F.cross_entropy(logits[h], y[h][idx], label_smoothing=0.05) for h in HEADS)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    model.eval()
    acc = evaluate_judge2(model)
    acc_aug = evaluate_judge2(model, n=2000, augmented=True)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file(model.state_dict(), out / "judge2.safetensors")
    meta = {"config": asdict(cfg), "groups": {h: list(v) for h, v in GROUPS.items()}, "heldout_top1": acc,
            "heldout_top1_augmented": acc_aug, "train_seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
    (out / "config.json").write_text(json.dumps(meta, indent=2))
    return acc


def load_judge2(path: str | Path = DEFAULT_PATH, device: str | torch.device = "cpu") -> Judge2:
    path = Path(path)
    cfg_file = path / "config.json"
    if not cfg_file.exists():
        raise FileNotFoundError(f"no second judge at {path}; train one with `unsee world train-judge --out {path}`")
    meta = json.loads(cfg_file.read_text())
    if meta["groups"] != {h: list(v) for h, v in GROUPS.items()}:
        raise ValueError(f"the judge at {path} was trained for another world; retrain it with `unsee world train-judge`")
    model = Judge2(meta["config"]["width"])
    model.load_state_dict(load_file(path / "judge2.safetensors"))
    return model.to(device).eval()
