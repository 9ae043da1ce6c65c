"""Writing a trained mini pipeline as a diffusers folder with its sampling defaults."""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import torch

from unsee.world.mini.components import make_pipeline
from unsee.world.mini.config import SAMPLING


def export_pipeline(components: dict, out: Path, dtype: torch.dtype = torch.float32, training: dict | None = None) -> None:
    """Write a diffusers folder in fp32 (transformers loads weights in their saved dtype), with an
    ``unsee.json`` giving its sampling defaults and how far it was trained."""
    pipe = make_pipeline({k: copy.deepcopy(v) for k, v in components.items()})
    pipe.to(dtype=dtype)
    # Write beside, then swap: a run killed mid-export must not leave a folder mixing two steps.
    out = Path(out)
    tmp, old = out.with_name(out.name + ".tmp"), out.with_name(out.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp, safe_serialization=True)
    (tmp / "unsee.json").write_text(json.dumps({"sampling": SAMPLING, "training": training or {}}, indent=2))
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
