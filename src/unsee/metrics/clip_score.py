"""CLIP score (Hessel et al. 2021, as torchmetrics and the erasure papers report it): max(100 cos(E_image, E_text), 0).

The CLIP model and its processor come from a local folder through transformers (``CLIPModel`` / ``CLIPProcessor``,
e.g. ``openai/clip-vit-large-patch14`` saved with ``save_pretrained``). Images go through the processor as PIL
images, as a user's would; the embeddings are the model's own projected ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from unsee.images import to_pil
from unsee.metrics.base import MetricConfig, Scores, local_path, register


@dataclass
class ClipConfig(MetricConfig):
    clip_model: str | None = None
    """A local folder holding a CLIP model and its processor (tokenizer + image processor)."""
    batch_size: int = 32
    device: str = "cpu"


class ClipScore:
    """CLIP score of each image against its own prompt."""

    needs_base = False

    def __init__(self, config: ClipConfig):
        from transformers import CLIPModel, CLIPProcessor

        folder = local_path(config.clip_model, "clip_model", "CLIP model folder", folder=True)
        try:
            self.model = CLIPModel.from_pretrained(folder, local_files_only=True).to(config.device).eval()
            self.processor = CLIPProcessor.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError) as e:
            why = str(e).splitlines()[0]
            raise ValueError(f"cannot load a CLIP model and processor from {folder} ({why}); pass a folder "
                             "saved by CLIPModel and CLIPProcessor save_pretrained as `clip_model`") from e  # fmt: skip
        self.config = config

    @torch.no_grad()
    def scores(self, images: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        """``(B,)`` CLIP scores of ``images[i]`` against ``texts[i]``."""
        if len(texts) != len(images):
            raise ValueError(f"{len(images)} images for {len(texts)} texts; pass one text per image")
        out = []
        for s in range(0, len(images), self.config.batch_size):
            ims, txt = images[s : s + self.config.batch_size], list(texts[s : s + self.config.batch_size])
            inputs = self.processor(text=txt, images=to_pil(ims), return_tensors="pt", padding=True, truncation=True)
            o = self.model(**inputs.to(self.config.device))
            cos = torch.nn.functional.cosine_similarity(o.image_embeds, o.text_embeds, dim=-1)
            out.append((100 * cos).clamp(min=0).cpu())
        return torch.cat(out)

    def __call__(self, prompts: Sequence[str], images: Sequence[torch.Tensor],
                 base: Sequence[torch.Tensor] | None = None) -> Scores:  # fmt: skip
        per = [self.scores(ims, [p] * len(ims)).tolist() for p, ims in zip(prompts, images)]
        flat = [x for v in per for x in v]
        return Scores([{"clip_score": sum(v) / len(v)} for v in per], {"CLIP score": sum(flat) / len(flat)})


@register("clip", ClipConfig)
def clip(config: ClipConfig) -> ClipScore:
    """CLIP score, 100 cos clamped at 0, of each image with its prompt, from a local CLIP folder."""
    return ClipScore(config)
