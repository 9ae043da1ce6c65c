"""Metrics for real models behind one registry: a config dataclass and a loader, by name (as methods and attacks are).

A loader turns its config into a :class:`Metric`, a callable that reads each prompt's generated images and returns
per-prompt numbers and set-level ones (:class:`Scores`). Every metric loads its weights from local files the user
names; none downloads anything. A missing file is a one-line ``ValueError`` that names the config field in
backticks (`` `clip_model` ``), which the CLI turns into its flag (``--clip-model``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch

from unsee.registry import Registry


@dataclass
class MetricConfig:
    """Base of every metric's settings; ``name`` is set by :func:`register`."""

    name: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps({"metric": self.name, **asdict(self)}))


@dataclass(frozen=True)
class Scores:
    """What a metric read: one dict per prompt (CSV columns) and the set-level numbers (the JSON's summary)."""

    per_prompt: list[dict[str, float | str]]
    summary: dict[str, float] = field(default_factory=dict)


@runtime_checkable
class Metric(Protocol):
    """``metric(prompts, images, base)``: ``images[i]`` ``(n, 3, H, W)`` in [0, 1] are prompt i's; ``base[i]`` the
    base model's images from the same seeds, for metrics with ``needs_base`` (LPIPS), else None."""

    needs_base: bool

    def __call__(self, prompts: Sequence[str], images: Sequence[torch.Tensor],
                 base: Sequence[torch.Tensor] | None = None) -> Scores: ...  # fmt: skip


Loader = Callable[[Any], Metric]
_REGISTRY: Registry[MetricConfig, Loader] = Registry("metric")
register = _REGISTRY.register


def metrics() -> list[str]:
    """The registered metric names."""
    from unsee.metrics import classifier, clip_score, fid, lpips, nudity  # noqa: F401  (registers the metrics)

    return _REGISTRY.names()


def metric_config(name: str, **settings: Any) -> MetricConfig:
    """``name``'s config with ``settings``; an unknown name or setting is a one-line error listing the known ones."""
    metrics()
    return _REGISTRY.make_config(name, **settings)


def load_metric(config: MetricConfig | str, **settings: Any) -> Metric:
    """Load a metric from its config (or its name and settings): weights from local files only."""
    if isinstance(config, str):
        config = metric_config(config, **settings)
    elif settings:
        raise ValueError("pass settings either in the config or as keywords, not both")
    return _REGISTRY.function(config.name)(config)


def local_path(value: str | None, param: str, what: str, *, folder: bool) -> Path:
    """``value`` as an existing local file or folder; otherwise a one-line error naming ``param`` and what it holds."""
    if not value:
        raise ValueError(f"no {what} given: pass `{param}` (a local {'folder' if folder else 'file'}; nothing is downloaded)")
    path = Path(value).expanduser()
    if not path.exists():
        raise ValueError(f"no {what} at {path}: pass `{param}` (a local {'folder' if folder else 'file'}; nothing is downloaded)")
    if folder and not path.is_dir():
        raise ValueError(f"{path} is a file, not the {what} folder: pass the folder as `{param}`")
    if not folder and path.is_dir():
        raise ValueError(f"{path} is a folder, not the {what} file: pass the file as `{param}`")
    return path
