"""Pretraining the mini text encoder on what captions name, before it meets the UNet.

SD's text encoder comes pretrained (CLIP) and frozen; the mini model's starts random. Trained
jointly with the UNet, it learns from noisy images, where alike shapes look alike, and gives
their words one direction (hexagon, circle and square merge, README). Kept frozen at random
initialisation, the words stay apart but synonyms are unrelated directions and the UNet learns
backgrounds slowly. This pretext task sits between: every position of the encoder's output must
say, through a linear head, which concepts the caption has named up to there (causal, as the
encoder is). Synonyms then share a direction, each object keeps its own, and an object word also
carries its family, as related concepts share words in real captions. It needs no images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import CLIPTextModel, CLIPTokenizer

from unsee.sampling import tokenize
from unsee.world.captions import OBJECT_SYNONYMS, STYLE_WORDS, caption
from unsee.world.render import BACKGROUNDS, COLOUR_NAMES, FAMILIES, FAMILY_OF, OBJECTS, sample_scene

CONCEPTS: tuple[str, ...] = (*OBJECTS, *FAMILIES, *COLOUR_NAMES, *(f"{b} background" for b in BACKGROUNDS))
TEXT_STREAM = 3  # the caption stream's id beside the trainer's VAE_STREAM, UNET_STREAM


def word_concepts() -> dict[str, list[int]]:
    """The concepts (indices into ``CONCEPTS``) each caption word names; other words name none."""
    out: dict[str, list[int]] = {}
    for obj, words in OBJECT_SYNONYMS.items():
        for w in words:
            out[w] = [CONCEPTS.index(obj), CONCEPTS.index(FAMILY_OF[obj])]
    for fam in FAMILIES:
        out[fam] = [CONCEPTS.index(fam)]
    for col in COLOUR_NAMES:
        out[col] = [CONCEPTS.index(col)]
    for bg, words in STYLE_WORDS.items():
        for w in words:
            out[w] = [CONCEPTS.index(f"{bg} background")]
    return out


def concept_table(tokenizer: CLIPTokenizer) -> torch.Tensor:
    """(vocab, concepts) multi-hot: the concepts each token names."""
    table = torch.zeros(len(tokenizer), len(CONCEPTS))
    for word, idx in word_concepts().items():
        (tid,) = tokenizer(word, add_special_tokens=False).input_ids  # every caption word is one token
        table[tid, idx] = 1.0
    return table


def named_so_far(input_ids: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """(B, L, concepts): 1 where a concept was named at or before that position."""
    return table[input_ids].cummax(dim=1).values


@dataclass(frozen=True)
class TextPretrain:
    losses: tuple[float, ...]
    head: torch.nn.Linear  # reads the named concepts off the encoder's output (for checks; training drops it)

    def named(self, text_encoder: CLIPTextModel, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, L, concepts) booleans: what the head reads as named at or before each position."""
        with torch.no_grad():
            return self.head(text_encoder(input_ids).last_hidden_state) > 0


def pretrain_text_encoder(
    text_encoder: CLIPTextModel,
    tokenizer: CLIPTokenizer,
    steps: int,
    *,
    seed: int,
    lr: float = 1e-3,
    batch_size: int = 256,
    progress: bool = False,
) -> TextPretrain:
    """Train ``text_encoder`` in place for ``steps`` steps on the pretext task.

    Captions come from the world's own caption stream (seeded by ``seed``); the linear head is
    drawn from a generator under ``seed``.
    """
    device = text_encoder.device
    g = torch.Generator().manual_seed(seed * 1_000_003 + 700_000)
    width = text_encoder.config.hidden_size
    head = torch.nn.Linear(width, len(CONCEPTS)).to(device)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=g) / width**0.5)
        head.bias.zero_()
    table = concept_table(tokenizer).to(device)
    was = [p.requires_grad for p in text_encoder.parameters()]
    text_encoder.requires_grad_(True).train()
    opt = torch.optim.AdamW([*text_encoder.parameters(), *head.parameters()], lr=lr, weight_decay=0.0)
    losses = []
    bar = tqdm(range(steps), desc="text", disable=not progress)
    for step in bar:
        rng = np.random.default_rng([seed, TEXT_STREAM, step])
        captions = [caption(sample_scene(rng), rng) for _ in range(batch_size)]
        ids = tokenize(tokenizer, captions).to(device)
        hidden = text_encoder(ids).last_hidden_state  # what the UNet cross-attends to
        loss = F.binary_cross_entropy_with_logits(head(hidden), named_so_far(ids, table))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"text pretraining loss is {loss.item()} at step {step}; lower `text_pretrain_lr`")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
    for p, r in zip(text_encoder.parameters(), was):
        p.requires_grad_(r)
    head.requires_grad_(False)
    return TextPretrain(tuple(losses), head)
