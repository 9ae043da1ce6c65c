"""Judged generation metrics: what a model draws for each prompt, read by a :class:`unsee.judges.Judge`.

Each prompt's images come from z_T drawn with that prompt's own seed, so a prompt's result does
not depend on which other prompts are evaluated with it or on batching. With a second, independent
judge (``check``), every result also says how often the two judges agree; a class whose generated
images the judges agree on less than :data:`AGREEMENT_FLOOR` of the time is flagged, not averaged in
silently: neither judge's read of it is to be trusted.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline
from tqdm.auto import tqdm

from unsee.distributed import gather, is_main_process, round_robin, state
from unsee.judges import Judge, topk
from unsee.models import fingerprint, sampling_defaults
from unsee.sampling import Learned, check_sampling, ddim, decode, denoise, encode_prompts, latent_shape

AGREEMENT_FLOOR = 0.8
"""Below this top-1 agreement of two judges on a class's generated images, the class is flagged."""
FLAG = "⚠"
"""The marker of a flagged class in Markdown tables."""


@dataclass(frozen=True)
class PromptResult:
    """Top-k concept names per judge group for each image of one prompt; ``check``: a second judge's top-1."""

    prompt: str
    topk: dict[str, list[list[str]]]
    images: torch.Tensor | None = field(default=None, repr=False)
    check: dict[str, list[list[str]]] | None = None

    def rate(self, group: str, label: str, k: int = 1) -> float:
        """Fraction of images whose top-k on ``group`` contains ``label``."""
        if group not in self.topk:
            raise ValueError(f"unknown judge group {group!r}; known: {', '.join(self.topk)}")
        rows = self.topk[group]
        return sum(label in r[:k] for r in rows) / len(rows)

    def agreement(self, group: str) -> float:
        """Fraction of images on which the judge's and the check's top-1 on ``group`` are the same."""
        if self.check is None:
            raise ValueError(f"prompt {self.prompt!r} was read by one judge; pass check= to judge_prompts")
        return sum(a[0] == b[0] for a, b in zip(self.topk[group], self.check[group])) / len(self.topk[group])


def prompt_latents(pipe: StableDiffusionPipeline, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator("cpu").manual_seed(seed)
    z = torch.randn(latent_shape(pipe, n), generator=g)
    return (z * ddim(pipe, 1).init_noise_sigma).to(pipe.unet.device, pipe.unet.dtype)


@torch.no_grad()
def prompt_images(
    pipe: StableDiffusionPipeline,
    prompts: Sequence[str],
    *,
    n: int = 8,
    seed: int = 0,
    steps: int | None = None,
    guidance_scale: float | None = None,
    batch_size: int = 64,
    progress: bool = False,
    learned: Learned | None = None,
    seeds: Sequence[int] | None = None,
) -> list[torch.Tensor]:
    """``n`` images per prompt ``(n, 3, H, W)`` in [0, 1]; prompt i's z_T comes from seed ``seed + i``, or
    ``seeds[i]`` when given (a prompt keeps its images whichever other prompts are drawn with it).

    ``steps`` and ``guidance_scale`` default to the model's own (``unsee.models.sampling_defaults``).
    """
    d = sampling_defaults(pipe)
    steps = d.steps if steps is None else steps
    guidance_scale = d.guidance_scale if guidance_scale is None else guidance_scale
    check_sampling(steps, guidance_scale)
    if n < 1:
        raise ValueError(f"`n` must be at least 1 (got {n}): the images per prompt")
    if seeds is not None and len(seeds) != len(prompts):
        raise ValueError(f"`seeds` has {len(seeds)} seeds for {len(prompts)} prompts; pass one per prompt")
    seeds = [seed + i for i in range(len(prompts))] if seeds is None else list(seeds)
    jobs = [(i, j) for i in range(len(prompts)) for j in range(n)]
    latents = {i: prompt_latents(pipe, n, seeds[i]) for i in range(len(prompts))}
    neg = encode_prompts(pipe, [""])
    starts = list(range(0, len(jobs), batch_size))
    # Under `accelerate launch` each process draws whole chunks, the very chunks one process would: the images are
    # the same bit for bit, whichever process drew them.
    mine, state = round_robin(len(starts))
    done: dict[int, torch.Tensor] = {}
    for c in tqdm(mine, desc="sampling", disable=not progress):
        chunk = jobs[starts[c] : starts[c] + batch_size]
        z = torch.stack([latents[i][j] for i, j in chunk])
        cond = encode_prompts(pipe, [prompts[i] for i, _ in chunk], learned)
        sched = ddim(pipe, steps)
        z = denoise(pipe.unet, sched, z, cond, neg.expand(len(chunk), -1, -1), guidance_scale, sched.timesteps)
        done[c] = decode(pipe, z).cpu()
    if state is not None:
        done = {c: x for part in gather(done, state) for c, x in part.items()}
    images: dict[int, list[torch.Tensor]] = {i: [] for i in range(len(prompts))}
    for c in range(len(starts)):
        for (i, _), im in zip(jobs[starts[c] : starts[c] + batch_size], done[c]):
            images[i].append(im)
    return [torch.stack(images[i]) for i in range(len(prompts))]


def weights_key(pipe: StableDiffusionPipeline) -> str:
    """A hash of every weight that shapes a generated image: :func:`unsee.models.fingerprint` (UNet and text
    encoder) and the VAE's, which the fingerprint leaves out because no edit touches it."""
    h = hashlib.sha256(fingerprint(pipe).encode())
    for name, t in sorted(pipe.vae.state_dict().items()):
        h.update(f"{name}:{tuple(t.shape)}".encode())
        h.update(t.detach().to("cpu", torch.float16).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def cached_prompt_images(
    pipe: StableDiffusionPipeline,
    prompts: Sequence[str],
    cache_dir: str | Path,
    *,
    seeds: Sequence[int],
    n: int = 8,
    steps: int | None = None,
    guidance_scale: float | None = None,
    batch_size: int = 64,
    progress: bool = False,
    model_key: str | None = None,
) -> list[torch.Tensor]:
    """:func:`prompt_images`, each prompt's images kept in ``cache_dir``. A prompt's images depend only on the
    weights (:func:`weights_key`), the prompt, its seed, ``n``, ``steps`` and ``guidance_scale``, so that is the
    key: a later call with other prompts beside it, or in another order, reads them back bit for bit. A caller
    that calls again and again on unchanged weights passes ``model_key`` (:func:`weights_key`) to hash them once."""
    d = sampling_defaults(pipe)
    steps = d.steps if steps is None else steps
    guidance_scale = d.guidance_scale if guidance_scale is None else guidance_scale
    if len(seeds) != len(prompts):
        raise ValueError(f"`seeds` has {len(seeds)} seeds for {len(prompts)} prompts; pass one per prompt")
    model = model_key or weights_key(pipe)
    folder = Path(cache_dir) / "images"
    paths = [folder / (hashlib.sha256(json.dumps([model, p, int(s), n, steps, float(guidance_scale)]).encode())
                       .hexdigest()[:24] + ".pt") for p, s in zip(prompts, seeds)]  # fmt: skip
    todo = [i for i, f in enumerate(paths) if not f.exists()]
    drawn: dict[int, torch.Tensor] = {}
    if todo:
        # Under `accelerate launch` prompt_images shares the drawing and hands every process every image; one
        # process writes them (two writing one file would race), and each returns what it holds, not a re-read.
        fresh = prompt_images(pipe, [prompts[i] for i in todo], seeds=[seeds[i] for i in todo], n=n, steps=steps,
                              guidance_scale=guidance_scale, batch_size=batch_size, progress=progress)  # fmt: skip
        drawn = dict(zip(todo, fresh))
        if is_main_process():
            folder.mkdir(parents=True, exist_ok=True)
            for i, ims in drawn.items():
                tmp = paths[i].with_suffix(".tmp")
                torch.save(ims.contiguous(), tmp)
                tmp.replace(paths[i])  # a reader never sees half a file
        if (s := state()) is not None:  # every process then sees the same files (a repeated prompt, a later call)
            s.wait_for_everyone()
    return [drawn[i] if i in drawn else torch.load(f, weights_only=True) for i, f in enumerate(paths)]


@torch.no_grad()
def judge_prompts(
    pipe: StableDiffusionPipeline,
    judge: Judge,
    prompts: Sequence[str],
    *,
    n: int = 8,
    seed: int = 0,
    steps: int | None = None,
    guidance_scale: float | None = None,
    k: int = 3,
    batch_size: int = 64,
    keep_images: bool = False,
    progress: bool = False,
    check: Judge | None = None,
    learned: Learned | None = None,
    seeds: Sequence[int] | None = None,
) -> list[PromptResult]:
    """Generate ``n`` images per prompt (prompt i seeded ``seed + i``, or ``seeds[i]``) and read them with
    ``judge`` (top-``k``), and with ``check`` (top-1), a second judge of the same groups, when given."""
    if check is not None:
        same_groups(judge, check)
    images = prompt_images(pipe, prompts, n=n, seed=seed, steps=steps, guidance_scale=guidance_scale,
                           batch_size=batch_size, progress=progress, learned=learned, seeds=seeds)  # fmt: skip
    return judge_images(judge, prompts, images, k=k, keep_images=keep_images, check=check)


def judge_images(judge: Judge, prompts: Sequence[str], images: Sequence[torch.Tensor], *, k: int = 3,
                 keep_images: bool = False, check: Judge | None = None) -> list[PromptResult]:  # fmt: skip
    """Read each prompt's images (``images[i]`` for ``prompts[i]``) with ``judge`` (top-``k``) and ``check`` (top-1)."""
    if len(images) != len(prompts):
        raise ValueError(f"`images` has {len(images)} entries for {len(prompts)} prompts; pass one batch per prompt")
    return [PromptResult(p, topk(judge, ims, k), ims if keep_images else None,
                         topk(check, ims, 1) if check is not None else None)
            for p, ims in zip(prompts, images)]  # fmt: skip


def accuracy(results: Sequence[PromptResult], group: str, labels: Sequence[str], k: int = 1) -> float:
    """Mean over prompts of the rate at which each prompt's expected label is in the top-k."""
    return sum(r.rate(group, lab, k) for r, lab in zip(results, labels)) / len(results)


def same_groups(judge: Judge, check: Judge) -> None:
    """Two judges can be compared only on the same groups of the same concepts."""
    if dict(judge.groups) != dict(check.groups):
        raise ValueError(f"the two judges know different concepts: {dict(judge.groups)} vs {dict(check.groups)}")


def agreement(results: Sequence[PromptResult], group: str) -> float:
    """Top-1 agreement of the two judges on ``group`` over every image of ``results``."""
    return sum(r.agreement(group) * len(r.topk[group]) for r in results) / sum(len(r.topk[group]) for r in results)


def flagged(agreement_by_class: Mapping[str, float], floor: float = AGREEMENT_FLOOR) -> list[str]:
    """Classes whose judges agree on fewer than ``floor`` of their images, in the mapping's order."""
    return [c for c, a in agreement_by_class.items() if a < floor]


def mark(name: str, flags: Sequence[str]) -> str:
    """``name``, with :data:`FLAG` after it when it is flagged (for Markdown tables)."""
    return f"{name} {FLAG}" if name in flags else name
