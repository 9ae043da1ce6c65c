"""A judge from a local image-classification model (transformers ``AutoModelForImageClassification``).

The objects protocol of the erasure papers reads Imagenette images with an ImageNet ResNet-50 (e.g.
``microsoft/resnet-50`` saved locally): ESR-k = the erased label is not in the top-k, PSR-k = a preserved one is.
Preprocessing runs in torch from the model's image-processor settings (resize the short side to ``size /
crop_pct``, centre crop, normalise), so the judge stays differentiable for attacks that need gradients.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from unsee.metrics.base import MetricConfig, Scores, local_path, register


@dataclass
class ClassifierConfig(MetricConfig):
    classifier_model: str | None = None
    """A local folder with an image-classification model and its preprocessor config."""
    classifier_labels: tuple[str, ...] = ()
    """Labels whose top-1 and top-k rates are reported (e.g. the erased and the preserved classes)."""
    k: int = 5
    group: str = "class"
    device: str = "cpu"


class ImageClassifier:
    """A :class:`unsee.judges.Judge` of one group, the model's labels (``config.id2label``), and a metric."""

    needs_base = False

    def __init__(self, config: ClassifierConfig):
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        folder = local_path(config.classifier_model, "classifier_model", "image-classification model folder", folder=True)
        try:
            self.model = AutoModelForImageClassification.from_pretrained(folder, local_files_only=True).to(config.device)
            proc = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError) as e:
            why = str(e).splitlines()[0]
            raise ValueError(f"cannot load an image classifier from {folder} ({why}); pass a folder saved by "
                             "AutoModelForImageClassification and its image processor as `classifier_model`") from e  # fmt: skip
        self.model.eval().requires_grad_(False)
        id2label = self.model.config.id2label
        self.labels = tuple(str(id2label[i]) for i in range(len(id2label)))
        unknown = [lab for lab in config.classifier_labels if lab not in self.labels]
        if unknown:
            raise ValueError(f"the classifier has no label {unknown[0]!r} (`classifier_labels`); it has e.g. "
                             f"{', '.join(self.labels[:8])}")  # fmt: skip
        if config.k < 1:
            raise ValueError(f"`k` must be at least 1, got {config.k}")
        size = proc.size
        self.size = int(size.get("shortest_edge") or size.get("height") or 224)
        self.crop_pct = float(getattr(proc, "crop_pct", None) or 1.0)
        self.mean = torch.tensor(proc.image_mean).view(1, 3, 1, 1)
        self.std = torch.tensor(proc.image_std).view(1, 3, 1, 1)
        self.config = config

    @property
    def groups(self) -> dict[str, tuple[str, ...]]:
        return {self.config.group: self.labels}

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` in [0, 1] -> the model's normalised input: short side to size / crop_pct, centre crop."""
        h, w = images.shape[-2:]
        short = round(self.size / self.crop_pct)
        x = F.interpolate(images.float(), size=(max(short, round(short * h / w)), max(short, round(short * w / h))),
                          mode="bicubic", antialias=True, align_corners=False)  # fmt: skip
        top, left = (x.shape[-2] - self.size) // 2, (x.shape[-1] - self.size) // 2
        x = x[..., top : top + self.size, left : left + self.size]
        return (x - self.mean.to(x)) / self.std.to(x)

    def probs(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.model(pixel_values=self.preprocess(images.to(self.config.device))).logits
        return {self.config.group: logits.softmax(-1)}

    @torch.no_grad()
    def __call__(self, prompts: Sequence[str], images: Sequence[torch.Tensor],
                 base: Sequence[torch.Tensor] | None = None) -> Scores:  # fmt: skip
        k = min(self.config.k, len(self.labels))
        rows, hits = [], {lab: [0, 0] for lab in self.config.classifier_labels}
        n = 0
        for ims in images:
            top = self.probs(ims)[self.config.group].topk(k, dim=-1).indices.tolist()
            names = [[self.labels[i] for i in t] for t in top]
            row: dict[str, float | str] = {"classifier_top1": Counter(t[0] for t in names).most_common(1)[0][0]}
            for lab in self.config.classifier_labels:
                one, many = sum(t[0] == lab for t in names), sum(lab in t for t in names)
                row[f"top1 {lab}"], row[f"top{k} {lab}"] = one / len(names), many / len(names)
                hits[lab][0] += one
                hits[lab][1] += many
            n += len(names)
            rows.append(row)
        summary = {}
        for lab, (one, many) in hits.items():
            summary[f"top1 {lab}"], summary[f"top{k} {lab}"] = 100 * one / n, 100 * many / n
        return Scores(rows, summary)


@register("classifier", ClassifierConfig)
def classifier(config: ClassifierConfig) -> ImageClassifier:
    """Top-1 / top-k rates of named labels from a local image classifier (the Imagenette protocol's ResNet-50)."""
    return ImageClassifier(config)
