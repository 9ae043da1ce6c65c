"""Loading Stable Diffusion pipelines (the bundled mini model, a local folder or a hub id) and fingerprints."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline

from unsee.quiet import quiet_libraries

ASSETS = Path(__file__).resolve().parent / "assets"
BUNDLED: dict[str, Path] = {"mini": ASSETS / "mini"}
# Pipelines whose UNet + CLIP text encoder unsee edits.
SUPPORTED_CLASSES = ("StableDiffusionPipeline",)


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
            raise ModelError(f"{path} holds a {cls}, not a Stable Diffusion 1.x/2.x pipeline; unsee supports: "
                             f"{', '.join(SUPPORTED_CLASSES)}")  # fmt: skip
        return path
    if name.count("/") != 1:
        raise ModelError(f"unknown model {name!r}; use one of: {', '.join(BUNDLED)}, a folder, or a hub id like org/name")
    return name


def load_pipeline(
    name_or_path: str | os.PathLike = "mini",
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> StableDiffusionPipeline:
    """Load a Stable Diffusion pipeline in ``dtype`` on ``device`` (fp32 on CPU by default).

    Respects ``HF_HUB_OFFLINE``: offline, a hub id must already be in the local cache.
    """
    where = resolve(name_or_path)
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    try:
        with quiet_libraries():  # no "Loading pipeline components..." / "Loading weights" bars or warnings
            pipe = StableDiffusionPipeline.from_pretrained(
                where, dtype=dtype, safety_checker=None, requires_safety_checker=False, local_files_only=offline
            )
    except (OSError, ValueError) as e:
        if isinstance(where, Path):
            raise ModelError(f"cannot load pipeline from {where}: {str(e).splitlines()[0]}") from e
        hint = "it is not in the local cache and HF_HUB_OFFLINE is set" if offline else "the hub is unreachable"
        raise ModelError(
            f"cannot load {where!r}: {hint}; download it first (huggingface-cli download {where}) or pass a local folder"
        ) from e
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def model_source(pipe: StableDiffusionPipeline) -> str | None:
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


def sampling_defaults(model: str | os.PathLike | StableDiffusionPipeline = "mini") -> SamplingDefaults:
    """Steps and guidance a model is meant to sample with (``unsee.json`` in its folder, else SD's 50 / 7.5).

    ``model`` is a name, a folder, a hub id, or a loaded pipeline (its folder is the one it came from).
    """
    if isinstance(model, StableDiffusionPipeline):
        model = model.name_or_path or ""
        if not model:  # built in code: no folder says how to sample it
            return SamplingDefaults()
    name = str(model)
    path = BUNDLED.get(name, Path(name).expanduser())
    cfg = path / "unsee.json"
    if cfg.exists():
        return SamplingDefaults(**json.loads(cfg.read_text()).get("sampling", {}))
    return SamplingDefaults()


def fingerprint(pipe: StableDiffusionPipeline) -> str:
    """A stable hash of the UNet and text-encoder weights (the parts unsee edits).

    Tensors are hashed as fp16, so the same weights loaded in fp32 or fp16 share a fingerprint.
    """
    h = hashlib.sha256()
    for prefix, module in (("unet", pipe.unet), ("text_encoder", pipe.text_encoder)):
        for name, t in sorted(module.state_dict().items()):
            h.update(f"{prefix}.{name}:{tuple(t.shape)}".encode())
            h.update(t.detach().to("cpu", torch.float16).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def folder_size(path: str | os.PathLike) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
