"""A prompt attack in the manner of UnlearnDiffAtk (Zhang et al., ECCV 2024): real words an attacker could type.

``k_tokens`` prepended tokens, each a distribution over the model's whole words. The forward pass
uses the distribution's argmax as a one-hot (so the loss is the loss of a real prompt) and the
backward pass its softmax (straight-through). The logits descend the *erased* model's denoising loss
on images of the concept, with the plain prompts after the prefix; the result is projected to the
hard words, which become an ordinary text prompt.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline
from tqdm.auto import tqdm

from unsee.attacks.base import AttackConfig, AttackRun, Found, Target, register
from unsee.checkpoints import save_atomic
from unsee.concepts.inversion import denoising_loss, encode_images, noisy_batch
from unsee.concepts.vocab import model_words
from unsee.edits import Edit
from unsee.sampling import encode_prompts


@dataclass
class TokenSearchConfig(AttackConfig):
    """UnlearnDiffAtk's settings: 5 prepended tokens, Adam lr 0.01; ``search_steps`` scaled in the benchmark."""

    uses_images: ClassVar[bool] = True

    k_tokens: int = 5
    search_steps: int = 320
    lr: float = 0.01
    batch_size: int = 8
    words: tuple[str, ...] = ()
    """The attacker's vocabulary (default: the tokenizer's whole words)."""
    exclude: tuple[str, ...] = ()
    """Words the attacker may not use."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for f in ("k_tokens", "search_steps", "batch_size"):
            if getattr(self, f) < 1:
                raise ValueError(f"`{f}` must be at least 1, got {getattr(self, f)}")


def word_ids(pipe: StableDiffusionPipeline, words: list[str]) -> torch.Tensor:
    """Each word's single token id (words the tokenizer splits are refused)."""
    ids = []
    for w in words:
        piece = pipe.tokenizer(w, add_special_tokens=False).input_ids
        if len(piece) != 1:
            raise ValueError(f"the tokenizer splits {w!r} into {len(piece)} tokens; `words` must be whole words it knows")
        ids.append(piece[0])
    return torch.tensor(ids)


@register("token-search", TokenSearchConfig)
def token_search(pipe: StableDiffusionPipeline, edit: Edit, target: Target, cfg: TokenSearchConfig,
                 generator: torch.Generator, *, run: AttackRun, force: bool = False) -> Found:  # fmt: skip
    images = target.needs_images("token-search")
    words = [w for w in (list(cfg.words) or model_words(pipe)) if w not in set(cfg.exclude)]
    if not words:
        raise ValueError("the attacker's vocabulary is empty; pass more `words` or fewer `exclude`")
    table = pipe.text_encoder.get_input_embeddings().weight.detach().float()[word_ids(pipe, words)].cpu()  # (V, D)
    g = generator
    logits = torch.nn.Parameter(1e-3 * torch.randn((cfg.k_tokens, len(words)), generator=g))
    opt = torch.optim.Adam([logits], lr=cfg.lr)
    slots = [f"<unsee-slot-{i}>" for i in range(cfg.k_tokens)]  # stand-ins the straight-through vectors fill
    prefix = " ".join(slots)
    step, log, elapsed = 0, [], 0.0
    ck = None if run.dir is None else Path(run.dir) / "checkpoint.pt"
    # search_steps may grow on resume, as an erasure's iterations may
    meta = {"config": {k: v for k, v in cfg.to_dict().items() if k != "search_steps"}, "edit": edit.digest,
            "concept": target.concept, "words": len(words)}  # fmt: skip
    if run.resume:
        if ck is None or not ck.exists():
            raise FileNotFoundError(f"no checkpoint at {ck}; start without `resume=True`")
        state = torch.load(ck, map_location="cpu", weights_only=True)
        if state["meta"] != meta:
            raise ValueError(f"checkpoint {ck} is for another token search (settings, edit or concept); use a new `run.dir`")
        with torch.no_grad():
            logits.copy_(state["logits"])
        opt.load_state_dict(state["opt"])
        g.set_state(state["generator"])
        step, log, elapsed = state["step"], state["log"], state["elapsed"]
    sched = DDIMScheduler.from_config(pipe.scheduler.config)
    bar = tqdm(total=cfg.search_steps, initial=step, desc=f"token search for {target.concept}", disable=not run.progress)
    t0 = time.perf_counter() - elapsed
    with edit.applied(pipe, force=force):
        pipe.unet.requires_grad_(False)
        pipe.text_encoder.requires_grad_(False)
        latents = encode_images(pipe, images)
        while step < cfg.search_steps:
            x_t, t, tgt = noisy_batch(sched, latents, cfg.batch_size, g)
            which = torch.randint(len(target.prompts), (cfg.batch_size,), generator=g)
            probs = logits.softmax(-1)
            hard = torch.zeros_like(probs).scatter_(-1, probs.argmax(-1, keepdim=True), 1.0)
            vecs = (hard - probs.detach() + probs) @ table  # forward: real words; backward: the softmax
            prompts = [f"{prefix} {target.prompts[int(i)].format(target.concept)}" for i in which]
            cond = encode_prompts(pipe, prompts, {s: vecs[j : j + 1] for j, s in enumerate(slots)})
            loss = denoising_loss(pipe, x_t, t, cond, tgt)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"token-search loss is {loss.item()} at step {step}; lower `lr` (now {cfg.lr})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step % 10 == 0 or step == cfg.search_steps:
                log.append({"step": step, "loss": loss.item(), "words": [words[i] for i in logits.argmax(-1).tolist()]})
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
            elapsed = time.perf_counter() - t0
            if ck is not None and step % run.checkpoint_every == 0:
                save_atomic({"meta": meta, "logits": logits.detach(), "opt": opt.state_dict(), "generator": g.get_state(),
                             "step": step, "log": log, "elapsed": elapsed}, ck)  # fmt: skip
    bar.close()
    found = " ".join(words[i] for i in logits.argmax(-1).tolist())
    variants = [[f"{found} {p.format(target.concept)}"] for p in target.prompts]
    return Found(variants, None, {"seconds": elapsed, "words": found, "log": log})
