"""Edit: the result of an erasure — only the changed tensors, plus what made them.

An edit saves as ``edit.safetensors`` + ``edit.json``, applies to a pipeline and restores it
exactly, refuses a pipeline with another base fingerprint unless forced, and merges into a
diffusers folder that plain ``StableDiffusionPipeline.from_pretrained`` (or SDXL's) loads. Separately made
edits of one base model compose into one (:meth:`Edit.compose`: their deltas summed).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from unsee import __version__
from unsee.models import Pipeline, architecture, describe, fingerprint

COMPONENTS = ("unet", "text_encoder", "text_encoder_2")  # text_encoder_2: SDXL's second text encoder


def _params(pipe: Pipeline) -> dict[str, dict[str, torch.nn.Parameter]]:
    """Component -> its named parameters, for the components ``pipe`` has."""
    return {c: dict(m.named_parameters()) for c in COMPONENTS if (m := getattr(pipe, c, None)) is not None}


class FingerprintMismatch(ValueError):
    """The edit was made for another base model."""


class SharedTensorsWarning(UserWarning):
    """Several composed edits change the same tensor: it gets the sum of their deltas (:meth:`Edit.compose`)."""


def _split(key: str) -> tuple[str, str]:
    comp, _, name = key.partition(".")
    if comp not in COMPONENTS:
        raise ValueError(f"edit tensor {key!r} must start with one of {COMPONENTS}")
    return comp, name


@dataclass(frozen=True)
class Edit:
    """Changed tensors (``"unet.<param>"`` -> fp32 tensor) and their provenance."""

    method: str
    config: dict[str, Any]
    concepts: tuple[str, ...]
    base_fingerprint: str
    seed: int | None
    tensors: dict[str, torch.Tensor] = field(repr=False)
    info: dict[str, Any] = field(default_factory=dict)
    unsee_version: str = __version__
    base_model: str | None = None
    """Where the base model loads from (``"mini"``, a folder, a hub id), beside its fingerprint; None: unknown."""
    architecture: dict[str, Any] | None = None
    """The base model's family (:func:`unsee.models.architecture`): pipeline class, cross-attention width and added
    conditioning; an edit refuses a pipeline of another family even when forced. None: unknown (older edits)."""

    @property
    def digest(self) -> str:
        """A short hash of the changed tensors: which erasure a learned concept or attack result was made on."""
        h = hashlib.sha256()
        for k in sorted(self.tensors):
            h.update(k.encode())
            h.update(self.tensors[k].detach().cpu().float().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    @property
    def num_changed(self) -> int:
        return sum(t.numel() for t in self.tensors.values())

    # -- composition ---------------------------------------------------------------------
    @classmethod
    def compose(cls, edits: Sequence[Edit], base: Pipeline, *, force: bool = False) -> Edit:
        """One edit that makes the changes of all ``edits``, each made separately on the model ``base`` holds.

        The policy: every edit's delta (its value minus ``base``'s) is added to ``base``. A tensor one edit
        changes takes that edit's value as it is (composing one edit gives that edit back, digest and all); a
        tensor several edits change gets the sum of their deltas, added in float64 in the order of the edits'
        digests, so the result does not depend on the order ``edits`` come in, and a
        :class:`SharedTensorsWarning` names those tensors: there the edits' changes can interfere, and the
        composition may erase less, or keep other concepts worse, than the edits alone
        (:func:`unsee.impact.interference.interference_report` measures it). The composed edit's
        ``config["parts"]`` records each edit's method, concepts, seed and digest, and ``info["shared"]`` which
        parts share which tensor.

        Edits made for different base models are refused (their deltas are not differences of one model);
        ``base`` must be that model, which ``force`` skips checking (as :meth:`apply` does).
        """
        edits = list(edits)
        if not edits:
            raise ValueError("nothing to compose: `edits` is empty; pass at least one edit")
        made_for = sorted({e.base_fingerprint for e in edits})
        if len(made_for) > 1:
            raise FingerprintMismatch(f"the edits were made for different base models ({', '.join(made_for)}); compose "
                                      "only edits made on one model")  # fmt: skip
        edits[0].check(base, force)
        digests = [e.digest for e in edits]
        order = sorted(range(len(edits)), key=lambda i: (digests[i], edits[i].method, edits[i].concepts, str(edits[i].seed)))
        parts = [edits[i] for i in order]
        digests = [digests[i] for i in order]
        owners: dict[str, list[int]] = {}
        for i, e in enumerate(parts):
            for key in e.tensors:
                owners.setdefault(key, []).append(i)
        params = _params(base)
        tensors = {}
        for key in sorted(owners):
            held = owners[key]
            if len(held) == 1:
                tensors[key] = parts[held[0]].tensors[key]
                continue
            comp, name = _split(key)
            if name not in params[comp]:
                raise ValueError(f"edit changes {key}, which `base` does not have; it is for another architecture")
            b = params[comp][name].detach().to("cpu", torch.float64)
            total = b.clone()
            for i in held:
                value = parts[i].tensors[key]
                if value.shape != b.shape:
                    raise ValueError(f"edit {digests[i]} has {key} of shape {tuple(value.shape)}, `base` {tuple(b.shape)}")
                total += value.to("cpu", torch.float64) - b
            tensors[key] = total.float()
        shared = {key: [digests[i] for i in held] for key, held in owners.items() if len(held) > 1}
        if shared:
            names = sorted(shared)
            more = f" and {len(names) - 4} more" if len(names) > 4 else ""
            warnings.warn(f"{len(names)} tensors are changed by more than one of the composed edits ({', '.join(names[:4])}"
                          f"{more}); each gets the sum of the edits' deltas, see the composed edit's info['shared']",
                          SharedTensorsWarning, stacklevel=2)  # fmt: skip
        recorded = [{"method": e.method, "concepts": list(e.concepts), "seed": e.seed, "digest": d}
                    for e, d in zip(parts, digests)]  # fmt: skip
        return cls(
            method="compose",
            config={"method": "compose", "policy": "sum of deltas", "parts": recorded},
            concepts=tuple(dict.fromkeys(c for e in parts for c in e.concepts)),
            base_fingerprint=made_for[0],
            seed=None,
            tensors=tensors,
            info={"shared": shared},
            base_model=next(iter({e.base_model for e in parts})) if len({e.base_model for e in parts}) == 1 else None,
            architecture=architecture(base),
        )

    # -- files ---------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.tensors.items()}, folder / "edit.safetensors")
        meta = {
            "method": self.method,
            "config": self.config,
            "concepts": list(self.concepts),
            "base_fingerprint": self.base_fingerprint,
            "base_model": self.base_model,
            "architecture": self.architecture,
            "seed": self.seed,
            "unsee_version": self.unsee_version,
            "num_changed": self.num_changed,
            "info": self.info,
        }
        (folder / "edit.json").write_text(json.dumps(meta, indent=2))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> Edit:
        folder = Path(folder)
        if not (folder / "edit.json").exists():
            raise FileNotFoundError(f"no edit at {folder} (edit.json missing); make one with `unsee erase --out {folder}`")
        meta = json.loads((folder / "edit.json").read_text())
        return cls(
            method=meta["method"],
            config=meta["config"],
            concepts=tuple(meta["concepts"]),
            base_fingerprint=meta["base_fingerprint"],
            seed=meta["seed"],
            tensors=load_file(folder / "edit.safetensors"),
            info=meta.get("info", {}),
            unsee_version=meta.get("unsee_version", "?"),
            base_model=meta.get("base_model"),
            architecture=meta.get("architecture"),
        )

    # -- pipelines -----------------------------------------------------------------------
    def check(self, pipe: Pipeline, force: bool = False) -> None:
        """Refuse a pipeline of another model family (always) or with another fingerprint (unless ``force``)."""
        here = architecture(pipe)
        if self.architecture is not None and self.architecture != here:
            fix = f"load_pipeline({self.base_model!r})" if self.base_model else "the model it was made on"
            raise ValueError(f"this edit was made on {describe(self.architecture)}, not on {describe(here)}; pass the "
                             f"pipeline of {fix}")  # fmt: skip
        if force:  # hashing every weight is the expensive part; forced applies skip it
            return
        fp = fingerprint(pipe)
        if fp != self.base_fingerprint:
            raise FingerprintMismatch(
                f"this edit was made for base model {self.base_fingerprint}, not {fp}; load that model or pass `force=True`"
            )

    def apply(self, pipe: Pipeline, *, force: bool = False, check: bool = True) -> Undo:
        """Write the edit's tensors into ``pipe`` in place (in the pipeline's dtype); returns an :class:`Undo`."""
        if check:
            self.check(pipe, force)
        params = _params(pipe)
        saved = {}
        with torch.no_grad():
            for key, value in self.tensors.items():
                comp, name = _split(key)
                if name not in params[comp]:
                    raise ValueError(f"edit changes {key}, which this pipeline does not have; it is for another architecture")
                p = params[comp][name]
                if p.shape != value.shape:
                    raise ValueError(f"edit tensor {key} has shape {tuple(value.shape)}, the pipeline {tuple(p.shape)}")
                saved[key] = p.detach().clone()
                p.copy_(value.to(p.device, p.dtype))
        return Undo(pipe, saved)

    @contextmanager
    def applied(self, pipe: Pipeline, *, force: bool = False) -> Iterator[Pipeline]:
        undo = self.apply(pipe, force=force)
        try:
            yield pipe
        finally:
            undo.restore()

    def merge(self, pipe: Pipeline, out: str | Path, *, force: bool = False) -> Path:
        """Write ``pipe`` with this edit applied as a diffusers folder; ``pipe`` itself is left unchanged."""
        with self.applied(pipe, force=force):
            pipe.save_pretrained(out, safe_serialization=True)
        (Path(out) / "unsee_edit.json").write_text(json.dumps({"method": self.method, "concepts": list(self.concepts),
                                                               "base_fingerprint": self.base_fingerprint}, indent=2))  # fmt: skip
        return Path(out)


@dataclass
class Undo:
    """The original values of the tensors an edit overwrote."""

    pipe: Pipeline
    originals: dict[str, torch.Tensor]

    def restore(self) -> None:
        params = _params(self.pipe)
        with torch.no_grad():
            for key, value in self.originals.items():
                comp, name = _split(key)
                params[comp][name].copy_(value)
        self.originals = {}
