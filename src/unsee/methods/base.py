"""What every fine-tuning eraser shares: its config, the trained parameter sets, z_t sampling,
checkpoints, and the registry behind ``erase(pipe, concepts, cfg, generator) -> Edit``.

One UNet module serves as both the frozen model eps_theta and the model being trained
eps_theta': the trained tensors live outside it and enter through ``torch.func.functional_call``,
so memory holds one UNet plus the trained subset (the published code holds two full UNets).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from diffusers import StableDiffusionPipeline
from torch.func import functional_call
from tqdm.auto import tqdm

from unsee.checkpoints import save_atomic
from unsee.concepts.learned import Concept, LearnedConcept, check_learned, concept_name, learned_tokens
from unsee.edits import Edit
from unsee.models import architecture, fingerprint, model_source
from unsee.registry import Registry
from unsee.sampling import encode_prompts, sample_until, unet_eps

ParamSet = Literal["xattn", "noxattn", "selfattn", "full"]
PARAM_SETS: tuple[str, ...] = ("xattn", "noxattn", "selfattn", "full")


@dataclass
class EraseConfig:
    """What every eraser's config has, trained or closed-form: how a concept becomes a prompt, and its name."""

    template: str = "{}"
    """How a concept becomes a prompt, e.g. ``"a {}"``."""
    allow_split: bool = False
    """Allow concepts whose words the tokenizer splits into pieces (real SD vocabularies often do)."""

    name: ClassVar[str] = "?"
    uses_images: ClassVar[bool] = False
    """Whether the method learns from images of the erased concepts (``erase(..., images=)``)."""
    trains: ClassVar[bool] = True
    """False for a closed-form editor (``uce``): no iterations, no random draws, nothing to checkpoint."""

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.name, **asdict(self)}

    def changed_params(self, unet: torch.nn.Module) -> list[str]:
        """Names of the UNet parameters the method's edit holds."""
        raise NotImplementedError

    def __post_init__(self) -> None:
        pass


@dataclass
class MethodConfig(EraseConfig):
    """Settings shared by the fine-tuning erasers (ESD's defaults, tuned on the mini model)."""

    params: ParamSet = "xattn"
    """Trained UNet parameters: ``xattn`` cross-attention (ESD-x), ``noxattn`` all but cross-attention,
    time embedding and output layers (ESD-u), ``selfattn``, ``full``."""
    iterations: int = 150
    lr: float = 1e-4
    batch_size: int = 4
    eta: float = 1.0
    """Negative guidance: the target is eps(z, "") - eta (eps(z, c_e) - eps(z, ""))."""
    ddim_steps: int = 10
    """z_t comes from t_index ~ U{0..ddim_steps-1} DDIM steps of the model being trained."""
    sample_guidance: float = 3.0
    resolution: int | None = None
    """Image side in pixels at which z_t is drawn; None: the model's own (``sample_size`` x the VAE's factor).
    Smaller trains faster (a CPU check of a 1024 px model), at the cost of erasing at a size the model rarely saw."""

    def changed_params(self, unet: torch.nn.Module) -> list[str]:
        return select_params(unet, self.params)

    def __post_init__(self) -> None:
        if self.params not in PARAM_SETS:
            raise ValueError(f"unknown parameter set {self.params!r}; use one of: {', '.join(PARAM_SETS)}")
        for f in ("iterations", "batch_size", "ddim_steps"):
            if getattr(self, f) < 1:
                raise ValueError(f"{f} must be at least 1, got {getattr(self, f)}")
        if self.resolution is not None and (self.resolution < 8 or self.resolution % 8):
            raise ValueError(f"resolution must be a multiple of 8 pixels (the VAE's factor), got {self.resolution}")


EraseFn = Callable[..., Edit]
Objective = tuple[Callable[[int], dict[str, torch.Tensor]], Callable[[], dict[str, Any]]]
"""A method's loss as ``(step, info)``: ``step(i)`` returns update ``i``'s loss terms (``"loss"`` is
minimised), ``info()`` what the edit records once training ends; wrappers such as ``robust`` add terms."""
_REGISTRY: Registry[EraseConfig, EraseFn] = Registry("method")
register = _REGISTRY.register
"""Register an erasure method under ``name`` with its config class."""
methods = _REGISTRY.names
config_class = _REGISTRY.config_class
make_config = _REGISTRY.make_config
config_from_dict = _REGISTRY.config_from_dict


@dataclass
class Run:
    """Where a long erasure checkpoints, and whether it resumes."""

    dir: Path | None = None
    checkpoint_every: int = 50
    resume: bool = False
    progress: bool = True


def erase(
    pipe: StableDiffusionPipeline,
    concepts: Concept | Sequence[Concept],
    cfg: EraseConfig,
    generator: torch.Generator | None = None,
    *,
    run: Run | None = None,
    learned: Sequence[LearnedConcept] = (),
    force: bool = False,
    images: torch.Tensor | Sequence[torch.Tensor] | None = None,
) -> Edit:
    """Erase ``concepts`` from ``pipe`` with the method ``cfg`` names; ``pipe`` is left unchanged.

    A concept is a word or phrase the model knows, or a :class:`~unsee.concepts.learned.LearnedConcept`
    (equation 9: a concept only pictures express, erased through its learned token). ``learned``
    concepts add tokens the method's other prompts may use, e.g. a neutral target ``c_n="<clean>"``
    learned from images without the concept. ``force`` accepts learned concepts made on another model.
    ``images``: for the methods that learn from pictures of the erased concepts (``robust``), D_ce as
    ``(N, 3, H, W)`` in [0, 1] at the model's size: one batch per concept, or one batch when erasing one.
    """
    concepts = [concepts] if isinstance(concepts, str | LearnedConcept) else list(concepts)
    if not concepts:
        raise ValueError("no concept given; pass at least one in `concepts`")
    words = [c for c in concepts if not isinstance(c, LearnedConcept)]
    extra = [c for c in concepts if isinstance(c, LearnedConcept)] + list(learned)
    if words:
        check_concepts(pipe, words, cfg)
    check_learned(pipe, extra, force=force)
    if extra and getattr(cfg, "adversary", "search") == "predicted":
        raise ValueError("the impact predictor scores words, not learned concepts; use `adversary='search'`")
    kw = {"images": check_images(images, len(concepts), cfg)} if cfg.uses_images else {}
    if images is not None and not cfg.uses_images:
        raise ValueError(f"the {cfg.name} method does not learn from images; drop `images` (the robust method uses them)")
    fn = _REGISTRY.function(cfg.name)
    edit = fn(pipe, [concept_name(c) for c in concepts], cfg,
              generator if generator is not None else torch.Generator().manual_seed(0), run=run or Run(progress=False),
              learned=learned_tokens(extra), **kw)  # fmt: skip
    return replace(edit, base_model=model_source(pipe), architecture=architecture(pipe))  # the edit knows its model


def check_images(images: torch.Tensor | Sequence[torch.Tensor] | None, n_concepts: int,
                 cfg: EraseConfig) -> list[torch.Tensor]:  # fmt: skip
    """``images`` as one ``(N, 3, H, W)`` batch per erased concept, with one-line errors naming the fix."""
    if images is None:
        raise ValueError(f"the {cfg.name} method learns from images of each erased concept (D_ce); pass `images`, "
                         "one (N, 3, H, W) batch in [0, 1] per concept")  # fmt: skip
    batches = [images] if isinstance(images, torch.Tensor) else list(images)
    if len(batches) != n_concepts:
        raise ValueError(f"`images` holds {len(batches)} batch(es) for {n_concepts} concepts; pass one batch per concept")
    for i, x in enumerate(batches):
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 3 or len(x) == 0:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"`images` batch {i} must be a non-empty (N, 3, H, W) tensor, got {shape}")
        if float(x.min()) < 0 or float(x.max()) > 1:
            raise ValueError(f"`images` batch {i} has values outside [0, 1]; pass images scaled to [0, 1]")
    return batches


def check_concepts(pipe: StableDiffusionPipeline, concepts: Sequence[str], cfg: EraseConfig) -> None:
    if not concepts:
        raise ValueError("no concept given; pass at least one in `concepts`")
    tok = pipe.tokenizer
    for c in concepts:
        if not c or not c.strip():
            raise ValueError("empty concept in `concepts`; pass a word or phrase the model knows, e.g. 'circle'")
        if cfg.allow_split:
            continue
        for word in c.split():
            pieces = tok.tokenize(word)
            if len(pieces) != 1:
                raise ValueError(
                    f"the tokenizer splits {word!r} into {len(pieces)} pieces ({' '.join(pieces)}): the model has no word "
                    "for it; use a word it knows, or pass `allow_split=True` to erase the pieces together"
                )


def select_params(unet: torch.nn.Module, which: str) -> list[str]:
    """Names of the UNet parameters a parameter set trains (ESD's definitions)."""
    names = [n for n, _ in unet.named_parameters()]
    if which == "xattn":
        return [n for n in names if "attn2" in n]
    if which == "selfattn":
        return [n for n in names if "attn1" in n]
    if which == "noxattn":
        return [n for n in names if "attn2" not in n and not n.startswith(("time_embedding", "conv_out", "conv_norm_out"))]
    if which == "full":
        return names
    raise ValueError(f"unknown parameter set {which!r}; use one of: {', '.join(PARAM_SETS)}")


class TrainedUNet:
    """eps_theta': the pipeline's UNet evaluated with trained fp32 tensors in place of its own."""

    def __init__(self, unet: torch.nn.Module, params: dict[str, torch.nn.Parameter]):
        self.unet, self.params = unet, params

    @property
    def config(self):
        """The UNet's config (:func:`unsee.sampling.unet_eps` reads what conditioning it takes)."""
        return self.unet.config

    def __call__(self, z: torch.Tensor, t: torch.Tensor, encoder_hidden_states: torch.Tensor, **kwargs: Any):
        dtype = self.unet.dtype
        over = {n: p.to(dtype) for n, p in self.params.items()}  # masters stay fp32; the forward follows the pipe
        return functional_call(self.unet, over, (z, t), {"encoder_hidden_states": encoder_hidden_states, **kwargs})


class Trainer:
    """The loop shared by the erasers: trained tensors, Adam, z_t draws, checkpoints, the Edit."""

    def __init__(self, pipe: StableDiffusionPipeline, concepts: Sequence[str], cfg: MethodConfig,
                 generator: torch.Generator, run: Run, learned: Mapping[str, torch.Tensor] | None = None):  # fmt: skip
        self.pipe, self.cfg, self.g, self.run = pipe, cfg, generator, run
        self.learned = dict(learned or {})  # learned tokens any of the method's prompts may hold
        self.concepts = list(concepts)
        self.seed = generator.initial_seed()
        self.unet = pipe.unet
        self.unet.requires_grad_(False)
        pipe.text_encoder.requires_grad_(False)
        names = set(select_params(self.unet, cfg.params))
        self.params = {n: torch.nn.Parameter(p.detach().float().clone())
                       for n, p in self.unet.named_parameters() if n in names}  # fmt: skip
        self.trained = TrainedUNet(self.unet, self.params)
        self.opt = torch.optim.Adam(self.params.values(), lr=cfg.lr)
        self.extras: dict[str, Any] = {}  # method state that must survive a resume (logits, optimizers)
        self.iteration = 0
        self.log: list[dict[str, float]] = []
        self.elapsed = 0.0
        self.base_fingerprint = fingerprint(pipe)
        with torch.no_grad():
            self.c_e = self.encode([cfg.template.format(c) for c in self.concepts])
            self.uncond = encode_prompts(pipe, [""])

    def encode(self, prompts: Sequence[str]) -> torch.Tensor:
        """Text embeddings of prompts that may hold the erasure's learned tokens."""
        return encode_prompts(self.pipe, prompts, self.learned)

    # -- model outputs -------------------------------------------------------------------
    @torch.no_grad()
    def eps_frozen(self, z: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return unet_eps(self.unet, z, t, cond)

    def eps_trained(self, z: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return unet_eps(self.trained, z, t, cond)

    def draw_concepts(self, n: int) -> torch.Tensor:
        """Indices of the erased concepts for a batch (each concept in turn when there are several)."""
        return torch.randint(len(self.concepts), (n,), generator=self.g)

    @torch.no_grad()
    def draw_zt(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z_t by partial DDIM of the model being trained on ``cond`` from fresh z_T, at a random step."""
        k = int(torch.randint(self.cfg.ddim_steps, (1,), generator=self.g))
        size = getattr(self.cfg, "resolution", None)
        part = sample_until(self.pipe, cond, k, steps=self.cfg.ddim_steps, guidance_scale=self.cfg.sample_guidance,
                            generator=self.g, uncond=self.uncond.expand(len(cond), -1, -1), unet=self.trained,
                            height=size, width=size)  # fmt: skip
        return part.z_t, part.t

    # -- loop ----------------------------------------------------------------------------
    def train(self, step: Callable[[int], dict[str, torch.Tensor]], desc: str) -> None:
        """Run ``step(i)`` (returns the loss terms; ``"loss"`` is minimised) for the configured iterations."""
        self._maybe_resume()
        bar = tqdm(total=self.cfg.iterations, initial=self.iteration, desc=desc, disable=not self.run.progress)
        t0 = time.perf_counter() - self.elapsed
        while self.iteration < self.cfg.iterations:
            terms = step(self.iteration)
            loss = terms["loss"]
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"{desc} loss is {loss.item()} at iteration {self.iteration}; lower `lr` (now {self.cfg.lr})"
                )
            self.opt.zero_grad(set_to_none=True)
            for hook in self.extras.get("_zero_grad", []):
                hook()
            loss.backward()
            self.opt.step()
            for hook in self.extras.get("_after_backward", []):
                hook()
            self.iteration += 1
            if self.iteration % 10 == 0 or self.iteration == self.cfg.iterations:
                self.log.append({"iteration": self.iteration, **{k: float(v.detach()) for k, v in terms.items()}})
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
            self.elapsed = time.perf_counter() - t0
            if self.run.dir is not None and self.iteration % self.run.checkpoint_every == 0:
                self._checkpoint()
        bar.close()

    def _state(self) -> dict[str, Any]:
        ext = {k: (v.state_dict() if hasattr(v, "state_dict") else v) for k, v in self.extras.items() if not k.startswith("_")}
        return {"config": self.cfg.to_dict(), "concepts": self.concepts, "iteration": self.iteration,
                "params": {n: p.detach() for n, p in self.params.items()}, "opt": self.opt.state_dict(),
                "generator": self.g.get_state(), "extras": ext, "log": self.log, "elapsed": self.elapsed,
                "base_fingerprint": self.base_fingerprint}  # fmt: skip

    def _checkpoint(self) -> None:
        save_atomic(self._state(), self.run.dir / "checkpoint.pt")

    def _maybe_resume(self) -> None:
        if not self.run.resume:
            return
        path = None if self.run.dir is None else self.run.dir / "checkpoint.pt"
        if path is None or not path.exists():
            raise FileNotFoundError(f"no checkpoint at {path}; run without `resume=True` to start the erasure")
        ck = torch.load(path, map_location="cpu", weights_only=True)

        def comparable(c: dict) -> dict:  # JSON turns tuples into lists; iterations may grow on resume
            c = json.loads(json.dumps(c))  # checkpoints from before `resolution` existed drew z_t at the model's size
            return {k: v for k, v in c.items() if k != "iterations" and not (k == "resolution" and v is None)}

        same = comparable(ck["config"]) == comparable(self.cfg.to_dict())
        if not same or ck["concepts"] != self.concepts:
            raise ValueError(f"checkpoint {path} is for another erasure (method, settings or concepts); use a new `run.dir`")
        if ck["base_fingerprint"] != self.base_fingerprint:
            raise ValueError(f"checkpoint {path} was made on another base model; load that model or use a new `run.dir`")
        with torch.no_grad():
            for n, p in self.params.items():
                p.copy_(ck["params"][n])
        self.opt.load_state_dict(ck["opt"])
        self.g.set_state(ck["generator"])
        for k, v in ck["extras"].items():
            cur = self.extras.get(k)
            if hasattr(cur, "load_state_dict"):
                cur.load_state_dict(v)
            elif isinstance(cur, torch.Tensor):
                with torch.no_grad():
                    cur.copy_(v)
            else:
                self.extras[k] = v
        self.iteration, self.log, self.elapsed = ck["iteration"], ck["log"], ck["elapsed"]

    def _learned_info(self) -> dict[str, Any]:
        if not self.learned:
            return {}
        return {"learned": {t: v.detach().cpu().float().tolist() for t, v in self.learned.items()}}

    def edit(self, info: dict[str, Any] | None = None) -> Edit:
        return Edit(
            method=self.cfg.name,
            config=json.loads(json.dumps(self.cfg.to_dict())),
            concepts=tuple(self.concepts),
            base_fingerprint=self.base_fingerprint,
            seed=self.seed,
            tensors={f"unet.{n}": p.detach().cpu().float().clone() for n, p in self.params.items()},
            info={"seconds": self.elapsed, "log": self.log, **(info or {}), **self._learned_info()},
        )


def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.mse_loss(a.float(), b.float())
