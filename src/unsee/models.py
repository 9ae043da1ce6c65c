"""Loading Stable Diffusion pipelines (the bundled mini model, a local folder or a hub id) and fingerprints."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
from diffusers.models.activations import GEGLU

from unsee.quiet import quiet_libraries

ASSETS = Path(__file__).resolve().parent / "assets"
BUNDLED: dict[str, Path] = {"mini": ASSETS / "mini"}
# Pipelines whose UNet + CLIP text encoder(s) unsee edits: SD 1.x and 2.x, and SDXL.
SUPPORTED_CLASSES = ("StableDiffusionPipeline", "StableDiffusionXLPipeline")
PIPELINE_CLASSES: dict[str, type] = {"StableDiffusionPipeline": StableDiffusionPipeline,
                                     "StableDiffusionXLPipeline": StableDiffusionXLPipeline}  # fmt: skip
Pipeline = StableDiffusionPipeline | StableDiffusionXLPipeline


class ModelError(ValueError):
    """A model name or folder that cannot be loaded; the message says how to fix it."""


@dataclass(frozen=True)
class SamplingDefaults:
    steps: int = 50
    guidance_scale: float = 7.5


def _is_pathlike(name: str) -> bool:
    # "org/name" is a hub id unless such a folder exists, as in diffusers.
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or Path(name).exists()


def resolve(name_or_path: str | os.PathLike) -> str | Path:
    """The folder or hub id behind a model name, with a one-line error naming the fix."""
    name = str(name_or_path)
    if name in BUNDLED:
        path = BUNDLED[name]
        if not (path / "model_index.json").exists():
            raise ModelError(f"bundled model {name!r} is missing at {path}; reinstall unsee or retrain the mini model")
        return path
    if _is_pathlike(name):
        path = Path(name).expanduser()
        if not path.exists():
            raise ModelError(f"no folder {path}; pass a diffusers pipeline folder, a hub id, or one of: {', '.join(BUNDLED)}")
        index = path / "model_index.json"
        if not index.exists():
            raise ModelError(
                f"{path} is not a diffusers pipeline folder (no model_index.json); save one with pipe.save_pretrained()"
            )
        cls = json.loads(index.read_text()).get("_class_name")
        if cls not in SUPPORTED_CLASSES:
            raise ModelError(f"{path} holds a {cls}, not a Stable Diffusion 1.x/2.x or SDXL pipeline; unsee supports: "
                             f"{', '.join(SUPPORTED_CLASSES)}")  # fmt: skip
        return path
    if name.count("/") != 1:
        raise ModelError(f"unknown model {name!r}; use one of: {', '.join(BUNDLED)}, a folder, or a hub id like org/name")
    return name


def _class_name(where: str | Path, offline: bool) -> str:
    """The pipeline class a folder or hub id holds (model_index.json's ``_class_name``); SD's if it cannot be read."""
    if isinstance(where, Path):
        return json.loads((where / "model_index.json").read_text())["_class_name"]
    try:
        from huggingface_hub import hf_hub_download

        name = json.loads(Path(hf_hub_download(where, "model_index.json", local_files_only=offline)).read_text())
        return name["_class_name"] if name.get("_class_name") in SUPPORTED_CLASSES else "StableDiffusionPipeline"
    except Exception:  # unreachable or not cached: loading below says so, with the fix
        return "StableDiffusionPipeline"


class SplitGEGLU(GEGLU):
    """diffusers' GEGLU (the transformer blocks' feed-forward gate), its projection computed as two half-width
    products from the same weight tensor instead of one product split in two.

    Why: ``proj(x).chunk(2)`` leaves two strided halves, and the GELU and the product run over them more slowly
    than over contiguous tensors on a CPU. With freed memory kept as well (:func:`unsee.machine.keep_freed_memory`,
    as the CLI runs), the mini's UNet ran at 12.4 ms a row against 13.7 with neither (24 rows, one thread;
    benchmarks/results/unet_batch.md, where each alone is within the machine's drift). Same parameters, same
    names, same state dict; outputs equal to GEGLU's up to float rounding (1e-6 on the mini's UNet). Where
    ``proj`` is no longer a plain ``nn.Linear`` (a LoRA layer wraps it), GEGLU's own forward runs, so the wrapper
    is not bypassed.
    """

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        proj = self.proj
        if type(proj) is not torch.nn.Linear or args or kwargs:
            return super().forward(hidden_states, *args, **kwargs)
        d = proj.out_features // 2
        b = proj.bias
        h = F.linear(hidden_states, proj.weight[:d], None if b is None else b[:d])
        gate = self.gelu(F.linear(hidden_states, proj.weight[d:], None if b is None else b[d:]))
        # In place only where autograd keeps no graph: a product's backward needs both factors.
        return h.mul_(gate) if not torch.is_grad_enabled() else h * gate


def split_geglu(module: torch.nn.Module) -> int:
    """Make every diffusers ``GEGLU`` inside ``module`` a :class:`SplitGEGLU` (in place, the same parameters);
    returns how many. ``load_pipeline`` does this for its UNet on a CPU."""
    n = 0
    for m in module.modules():
        if type(m) is GEGLU:
            m.__class__ = SplitGEGLU  # a subclass with no state of its own: the module keeps its parameters
            n += 1
    return n


def load_pipeline(
    name_or_path: str | os.PathLike = "mini",
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    split_ff: bool | None = None,
) -> Pipeline:
    """Load a Stable Diffusion (1.x, 2.x or XL) pipeline in ``dtype`` on ``device`` (fp32 on CPU by default).

    Respects ``HF_HUB_OFFLINE``: offline, a hub id must already be in the local cache. ``split_ff`` (default: on a
    CPU) runs the UNet's feed-forward gates as :class:`SplitGEGLU`, faster on a CPU.
    """
    where = resolve(name_or_path)
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    cls = PIPELINE_CLASSES[_class_name(where, offline)]
    extra = {"safety_checker": None, "requires_safety_checker": False} if cls is StableDiffusionPipeline else {}
    try:
        with quiet_libraries():  # no "Loading pipeline components..." / "Loading weights" bars or warnings
            pipe = cls.from_pretrained(where, dtype=dtype, local_files_only=offline, **extra)
    except (OSError, ValueError) as e:
        if isinstance(where, Path):
            raise ModelError(f"cannot load pipeline from {where}: {str(e).splitlines()[0]}") from e
        hint = "it is not in the local cache and HF_HUB_OFFLINE is set" if offline else "the hub is unreachable"
        raise ModelError(
            f"cannot load {where!r}: {hint}; download it first (huggingface-cli download {where}) or pass a local folder"
        ) from e
    if isinstance(pipe, StableDiffusionXLPipeline) and pipe.vae_scale_factor != 8:
        raise ModelError(f"{where} is an SDXL pipeline whose VAE downsamples by {pipe.vae_scale_factor}, not 8; unsee's "
                         "SDXL size conditioning assumes SDXL's VAE")  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    if torch.device(device).type == "cpu" if split_ff is None else split_ff:
        split_geglu(pipe.unet)
    return pipe.to(device)


def architecture(pipe: Pipeline) -> dict[str, object]:
    """What an edit's tensors fit: the pipeline class, the UNet's cross-attention width and added conditioning."""
    cfg = pipe.unet.config
    return {"pipeline": type(pipe).__name__, "cross_attention_dim": cfg.cross_attention_dim,
            "addition_embed_type": cfg.get("addition_embed_type")}  # fmt: skip


def describe(arch: dict[str, object]) -> str:
    """A model family in words, from :func:`architecture`, e.g. "an SDXL model (StableDiffusionXLPipeline,
    cross-attention 2048)"; a StableDiffusionPipeline is SD 2.x at SD 2's text width (1024), else SD 1.x."""
    cls, width = arch.get("pipeline"), arch.get("cross_attention_dim")
    if arch.get("addition_embed_type") == "text_time":
        family = "an SDXL"
    elif cls == "StableDiffusionPipeline":
        family = "an SD 2.x" if width == 1024 else "an SD 1.x"
    else:
        family = f"a {cls}"
    return f"{family} model ({cls}, cross-attention {width})"


def model_source(pipe: Pipeline) -> str | None:
    """What :func:`load_pipeline` would take to load ``pipe`` again: a bundled name ("mini"), the folder it came
    from, or its hub id; None for a pipeline built in code."""
    where = getattr(pipe, "name_or_path", None) or ""
    if not where:
        return None
    path = Path(where).expanduser()
    if path.exists():
        for name, bundled in BUNDLED.items():
            if path.resolve() == bundled.resolve():
                return name
        return str(path.resolve())
    return str(where)


def sampling_defaults(model: str | os.PathLike | Pipeline = "mini") -> SamplingDefaults:
    """Steps and guidance a model is meant to sample with (``unsee.json`` in its folder, else SD's 50 / 7.5).

    ``model`` is a name, a folder, a hub id, or a loaded pipeline (its folder is the one it came from).
    """
    if isinstance(model, StableDiffusionPipeline | StableDiffusionXLPipeline):
        model = model.name_or_path or ""
        if not model:  # built in code: no folder says how to sample it
            return SamplingDefaults()
    name = str(model)
    path = BUNDLED.get(name, Path(name).expanduser())
    cfg = path / "unsee.json"
    if cfg.exists():
        return SamplingDefaults(**json.loads(cfg.read_text()).get("sampling", {}))
    return SamplingDefaults()


def fingerprint(pipe: Pipeline) -> str:
    """A stable hash of the UNet and text-encoder weights (the parts unsee edits; SDXL's second text encoder too).

    Tensors are hashed as fp16, so the same weights loaded in fp32 or fp16 share a fingerprint.
    """
    h = hashlib.sha256()
    parts = [("unet", pipe.unet), ("text_encoder", pipe.text_encoder)]
    if getattr(pipe, "text_encoder_2", None) is not None:  # after the others: SD 1.x/2.x fingerprints stay as they were
        parts.append(("text_encoder_2", pipe.text_encoder_2))
    for prefix, module in [(p, m) for p, m in parts if m is not None]:
        for name, t in sorted(module.state_dict().items()):
            h.update(f"{prefix}.{name}:{tuple(t.shape)}".encode())
            h.update(t.detach().to("cpu", torch.float16).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def folder_size(path: str | os.PathLike) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
