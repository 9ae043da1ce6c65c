"""One judge interface: images in, per-concept scores out.

Attacks, protocols, empirical impact and evaluation read generated images through a :class:`Judge`.
A judge groups the concepts it knows into mutually exclusive sets (a classifier head each: objects,
colours, ...; a detector is a group of two, e.g. ``("no frame", "frame")``), and returns, per group,
a probability over that group's concepts. The mini world's oracle is one judge; a user of a real
model brings their own (a nudity detector, an ImageNet classifier, a CLIP zero-shot head) through
:class:`ClassifierJudge`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Judge(Protocol):
    """Reads images ``(B, 3, H, W)`` in [0, 1]."""

    @property
    def groups(self) -> Mapping[str, tuple[str, ...]]:
        """Group name -> its mutually exclusive concept names (unique across groups)."""
        ...

    def probs(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Group name -> ``(B, len(group))`` probabilities; differentiable where the judge is."""
        ...


def group_of(judge: Judge, concept: str) -> str:
    """The group a concept belongs to, with a one-line error naming what the judge knows."""
    for g, names in judge.groups.items():
        if concept in names:
            return g
    known = ", ".join(n for names in judge.groups.values() for n in names)
    raise ValueError(f"the judge does not know concept {concept!r}; it knows: {known}")


def knows(judge: Judge, concept: str) -> bool:
    return any(concept in names for names in judge.groups.values())


@torch.no_grad()
def topk(judge: Judge, images: torch.Tensor, k: int = 1) -> dict[str, list[list[str]]]:
    """Top-k concept names per group for each image."""
    out = {}
    for g, p in judge.probs(images).items():
        names = judge.groups[g]
        idx = p.topk(min(k, p.shape[-1]), dim=-1).indices.tolist()
        out[g] = [[names[i] for i in row] for row in idx]
    return out


@torch.no_grad()
def detects(judge: Judge, images: torch.Tensor, concept: str, k: int = 1) -> torch.Tensor:
    """``(B,)`` bool: the concept is among the top-k of its group."""
    g = group_of(judge, concept)
    j = judge.groups[g].index(concept)
    p = judge.probs(images)[g]
    return (p.topk(min(k, p.shape[-1]), dim=-1).indices == j).any(-1).cpu()


def score(judge: Judge, images: torch.Tensor, concept: str) -> torch.Tensor:
    """``(B,)`` probability of ``concept`` within its group (differentiable where the judge is)."""
    g = group_of(judge, concept)
    return judge.probs(images)[g][:, judge.groups[g].index(concept)]


@dataclass(frozen=True)
class ClassifierJudge:
    """A judge from any classifier: ``fn(images) -> logits (B, len(labels))`` over one group of labels.

    ``ClassifierJudge(my_resnet, imagenette_labels)`` turns a user's model into a judge; ``extra`` adds
    more heads as ``{group: (fn, labels)}``.
    """

    fn: Callable[[torch.Tensor], torch.Tensor]
    labels: tuple[str, ...]
    name: str = "class"
    extra: Mapping[str, tuple[Callable[[torch.Tensor], torch.Tensor], tuple[str, ...]]] | None = None

    @property
    def groups(self) -> dict[str, tuple[str, ...]]:
        return {self.name: tuple(self.labels), **{g: tuple(lab) for g, (_, lab) in (self.extra or {}).items()}}

    def probs(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {self.name: self.fn(images).softmax(-1)}
        for g, (fn, _) in (self.extra or {}).items():
            out[g] = fn(images).softmax(-1)
        return out
