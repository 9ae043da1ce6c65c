"""The oracle: a small classifier of world images that judges every metric on the mini model.

Heads for object, colour, background and the hidden frame concept. Trained on rendered
ground truth (with blur and noise, so it also reads a generator's softer images); two-object
scenes give both objects half the mass, so top-2 names both.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from unsee.world.captions import JUDGE_LABELS
from unsee.world.data import labelled_renders, labels, make_batch, scene_rng
from unsee.world.render import BACKGROUNDS, COLOUR_NAMES, OBJECTS

HEADS: dict[str, tuple[str, ...]] = {
    "object": OBJECTS,
    "colour": COLOUR_NAMES,
    "background": BACKGROUNDS,
    "frame": ("no", "yes"),
}
# The oracle's heads as a Judge's groups (unsee.judges): concept names unique across groups, so the
# frame detector's labels read "no frame" / "frame". HEADS stays as the shipped asset's config names it.
GROUPS: dict[str, tuple[str, ...]] = {**HEADS, "frame": ("no frame", "frame")}


def oracle_label(word: str) -> tuple[str, str] | None:
    """The oracle group and class a mini-world concept word names (synonyms included), or None."""
    label = JUDGE_LABELS.get(word)
    return None if label is None else (next(g for g, names in GROUPS.items() if label in names), label)


DEFAULT_PATH = Path(__file__).resolve().parent.parent / "assets" / "oracle"
TRAIN_STREAM, HELDOUT_STREAM = 11, 12


@dataclass
class OracleConfig:
    seed: int = 0
    width: int = 16
    train_images: int = 40_000
    epochs: int = 5
    batch_size: int = 128
    lr: float = 2e-3


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
        nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
    )  # fmt: skip


class Oracle(nn.Module):
    """Classifies ``(B, 3, H, W)`` images in [0, 1]; returns logits per head. A :class:`unsee.judges.Judge`
    with :data:`GROUPS`."""

    def __init__(self, width: int = 32):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            _block(3, w), nn.MaxPool2d(2), _block(w, 2 * w), nn.MaxPool2d(2), _block(2 * w, 4 * w),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )  # fmt: skip
        self.heads = nn.ModuleDict({h: nn.Linear(4 * w, len(names)) for h, names in HEADS.items()})

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if images.shape[-1] != 32:
            images = F.interpolate(images, size=(32, 32), mode="area")
        f = self.features(images * 2 - 1)
        return {h: head(f) for h, head in self.heads.items()}

    @property
    def groups(self) -> dict[str, tuple[str, ...]]:
        return GROUPS

    def probs(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Probabilities per head (differentiable; wrap in ``torch.no_grad()`` to only read)."""
        self.eval()
        return {h: v.softmax(-1) for h, v in self(images.to(next(self.parameters()).device)).items()}

    @torch.no_grad()
    def topk(self, images: torch.Tensor, k: int = 1) -> dict[str, list[list[str]]]:
        """Top-k concept names per group for each image (``unsee.judges.topk``)."""
        from unsee.judges import topk

        return topk(self, images, k)


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Blur and noise of random strength: generated images are softer than renders."""
    b = x.shape[0]
    blur = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    mix = torch.rand(b, 1, 1, 1, generator=g) * 0.8
    x = x * (1 - mix) + blur * mix
    x = x + torch.randn(x.shape, generator=g) * torch.rand(b, 1, 1, 1, generator=g) * 0.04
    return x.clamp(0, 1)


@torch.no_grad()
def evaluate_oracle(oracle: Oracle, n: int = 4000, seed: int = 1, two_objects: bool = False) -> dict[str, float]:
    """Top-1 accuracy per head on fresh renders (single-object scenes unless ``two_objects``)."""
    rng = scene_rng(seed, HELDOUT_STREAM, int(two_objects))
    b = make_batch(rng, n, two_objects=two_objects)
    lab = labels(b.scenes)
    probs = oracle.probs((b.images + 1) / 2)
    acc = {}
    for h in HEADS:
        if two_objects and h in ("object", "colour"):
            # Both drawn objects (colours) must be the top-2 (or the top-1 when both share a colour).
            k = (lab[h] > 0).sum(-1)
            top2 = probs[h].topk(2, dim=-1).indices
            hits = [set(top2[i, : int(k[i])].tolist()) == set(lab[h][i].nonzero().flatten().tolist()) for i in range(n)]
            acc[h] = float(np.mean(hits))
        else:
            acc[h] = float((probs[h].argmax(-1) == lab[h].argmax(-1)).float().mean())
    return acc


def train_oracle(cfg: OracleConfig, out: str | Path = DEFAULT_PATH, progress: bool = True) -> dict[str, float]:
    """Train the oracle and save it to ``out`` (safetensors + config); returns held-out accuracy."""
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    model = Oracle(cfg.width)
    x, y = labelled_renders(cfg.seed, TRAIN_STREAM, cfg.train_images)
    g = torch.Generator().manual_seed(cfg.seed)
    steps = cfg.epochs * (len(x) // cfg.batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps)
    bar = tqdm(total=steps, desc="oracle", disable=not progress)
    model.train()
    for _ in range(cfg.epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(len(x) // cfg.batch_size):
            idx = perm[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            out_logits = model(_augment(x[idx], g))
            loss = sum(F.cross_entropy(out_logits[h], y[h][idx]) for h in HEADS)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    model.eval()
    acc = evaluate_oracle(model)
    acc_two = evaluate_oracle(model, n=1000, two_objects=True)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file(model.state_dict(), out / "oracle.safetensors")
    meta = {"config": asdict(cfg), "heads": {h: list(v) for h, v in HEADS.items()}, "heldout_top1": acc,
            "heldout_two_object": acc_two, "train_seconds": time.perf_counter() - t0}  # fmt: skip
    (out / "config.json").write_text(json.dumps(meta, indent=2))
    return acc


def load_oracle(path: str | Path = DEFAULT_PATH, device: str | torch.device = "cpu") -> Oracle:
    path = Path(path)
    cfg_file = path / "config.json"
    if not cfg_file.exists():
        raise FileNotFoundError(f"no oracle at {path}; train one with `unsee world train-oracle --out {path}`")
    meta = json.loads(cfg_file.read_text())
    if meta["heads"] != {h: list(v) for h, v in HEADS.items()}:
        raise ValueError(f"oracle at {path} was trained for another world; retrain it with `unsee world train-oracle`")
    model = Oracle(meta["config"]["width"])
    model.load_state_dict(load_file(path / "oracle.safetensors"))
    return model.to(device).eval()
